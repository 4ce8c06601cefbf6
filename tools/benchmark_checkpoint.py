#!/usr/bin/env python
"""Latency and FPS of a trained checkpoint on your images: labels at input size, batch 1.

Usage (from the repository root)::

    python tools/benchmark_checkpoint.py --recipe recipes/segformer_mit_b0_camvid.yaml \\
        --checkpoint work_dirs/segformer_mit_b0_camvid/best.weights.h5 \\
        --images ../shared/data/camvid/val --max-images 20 --repeat 3
    python tools/benchmark_checkpoint.py --recipe R --checkpoint C --images street.jpg --mode slide --json out.json

What is timed is what an application gets in one call, ``model.predict_labels(image)``:
the compiled graph of ``kseg.inference.compiled_predict_labels`` with the recipe's
``eval`` settings (resize, whole / slide / ms_flip, labels at input size), traced once for
any image size, on one image at a time,
until the labels are on the host (``.numpy()``). Decoding the image file is not timed.
Each image runs ``--warmup`` untimed calls (tracing, allocation), then ``--repeat`` timed
calls. Reported: latency per image in ms (median, mean, p90, min, max over all timed calls),
FPS = 1000 / mean latency, and the device. mmseg's ``tools/analysis_tools/benchmark.py``
reports the same (FPS after warm-up iterations). For kseg against keras-hub's SegFormer on
synthetic inputs see ``tools/benchmark.py``.
"""

import argparse
import json
import os
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="the recipe the checkpoint was trained with")
    p.add_argument("--checkpoint", required=True, help=".weights.h5 written by kseg.train")
    p.add_argument("--images", required=True, nargs="+", help="image files and/or folders of images")
    p.add_argument("--max-images", type=int, help="use at most this many images (in sorted order)")
    p.add_argument("--mode", choices=("whole", "slide", "ms_flip"), help="default: the recipe's eval.mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per image (default 2)")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per image (default 5)")
    p.add_argument("--eager", action="store_true", help="time the eager call instead of the tf.function")
    p.add_argument("--json", metavar="OUT", help="also write the numbers to this JSON file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe field (repeatable), e.g. --set eval.scale=[480,360]")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or (args.max_images is not None and args.max_images < 1):
        p.error("--repeat and --max-images must be >= 1, --warmup >= 0")
    return args


def device_name():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU {details.get('device_name', gpus[0].name)}"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def labels_function(model, kwargs, eager=False):
    """``images float32 [1, H, W, 3] -> labels int32 [1, H, W]``: the compiled graph that
    ``model.predict_labels`` runs (one trace for all sizes), or the eager call."""
    from kseg.inference import compiled_predict_labels, predict_labels

    if eager:
        return lambda images: predict_labels(model, images, **kwargs)
    return compiled_predict_labels(model, **kwargs)


def benchmark(fn, images, warmup, repeat):
    """Times ``fn`` on each image; returns per-call latencies in ms and the label shapes."""
    import numpy as np

    from kseg.utils.progress import track

    latencies, shapes = [], []
    for image in track(images, "benchmarking", unit="images"):
        x = np.asarray(image, np.float32)[None]
        for _ in range(warmup):
            fn(x).numpy()
        for _ in range(repeat):
            start = time.perf_counter()
            labels = fn(x).numpy()
            latencies.append((time.perf_counter() - start) * 1000.0)
        shapes.append(list(labels.shape[1:]))
    return latencies, shapes


def summarize(latencies):
    ordered = sorted(latencies)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    mean = statistics.fmean(latencies)
    return {"median_ms": statistics.median(latencies), "mean_ms": mean, "p90_ms": p90,
            "min_ms": ordered[0], "max_ms": ordered[-1], "fps": 1000.0 / mean}


def main(argv=None):
    args = parse_args(argv)
    from kseg.config import load_recipe
    from kseg.data import load_image
    from kseg.inference import inference_kwargs
    from kseg.models import build_from_recipe
    from kseg.predict import list_images

    recipe = load_recipe(args.recipe, list(args.set) + ([f"eval.mode={args.mode}"] if args.mode else []))
    files = [f for path in args.images for f in list_images(path)]
    files = files[: args.max_images] if args.max_images else files
    images = [load_image(f) for f in files]
    model = build_from_recipe(recipe, checkpoint=args.checkpoint)
    kwargs = inference_kwargs(recipe.eval)
    fn = labels_function(model, kwargs, eager=args.eager)
    latencies, shapes = benchmark(fn, images, args.warmup, args.repeat)
    result = {
        "variant": model.variant, "checkpoint": os.path.abspath(args.checkpoint),
        "device": device_name(), "mode": kwargs["mode"],
        "scale": None if kwargs["scale"] is None else list(kwargs["scale"]),
        "compiled": not args.eager, "num_images": len(images), "warmup": args.warmup,
        "repeat": args.repeat, "image_sizes": sorted({f"{w}x{h}" for h, w in shapes}),
        **summarize(latencies), "latencies_ms": [round(v, 3) for v in latencies],
    }
    sizes = ", ".join(result["image_sizes"])
    print(f"{model.variant} on {result['device']}: {len(images)} images ({sizes}), mode {result['mode']}"
          + (f", scale {result['scale'][0]}x{result['scale'][1]}" if result["scale"] else "")
          + f", {args.repeat} timed calls each after {args.warmup} warm-up"
          + ("" if result["compiled"] else ", eager"))
    print(f"latency per image: median {result['median_ms']:.1f} ms, mean {result['mean_ms']:.1f} ms, "
          f"p90 {result['p90_ms']:.1f} ms (min {result['min_ms']:.1f}, max {result['max_ms']:.1f}); "
          f"{result['fps']:.2f} FPS")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
