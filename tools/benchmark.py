#!/usr/bin/env python
"""Speed benchmark of a kseg model, side by side with keras-hub's SegFormer.

Usage (from the repository root)::

    python tools/benchmark.py --variant segformer_mit_b0 --size 512 512
    python tools/benchmark.py --variant segformer_mit_b0 --size 512 512 --json b0.json
    python tools/benchmark.py --variant segformer_mit_b2 --size 512 512 --no-peer --jit-compile

What is timed (medians over ``--repeats``, after a first tracing call and ``--warmup``
more untimed calls; the two models' repetitions are interleaved, alternating which goes
first, so that load on a shared machine hits both alike and the kseg/keras-hub ratios
stay meaningful):

* ``forward``: batch ``--infer-batch`` (1), one ``tf.function`` around
  ``model(x, training=False)`` returning each model's own output (kseg: logits at
  stride 4; keras-hub: logits already bilinearly resized to the input size inside
  the model).
* ``label map``: batch ``--infer-batch``, the per-pixel class map at input
  resolution, what an application needs: kseg resizes its stride-4 logits to the
  input size and takes the argmax; keras-hub takes the argmax of its full-size logits.
  Both sides thus do the same work (backbone + head + one bilinear upsampling + argmax).
* ``train step``: batch ``--train-batch`` (2), ``model.train_on_batch`` (a compiled
  train function): forward (training=True: dropout, drop-path, BatchNorm statistics),
  loss, backward and one AdamW update. Labels are random ints in [0, K) at the input
  resolution. The loss is the same on both sides: per-pixel softmax cross-entropy
  (ignore index 255, mean over all pixels) on logits at label resolution. kseg's
  ``SegCrossEntropy`` resizes its stride-4 logits to the labels; keras-hub's model
  already returns full-size logits, so its loss only skips that resize.
  Both use ``keras.optimizers.AdamW(6e-5, weight_decay=0.01)``, no metrics.

The keras-hub peer (``keras_hub.models.MiTBackbone`` + ``SegFormerBackbone`` +
``SegFormerImageSegmenter``) is built from its constructor arguments with the kseg
variant's MiT dimensions and decoder width, randomly initialised (no preset
download). It only exists for SegFormer variants, and needs a square input whose side
is a multiple of 32 (its blocks recover H and W as sqrt(N)). ``--no-peer`` times kseg
alone. ``--jit-compile`` compiles both sides with XLA.

The numbers can be written with ``--json OUT``.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

LR, WEIGHT_DECAY, IGNORE_INDEX = 6e-5, 0.01, 255

KSEG_COMPUTES = (
    "raw RGB in [0,255] -> in-graph ImageNet normalisation -> MiT -> All-MLP head -> logits at "
    "stride 4 (B,H/4,W/4,K); label map: bilinear resize to (H,W) + argmax; train loss: "
    "SegCrossEntropy (bilinear resize of logits to label size, CE, ignore 255)"
)
PEER_COMPUTES = (
    "input used as is (no normalisation in the model) -> MiT -> All-MLP head (also "
    "'resizes' stage 1 to its own size) -> classifier -> bilinear resize inside the model to "
    "(B,H,W,K); tanh-approximate GELU; dropout 0.1 on attention probabilities and attention "
    "output while training; label map: argmax; train loss: same CE (ignore 255) on its "
    "full-size logits, no further resize"
)


def _progress(msg, end="\n"):
    stream = sys.stderr
    if stream.isatty():
        stream.write("\r" + msg + " " * 8 + end)
    else:
        stream.write(msg + "\n")
    stream.flush()


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time a kseg model (inference and train step), side by side with keras-hub's SegFormer."
    )
    p.add_argument(
        "--variant", default="segformer_mit_b0", help="registered kseg variant (see kseg.models.list_variants())"
    )
    p.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"), help="input height and width")
    p.add_argument("--num-classes", type=int, default=150, help="K (default 150, ADE20K)")
    p.add_argument("--repeats", type=int, default=10, help="timed repetitions per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing, after the first (tracing) call")
    p.add_argument("--infer-batch", type=int, default=1, help="batch size of the inference timings")
    p.add_argument("--train-batch", type=int, default=2, help="batch size of the train-step timing")
    p.add_argument("--no-peer", action="store_true", help="time kseg only")
    p.add_argument("--no-train", action="store_true", help="skip the train-step timing")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile every timed function (both sides)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="OUT", help="write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


# ----------------------------------------------------------------------------- models


def build_kseg(args):
    import kseg

    return kseg.build_model(args.variant, num_classes=args.num_classes)


def peer_unavailable_reason(model, size):
    """Why no keras-hub peer can be built for ``model`` at ``size``, or None."""
    from kseg.models import SegFormer

    if not isinstance(model, SegFormer):
        return f"{type(model).__name__} is not a SegFormer (keras-hub peer exists only for SegFormer)"
    enc = model.encoder
    if any(r != 4 for r in enc.mlp_ratios):
        return f"keras-hub MiT has MLP ratio 4 only, variant has {enc.mlp_ratios}"
    h, w = size
    if h != w:
        return f"keras-hub SegFormer needs a square input (it recovers H, W as sqrt(N)); got {h}x{w}"
    stride = int(np.prod(enc.strides))
    if h % stride:
        return f"keras-hub SegFormer needs a size divisible by {stride}; got {h}"
    return None


def build_peer(model, size, num_classes):
    """keras-hub SegFormer with the MiT dims / decoder width of the kseg ``model``."""
    import keras_hub

    enc = model.encoder
    mit = keras_hub.models.MiTBackbone(
        layerwise_depths=list(enc.depths),
        num_layers=len(enc.hidden_sizes),
        layerwise_num_heads=list(enc.num_heads),
        layerwise_sr_ratios=list(enc.sr_ratios),
        max_drop_path_rate=enc.drop_path_rate,
        layerwise_patch_sizes=list(enc.patch_sizes),
        layerwise_strides=list(enc.strides),
        image_shape=(size[0], size[1], 3),
        hidden_dims=list(enc.hidden_sizes),
    )
    backbone = keras_hub.models.SegFormerBackbone(image_encoder=mit, projection_filters=model.decoder_dim)
    return keras_hub.models.SegFormerImageSegmenter(backbone=backbone, num_classes=num_classes)


def full_size_cross_entropy(ignore_index=IGNORE_INDEX):
    """kseg's CE (ignore index, mean over all pixels) for logits already at label size."""
    import keras
    from keras import ops

    class FullSizeCrossEntropy(keras.losses.Loss):
        def call(self, y_true, y_pred):
            labels = ops.cast(y_true, "int32")
            valid = ops.not_equal(labels, ignore_index)
            safe = ops.where(valid, labels, 0)
            losses = keras.losses.sparse_categorical_crossentropy(
                safe, ops.cast(y_pred, "float32"), from_logits=True
            )
            return ops.where(valid, losses, 0.0)

    return FullSizeCrossEntropy(name="full_size_cross_entropy")


