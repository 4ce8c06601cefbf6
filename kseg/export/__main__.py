"""``python -m kseg.export --recipe R --checkpoint C --format saved_model|tflite --output PATH``.

Exports a trained model for serving (SavedModel, ``serving_default``: uint8 images of any
size -> labels and probabilities) or for phones (TFLite, fixed input size, builtin ops
only, fp32/fp16/dynamic/int8), writes the sidecar JSON (classes, palette, input layout)
and verifies the artifact against the Keras model on validation images.

Examples::

    python -m kseg.export --recipe recipes/segformer_mit_b0_camvid.yaml \\
        --checkpoint work_dirs/segformer_mit_b0_camvid/best.weights.h5 \\
        --format tflite --quantize int8 --input-size 512 512 --output b0_int8.tflite
    python -m kseg.export --spec export/segformer_mit_b0_mobile.yaml --recipe ... \\
        --checkpoint ... --output b0_mobile.tflite
    python -m kseg.export --recipe ... --checkpoint ... --format saved_model --output b0_serving/

Exit status: 0 on success; 1 when the verification's pixel agreement is below
``--min-agreement`` (default 99.9% for unquantized exports, reported only for quantized
ones; the artifact is kept); 2 for bad input (missing checkpoint, wrong variant, unknown
key, ops the TFLite builtins do not have).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULTS = dict(quantize="none", input_size=(512, 512), threads=2, verify_images=20,
                calibration_images=100, float_ops=())
UNQUANTIZED_MIN_AGREEMENT = 99.9


def parse_args(argv=None):
    from kseg.export.spec import FORMATS
    from kseg.export.tflite import QUANTIZE_MODES

    p = argparse.ArgumentParser(prog="python -m kseg.export",
                                description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True)
    p.add_argument("--checkpoint", help=".weights.h5 written by kseg.train (default: the recipe's model.pretrained)")
    p.add_argument("--output", required=True,
                   help="SavedModel folder, or .tflite file (the sidecar .json goes beside it)")
    p.add_argument("--spec", help="export spec YAML (export/*.yaml); flags override it")
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--quantize", choices=QUANTIZE_MODES, help="TFLite only (default none)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="TFLite input size (default 512 512)")
    p.add_argument("--float-ops", nargs="*", metavar="OP",
                   help="int8: TFLite op types kept in float (e.g. MEAN RSQRT)")
    p.add_argument("--calibration-images", type=int, help="int8 representative images (100)")
    p.add_argument("--verify-images", type=int, help="val images to verify on (20; 0 disables)")
    p.add_argument("--min-agreement", type=float,
                   help="fail below this pixel agreement in percent (default 99.9 unquantized)")
    p.add_argument("--threads", type=int, help="TFLite interpreter threads (2)")
    p.add_argument("--benchmark", type=int, default=0, metavar="RUNS",
                   help="TFLite: also time the artifact and the Keras model (interleaved)")
    p.add_argument("--native-resolution", action="store_true",
                   help="SavedModel: run at the input size instead of the recipe's eval resize")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return p.parse_args(argv)


def resolve(args):
    """Settings from defaults < spec < flags. Raises SpecError / ValueError."""
    from kseg.export.spec import load_spec

    spec = load_spec(args.spec) if args.spec else None
    out = {}
    for key in ("format", "quantize", "input_size", "float_ops", "calibration_images",
                "threads", "verify_images", "min_agreement"):
        flag = getattr(args, key)
        value = flag if flag is not None else getattr(spec, key, None) if spec else None
        out[key] = DEFAULTS.get(key) if value is None else value
    if out["format"] is None:
        raise ValueError("--format is required (saved_model or tflite), or a --spec with format:")
    out["input_size"] = tuple(int(v) for v in out["input_size"])
    out["float_ops"] = tuple(str(o).upper() for o in out["float_ops"] or ())
    if out["format"] == "saved_model" and (out["quantize"] != "none" or out["float_ops"]):
        raise ValueError("--quantize / --float-ops apply to --format tflite only")
    if out["format"] == "tflite" and not args.output.endswith(".tflite"):
        raise ValueError(f"--output {args.output}: a TFLite file must end with .tflite")
    if out["min_agreement"] is None and out["quantize"] == "none":
        out["min_agreement"] = UNQUANTIZED_MIN_AGREEMENT
    return out


def _fmt(v):
    return "-" if v is None else f"{v:.2f}"


def _print_verification(result, names):
    if not result.get("images"):
        print("verification: skipped")
        return
    a, b = names
    line = (f"verification on {result['images']} val images: pixel agreement "
            f"{result['agreement']:.3f}%, mIoU {a} {_fmt(result[a]['mIoU'])} / "
            f"{b} {_fmt(result[b]['mIoU'])}")
    if "logits_max_abs_diff" in result:
        line += (f", logits |diff| max {result['logits_max_abs_diff']:.4g} "
                 f"mean {result['logits_mean_abs_diff']:.4g}")
    print(line)


def export_tflite_cli(args, settings, recipe, model, classes, palette):
    from kseg.export import metadata, tflite, verify

    size, quantize = settings["input_size"], settings["quantize"]
    data = None
    if quantize == "int8":
        t = time.time()
        data = tflite.representative_images(recipe, size, settings["calibration_images"])
        print(f"calibration: {len(data)} images from {recipe.data.train_split} "
              f"({time.time() - t:.0f} s)")
    t = time.time()
    content = tflite.convert(model, size, quantize, data, settings["float_ops"])
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "wb") as f:
        f.write(content)
    ops = tflite.op_summary(content)
    print(f"wrote {args.output}: {len(content) / 2**20:.2f} MiB, {quantize}, input "
          f"{size[0]}x{size[1]}, {sum(ops['ops'].values())} ops ({time.time() - t:.0f} s)")
    print("ops: " + ", ".join(f"{k} x{v}" for k, v in ops["ops"].items()))
    runner = verify.TFLiteRunner(args.output, settings["threads"])
    logits_shape = [int(v) for v in runner.runner.get_output_details()["logits"]["shape"]]
    module = tflite.TFLiteExportModule(model, size)  # the Keras reference (traced on first use)
    h, w = size
    meta = metadata.build_metadata(
        recipe, model.variant, model.num_classes, classes, palette,
        input_spec={"name": "images", "shape": [1, h, w, 3], "dtype": "uint8",
                    "resize": "whole image, bilinear, to the input size (aspect not kept)"},
        outputs={"labels": {"shape": [1, h, w], "dtype": "int32",
                            "meaning": "class index per pixel at the input size"},
                 "logits": {"shape": logits_shape, "dtype": "float32",
                            "stride": h // int(logits_shape[1]),
                            "meaning": "class scores at the model's native stride"}},
        signature=tflite.SIGNATURE, quantize=quantize, float_ops=list(settings["float_ops"]),
        threads=settings["threads"], size_bytes=len(content), ops=ops,
        checkpoint=os.path.abspath(args.checkpoint) if args.checkpoint else recipe.model.pretrained)
    result = {"images": 0}
    if settings["verify_images"] > 0:
        samples = verify.val_samples(recipe, settings["verify_images"])
        result = verify.verify_tflite(runner, module, samples, model.num_classes, classes)
        _print_verification(result, ("tflite", "keras"))
        meta["verification"] = result
    if args.benchmark:
        bench = verify.benchmark(runner, module, runs=args.benchmark,
                                 num_threads=settings["threads"])
        print(f"latency (median of {bench['runs']}, {bench['threads']} threads): TFLite "
              f"{bench['tflite_ms']:.1f} ms, Keras {bench['keras_ms']:.1f} ms")
        meta["benchmark"] = {k: bench[k] for k in ("runs", "threads", "tflite_ms", "keras_ms")}
    print(f"wrote {metadata.write_metadata(meta, args.output)}")
    return result


def export_saved_model_cli(args, settings, recipe, model, classes, palette):
    from kseg.export import metadata, saved_model, verify

    ev = recipe.eval
    inference = dict(mode="whole" if args.native_resolution else ev.mode,
                     scale=None if args.native_resolution else ev.scale,
                     crop_size=tuple(ev.crop_size), stride=tuple(ev.stride))
    t = time.time()
    saved_model.export_saved_model(model, args.output, **inference)
    print(f"wrote SavedModel {args.output} ({time.time() - t:.0f} s): serving_default(images: "
          f"uint8 [B, H, W, 3]) -> labels int32 [B, H, W], probabilities float32 "
          f"[B, H, W, {model.num_classes}]; inference {inference}")
    meta = metadata.build_metadata(
        recipe, model.variant, model.num_classes, classes, palette,
        input_spec={"name": "images", "shape": [None, None, None, 3], "dtype": "uint8"},
        outputs={"labels": {"shape": [None, None, None], "dtype": "int32"},
                 "probabilities": {"shape": [None, None, None, model.num_classes],
                                   "dtype": "float32"}},
        signature=saved_model.SIGNATURE,
        inference={k: (list(v) if isinstance(v, tuple) else v) for k, v in inference.items()},
        checkpoint=os.path.abspath(args.checkpoint) if args.checkpoint else recipe.model.pretrained)
    result = {"images": 0}
    if settings["verify_images"] > 0:
        samples = verify.val_samples(recipe, settings["verify_images"])
        result = verify.verify_saved_model(args.output, model, samples, model.num_classes,
                                           classes, **inference)
        _print_verification(result, ("saved_model", "keras"))
        meta["verification"] = result
    print(f"wrote {metadata.write_metadata(meta, args.output)}")
    return result


def _check_data(recipe, settings):
    """Lists the splits verification / calibration will read. Raises DatasetError."""
    from kseg.data import get_dataset

    d = recipe.data
    splits = ([d.val_split] if settings["verify_images"] > 0 else []) + (
        [d.train_split] if settings["format"] == "tflite" and settings["quantize"] == "int8" else [])
    for split in splits:
        get_dataset(d.dataset, root=d.root, split=split, reduce_zero_label=d.reduce_zero_label,
                    folder_spec=d.folder_spec, check=False)


def main(argv=None):
    args = parse_args(argv)
    from kseg.config import load_recipe
    from kseg.config.recipe import RecipeError
    from kseg.export.spec import SpecError

    try:
        settings = resolve(args)
        recipe = load_recipe(args.recipe, args.set)
    except (SpecError, RecipeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not (args.checkpoint or recipe.model.pretrained) or args.checkpoint and not os.path.isfile(args.checkpoint):
        print(f"error: checkpoint {args.checkpoint} does not exist; pass the .weights.h5 "
              "written by kseg.train (e.g. work_dirs/<recipe>/best.weights.h5), or set the recipe's "
              "model.pretrained to a preset / checkpoint", file=sys.stderr)
        return 2
    if args.benchmark:
        import tensorflow as tf

        # Same thread budget for Keras as for the interpreter (before TF initialises).
        tf.config.threading.set_intra_op_parallelism_threads(settings["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(1)

    from kseg.export.metadata import class_metadata
    from kseg.export.tflite import UnsupportedOpError
    from kseg.models import build_from_recipe

    try:
        _check_data(recipe, settings)  # fail before the (minutes long) conversion
        model = build_from_recipe(recipe, checkpoint=args.checkpoint)
        classes, palette = class_metadata(recipe, model if not args.checkpoint else None)
        run = export_tflite_cli if settings["format"] == "tflite" else export_saved_model_cli
        result = run(args, settings, recipe, model, classes, palette)
    except (UnsupportedOpError, FileNotFoundError, KeyError, ValueError) as e:
        hint = ""
        if type(e).__name__ == "DatasetError":
            hint = ("\n(verification and int8 calibration read the recipe's dataset; pass "
                    "--verify-images 0 to export without verification)")
        print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    threshold = settings["min_agreement"]
    if result.get("images") and threshold is not None and result["agreement"] < threshold:
        print(f"error: pixel agreement {result['agreement']:.3f}% is below {threshold}% "
              f"({settings['format']}, quantize {settings['quantize']}); the artifact is kept "
              f"at {args.output} for inspection", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