def _optimizer():
    import keras

    return keras.optimizers.AdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY)


def compile_kseg(model, jit_compile):
    import keras

    if hasattr(model, "default_loss"):
        loss = model.default_loss()
    else:  # pragma: no cover - every kseg model is a Segmentor
        from kseg.losses import SegCrossEntropy

        loss = SegCrossEntropy(ignore_index=IGNORE_INDEX)
    # keras.Model.compile directly: Segmentor.compile only adds defaults, and it would
    # import kseg.metrics, which a benchmark does not need.
    keras.Model.compile(model, optimizer=_optimizer(), loss=loss, metrics=[], jit_compile=jit_compile)


def compile_peer(peer, jit_compile):
    peer.compile(optimizer=_optimizer(), loss=full_size_cross_entropy(), metrics=[], jit_compile=jit_compile)


# ----------------------------------------------------------------------------- timing


def _sync():
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        tf.test.experimental.sync_devices()


def make_inference_fns(model, size, jit_compile, logits_stride_native):
    """(forward fn, label-map fn), both tf.functions of a (B, H, W, 3) float32 batch."""
    import tensorflow as tf
    from keras import ops

    h, w = size

    @tf.function(jit_compile=jit_compile)
    def forward(x):
        return model(x, training=False)

    @tf.function(jit_compile=jit_compile)
    def label_map(x):
        logits = model(x, training=False)
        if logits_stride_native:
            logits = ops.image.resize(logits, (h, w), interpolation="bilinear")
        return ops.argmax(logits, axis=-1)

    return forward, label_map


def time_interleaved(fns, repeats, warmup, label):
    """Times each of ``fns`` (name -> zero-arg callable), interleaved; ms lists per name."""
    names = list(fns)
    _progress(f"  {label}: tracing / first call", end="\r")
    for n in names:  # first call (tf.function tracing, graph building): never timed
        fns[n]()
        _sync()
    for i in range(warmup):
        _progress(f"  {label}: warm-up {i + 1}/{warmup}", end="\r")
        for n in names:
            fns[n]()
            _sync()
    times = {n: [] for n in names}
    for i in range(repeats):
        _progress(f"  {label}: repeat {i + 1}/{repeats}", end="\r")
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            _sync()
            t0 = time.perf_counter()
            fns[n]()
            _sync()
            times[n].append((time.perf_counter() - t0) * 1e3)
    summary = "  ".join(f"{n} {statistics.median(times[n]):.1f} ms" for n in names)
    _progress(f"  {label}: {summary}")
    return times


def _device_description():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU: {details.get('device_name', gpus[0].name)} (x{len(gpus)})"
        except Exception:  # pragma: no cover
            return f"GPU: {gpus[0].name} (x{len(gpus)})"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {platform.processor() or platform.machine()}, {cores} cores usable"


# ----------------------------------------------------------------------------- report


def _fmt_ms(v):
    return "-" if v is None else f"{v:10.1f}"


def _fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def format_table(result):
    k = result["models"]["kseg"]
    p = result["models"].get("keras_hub")
    r = result["ratios"]
    rows = [
        (f"inference forward (B={result['infer_batch']})", "forward_ms", "forward"),
        (f"inference label map HxW (B={result['infer_batch']})", "label_map_ms", "label_map"),
    ]
    if k.get("train_step_ms") is not None:
        rows.append((f"train step (B={result['train_batch']})", "train_step_ms", "train_step"))
    h, w = result["size"]
    lines = [
        f"{result['variant']} @ {h}x{w}, K={result['num_classes']}, {result['device']}, "
        f"jit_compile={result['jit_compile']}, median of {result['repeats']} (warm-up {result['warmup']})",
        "",
        f"{'':38s}{'kseg ms':>10s}  {'keras-hub ms':>12s}  {'kseg/keras-hub':>14s}  {'(paired)':>8s}",
    ]
    pr = result.get("paired_ratios", {})
    for title, key, rkey in rows:
        lines.append(
            f"{title:38s}{_fmt_ms(k[key])}  {_fmt_ms(p[key] if p else None):>12s}  "
            f"{_fmt_ratio(r.get(rkey)):>14s}  {_fmt_ratio(pr.get(rkey)):>8s}"
        )
    pk = f"{k['params'] / 1e6:.3f} M"
    pp = f"{p['params'] / 1e6:.3f} M" if p else "-"
    lines.append(f"{'parameters':38s}{pk:>10s}  {pp:>12s}")
    lines.append("(ratio < 1: kseg faster; ratio of the medians, and in brackets the median of the per-repeat ratios)")
    if p is None:
        lines.append(f"keras-hub peer: not run ({result['peer_skipped']})")
    return "\n".join(lines)


def _median(v):
    return None if not v else statistics.median(v)


def run(args):
    import keras
    import tensorflow as tf

    h, w = args.size
    rng = np.random.default_rng(args.seed)
    keras.utils.set_random_seed(args.seed)

    steps = 3 + (0 if args.no_train else 1)
    _progress(f"[1/{steps}] building kseg {args.variant} (K={args.num_classes})")
    model = build_kseg(args)
    compile_kseg(model, args.jit_compile)

    peer, peer_skipped = None, None
    if args.no_peer:
        peer_skipped = "--no-peer"
    else:
        peer_skipped = peer_unavailable_reason(model, (h, w))
    if peer_skipped is None:
        _progress("      building keras-hub SegFormer peer (random init, constructor arguments)")
        peer = build_peer(model, (h, w), args.num_classes)
        compile_peer(peer, args.jit_compile)
    else:
        _progress(f"      keras-hub peer skipped: {peer_skipped}")

    models = {"kseg": model}
    if peer is not None:
        models["keras_hub"] = peer

    x_inf = tf.constant(rng.uniform(0, 255, (args.infer_batch, h, w, 3)).astype("float32"))
    x_tr = tf.constant(rng.uniform(0, 255, (args.train_batch, h, w, 3)).astype("float32"))
    y_tr = tf.constant(rng.integers(0, args.num_classes, (args.train_batch, h, w)).astype("int32"))

    infer = {}
    out_shapes = {}
    for name, m in models.items():
        infer[name] = make_inference_fns(m, (h, w), args.jit_compile, logits_stride_native=(name == "kseg"))
        out_shapes[name] = list(infer[name][0](x_inf).shape)

    _progress(f"[2/{steps}] inference forward, batch {args.infer_batch}")
    fwd = time_interleaved(
        {n: (lambda f=f: f[0](x_inf)) for n, f in infer.items()}, args.repeats, args.warmup, "forward"
    )
    _progress(f"[3/{steps}] inference label map at {h}x{w}, batch {args.infer_batch}")
    lab = time_interleaved(
        {n: (lambda f=f: f[1](x_inf)) for n, f in infer.items()}, args.repeats, args.warmup, "label map"
    )
    trn = {n: [] for n in models}
    if not args.no_train:
        _progress(f"[4/{steps}] train step (forward + loss + backward + AdamW), batch {args.train_batch}")
        trn = time_interleaved(
            {n: (lambda m=m: m.train_on_batch(x_tr, y_tr)) for n, m in models.items()},
            args.repeats,
            args.warmup,
            "train step",
        )

    result = {
        "variant": args.variant,
        "size": [h, w],
        "num_classes": args.num_classes,
        "infer_batch": args.infer_batch,
        "train_batch": args.train_batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "jit_compile": bool(args.jit_compile),
        "device": _device_description(),
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_hub": _keras_hub_version(),
        },
        "optimizer": f"keras.optimizers.AdamW(learning_rate={LR}, weight_decay={WEIGHT_DECAY})",
        "peer_skipped": peer_skipped,
        "models": {},
        "ratios": {},
        "paired_ratios": {},
    }
    for name, m in models.items():
        result["models"][name] = {
            "params": int(m.count_params()),
            "forward_output_shape": out_shapes[name],
            "computes": KSEG_COMPUTES if name == "kseg" else PEER_COMPUTES,
            "forward_ms": _median(fwd[name]),
            "label_map_ms": _median(lab[name]),
            "train_step_ms": _median(trn[name]),
            "forward_ms_all": fwd[name],
            "label_map_ms_all": lab[name],
            "train_step_ms_all": trn[name],
        }
    if peer is not None:
        for key, src in (("forward", "forward_ms"), ("label_map", "label_map_ms"), ("train_step", "train_step_ms")):
            a, b = result["models"]["kseg"][src], result["models"]["keras_hub"][src]
            result["ratios"][key] = None if a is None or b is None else a / b
            # Median of the per-repeat ratios: each pair ran back to back, so this one
            # is less sensitive to load changing during the run.
            pairs = zip(result["models"]["kseg"][src + "_all"], result["models"]["keras_hub"][src + "_all"])
            result["paired_ratios"][key] = _median([x / y for x, y in pairs if y > 0])
    return result


def _keras_hub_version():
    try:
        import keras_hub

        return keras_hub.__version__
    except Exception:  # pragma: no cover
        return None


def main(argv=None):
    """Runs the benchmark; prints the table, writes ``--json``; returns the result dict."""
    args = parse_args(argv)
    result = run(args)
    print()
    print(format_table(result))
    if result["models"].get("keras_hub"):
        print()
        print("kseg computes:      " + KSEG_COMPUTES)
        print("keras-hub computes: " + PEER_COMPUTES)
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
