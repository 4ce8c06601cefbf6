#!/usr/bin/env python
"""Speed benchmark of a kseg model against the machine's limit and keras-hub's SegFormer.

Usage (from the repository root)::

    python tools/benchmark.py --variant segformer_mit_b0 --size 512 512
    python tools/benchmark.py --variant segformer_mit_b0 --size 512 512 --json b0.json
    python tools/benchmark.py --variant setr_pup_vit_t16 --size 512 512 --no-tflite
    python tools/benchmark.py --variant segformer_mit_b2 --size 512 512 --no-peer --jit-compile

What is timed (medians over ``--repeats``, after a first tracing call and ``--warmup``
more untimed calls; rows timed side by side are interleaved, alternating which goes
first, so that load on a shared machine hits both alike and the ratios stay meaningful):

* ``forward``: batch ``--infer-batch`` (1), one ``tf.function`` around
  ``model(x, training=False)`` returning each model's own output (kseg: logits at the
  model's stride; keras-hub: logits already bilinearly resized to the input size inside
  the model).
* ``label map``: the per-pixel class map at input resolution, what an application needs.
  ``whole (dense)``: kseg resizes its logits to the input size and takes the argmax (the
  full-size K-channel tensor); keras-hub takes the argmax of its full-size logits.
  ``whole``, ``slide``, ``ms_flip``: :func:`kseg.inference.compiled_predict_labels`, kseg's
  label path (same labels as the dense one, without the full-size logits where the
  low-resolution ones decide; slide windows ``--slide-crop`` every ``--slide-stride``
  batched by 4; ms_flip at ratios ``--ms-ratios`` with flip, image and flip in one batch).
* ``train step``: batch ``--train-batch`` (2), ``model.train_on_batch`` (a compiled
  train function): forward (training=True: dropout, drop-path, BatchNorm statistics),
  loss, backward and one AdamW update. Labels are random ints in [0, K) at the input
  resolution. The loss is the same on both sides: per-pixel softmax cross-entropy
  (ignore index 255, mean over all pixels) on logits at label resolution. kseg's
  ``SegCrossEntropy`` resizes its stride-4 logits to the labels; keras-hub's model
  already returns full-size logits, so its loss only skips that resize.
  Both use ``keras.optimizers.AdamW(6e-5, weight_decay=0.01)``, no metrics.
* ``TFLite fp32``: the exported flatbuffer (:func:`kseg.export.tflite.convert`: uint8
  image -> labels at input size and logits) run by ``ai_edge_litert`` (XNNPACK) with
  ``--tflite-threads`` threads, batch 1; the peer's graph (image -> argmax of its logits)
  converted the same way.
* ``evaluation``: :func:`kseg.inference.evaluate` on ``--eval-split`` of
  ``--eval-dataset`` (CamVid val), whole images resized to ``--eval-scale`` as the CPU
  recipe evaluates, a model of the same variant with the dataset's classes: images/s,
  decoding and tracing included (a first untimed pass over 2 images traces the graph).

The limit: the machine's single-precision GEMM peak is measured with numpy (OpenBLAS,
all cores, square float32 products, best of several), and the model's FLOPs at the
input size are counted from the graph (:func:`kseg.utils.flops.count_flops`, executed
formulation, 2 FLOPs per multiply-add). ``limit ms`` = FLOPs / peak (x3 for a train
step: forward + backward, per image of the batch); each timing is also shown as a
multiple of its limit.

The keras-hub peer (``keras_hub.models.MiTBackbone`` + ``SegFormerBackbone`` +
``SegFormerImageSegmenter``) is built from its constructor arguments with the kseg
variant's MiT dimensions and decoder width, randomly initialised (no preset
download). It only exists for SegFormer variants, and needs a square input whose side
is a multiple of 32 (its blocks recover H and W as sqrt(N)). ``--no-peer`` times kseg
alone. ``--jit-compile`` compiles both sides' forward and train step with XLA.

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

import numpy as np

LR, WEIGHT_DECAY, IGNORE_INDEX = 6e-5, 0.01, 255

KSEG_COMPUTES = (
    "raw RGB in [0,255] -> in-graph normalisation -> encoder -> decode head -> logits at the "
    "head's stride (SegFormer: B,H/4,W/4,K); dense label map: bilinear resize to (H,W) + argmax; "
    "label maps (predict_labels): the same labels, full-size logits only where needed; train "
    "loss: the model's own (SegCrossEntropy: bilinear resize of logits to label size, CE, ignore 255)"
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
        description="Time a kseg model (forward, label maps, train step, TFLite, evaluation) against the "
                    "machine's GEMM limit and keras-hub's SegFormer."
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
    p.add_argument("--slide-crop", type=int, nargs=2, metavar=("H", "W"),
                   help="slide window (default: 3/4 of the size, multiple of 32)")
    p.add_argument("--slide-stride", type=int, nargs=2, metavar=("H", "W"), help="slide stride (default: half the size)")
    p.add_argument("--ms-ratios", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75],
                   help="ms_flip ratios (flip on)")
    p.add_argument("--no-modes", action="store_true", help="skip the slide and ms_flip label maps")
    p.add_argument("--no-peer", action="store_true", help="time kseg only")
    p.add_argument("--no-train", action="store_true", help="skip the train-step timing")
    p.add_argument("--no-tflite", action="store_true", help="skip the TFLite conversion and timing")
    p.add_argument("--tflite-threads", type=int, default=2, help="ai-edge-litert interpreter threads")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation throughput")
    p.add_argument("--eval-dataset", default="camvid", help="dataset of the evaluation throughput")
    p.add_argument("--eval-split", default="val")
    p.add_argument("--eval-scale", type=int, nargs=2, default=[240, 180], metavar=("LONG", "SHORT"),
                   help="keep-ratio resize of the evaluation (the CamVid CPU recipes' eval.scale)")
    p.add_argument("--eval-images", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--gemm-size", type=int, default=2048, help="side of the square matrices of the GEMM peak")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the forward and train step (both sides)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="OUT", help="write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    h, w = args.size
    if args.slide_crop is None:
        args.slide_crop = [max(32, (3 * h // 4) // 32 * 32), max(32, (3 * w // 4) // 32 * 32)]
    if args.slide_stride is None:
        args.slide_stride = [max(1, h // 2), max(1, w // 2)]
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


def make_inference_fns(model, size, jit_compile, is_kseg):
    """(forward fn, dense label-map fn), tf.functions of a (B, H, W, 3) float32 batch.

    The dense label map is the argmax of logits at input size: kseg's via
    ``predict_logits`` (its logits resized to (H, W), the full-size K-channel tensor; the
    semantic scores of mask-classification models), keras-hub's from its own output.
    """
    import tensorflow as tf

    from kseg.inference import predict_logits

    @tf.function(jit_compile=jit_compile)
    def forward(x):
        return model(x, training=False)

    @tf.function
    def label_map(x):
        logits = predict_logits(model, x) if is_kseg else model(x, training=False)
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    return forward, label_map


def kseg_label_fns(model, args):
    """{row name: fn(x)}: kseg's label path (``compiled_predict_labels``) per mode."""
    from kseg.inference import compiled_predict_labels

    fns = {"whole": compiled_predict_labels(model, mode="whole")}
    if not args.no_modes:
        fns["slide"] = compiled_predict_labels(model, mode="slide", crop_size=tuple(args.slide_crop),
                                               stride=tuple(args.slide_stride))
        fns["ms_flip"] = compiled_predict_labels(model, mode="ms_flip", ms_ratios=tuple(args.ms_ratios),
                                                 ms_flip=True)
    return fns


def gemm_peak_gflops(n=2048, repeats=10):
    """Single-precision GEMM peak of this machine: numpy (OpenBLAS, all cores) n x n x n
    products, best of ``repeats``, in GFLOP/s (2 n^3 FLOPs per product)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def model_gflop(model, size):
    """FLOPs (2 per multiply-add, the executed graph) of one image at ``size``, in 1e9."""
    from kseg.utils.flops import count_flops

    return 2.0 * count_flops(model, (size[0], size[1], 3), formulation="executed").gflops


def tflite_invoker(model, size, threads):
    """Converts ``model`` (fp32, builtins only, uint8 image -> labels + logits) and returns
    a zero-argument callable running one ``invoke`` on a fixed random image."""
    from ai_edge_litert.interpreter import Interpreter

    from kseg.export.tflite import convert

    interpreter = Interpreter(model_content=convert(model, size), num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    image = np.random.default_rng(0).integers(0, 256, inp["shape"], dtype=np.uint8)
    interpreter.set_tensor(inp["index"], image)
    return interpreter.invoke


def evaluation_throughput(args):
    """images/s of ``kseg.inference.evaluate`` on a real split (decode + inference), with a
    model of ``args.variant`` and the dataset's classes."""
    import kseg
    from kseg.config import DataConfig
    from kseg.data import build_dataset, get_dataset
    from kseg.inference import evaluate, rescale_size

    info = get_dataset(args.eval_dataset, split=args.eval_split)
    model = kseg.build_model(args.variant, num_classes=info.num_classes)
    data = DataConfig(dataset=args.eval_dataset, scale=tuple(args.eval_scale))
    eval_cfg = {"mode": "whole", "scale": tuple(args.eval_scale)}
    dataset = build_dataset(data, split=args.eval_split, training=False, batch_size=1, info=info)
    evaluate(model, dataset, info.num_classes, eval_cfg, progress=False, max_images=2)  # traces
    summary = evaluate(model, dataset, info.num_classes, eval_cfg, progress=False, max_images=args.eval_images)
    image = next(iter(dataset))[0]
    h, w = int(image.shape[1]), int(image.shape[2])
    size = tuple(int(v) for v in rescale_size(h, w, tuple(args.eval_scale)))
    return {"dataset": args.eval_dataset, "split": args.eval_split, "scale": list(args.eval_scale),
            "mode": "whole", "num_classes": info.num_classes, "images": summary["num_images"],
            "seconds": summary["seconds"], "images_per_second": summary["images_per_second"],
            "first_image_size": [h, w], "inference_size": list(size),
            "gflop_per_image": model_gflop(model, size)}


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


ROWS = (  # (json key, title, limit key)
    ("forward_ms", "forward (B={infer_batch})", "forward_ms"),
    ("label_map_ms", "label map whole, dense resize+argmax", "forward_ms"),
    ("label_map_whole_ms", "label map whole (predict_labels)", "forward_ms"),
    ("label_map_slide_ms", "label map slide ({slide_windows} windows)", None),
    ("label_map_ms_flip_ms", "label map ms_flip ({ms_passes} passes)", None),
    ("train_step_ms", "train step (B={train_batch})", "train_step_ms"),
    ("tflite_ms", "TFLite fp32 labels ({tflite_threads} thr)", "forward_ms"),
)


def format_table(result):
    k = result["models"]["kseg"]
    p = result["models"].get("keras_hub")
    limit = result["limit"]
    h, w = result["size"]
    lines = [
        (f"{result['variant']} @ {h}x{w}, K={result['num_classes']}, {result['device']}, "
        f"jit_compile={result['jit_compile']}, median of {result['repeats']} (warm-up {result['warmup']})"),
        (f"limit: GEMM peak {limit['gemm_gflops']:.0f} GFLOP/s (numpy/OpenBLAS {limit['gemm_size']}^3 float32), "
        f"model {limit['model_gflop']:.1f} GFLOP/image -> forward {limit['forward_ms']:.0f} ms, "
        f"train step {limit['train_step_ms']:.0f} ms"),
        "",
        f"{'':42s}{'kseg ms':>10s}  {'x limit':>7s}  {'keras-hub ms':>12s}  {'kseg/keras-hub':>14s}  {'(paired)':>8s}",
    ]
    names = dict(result)
    for key, title, limit_key in ROWS:
        if k.get(key) is None:
            continue
        ratio = result["ratios"].get(key)
        paired = result["paired_ratios"].get(key)
        x_limit = k[key] / limit[limit_key] if limit_key else None
        lines.append(
            f"{title.format(**names):42s}{_fmt_ms(k[key])}  {_fmt_ratio(x_limit):>7s}  "
            f"{_fmt_ms(p.get(key) if p else None):>12s}  {_fmt_ratio(ratio):>14s}  {_fmt_ratio(paired):>8s}"
        )
    ev = result.get("evaluation")
    if ev:
        limit_ips = limit["gemm_gflops"] / ev["gflop_per_image"]
        lines.append(
            f"{'evaluation ' + ev['dataset'] + '/' + ev['split'] + ' (images/s)':42s}"
            f"{ev['images_per_second']:10.2f}  {_fmt_ratio(limit_ips / ev['images_per_second']):>7s}"
            f"   ({ev['images']} images, {ev['first_image_size'][0]}x{ev['first_image_size'][1]} "
            f"whole at {ev['inference_size'][0]}x{ev['inference_size'][1]}, K={ev['num_classes']})"
        )
    pk = f"{k['params'] / 1e6:.3f} M"
    pp = f"{p['params'] / 1e6:.3f} M" if p else "-"
    lines.append(f"{'parameters':42s}{pk:>10s}  {'':7s}  {pp:>12s}")
    if k.get("label_map_whole_ms") is not None:
        extra = k["label_map_whole_ms"] - k["forward_ms"]
        lines.append(f"label map whole - forward: {extra:.1f} ms ({100 * extra / k['forward_ms']:.0f}% of the forward)")
    lines.append("(x limit: time / limit, 1.00x = the GEMM peak; ratio < 1: kseg faster; ratio of the medians, "
                 "and in brackets the median of the per-repeat ratios)")
    for what, reason in result["skipped"].items():
        lines.append(f"{what}: not run ({reason})")
    return "\n".join(lines)


def _median(v):
    return None if not v else statistics.median(v)


def _time_rows(label, kseg_fn, peer_fn, args):
    fns = {"kseg": kseg_fn}
    if peer_fn is not None:
        fns["keras_hub"] = peer_fn
    return time_interleaved(fns, args.repeats, args.warmup, label)


def run(args):
    import keras
    import tensorflow as tf

    from kseg.inference import slide_grid

    h, w = args.size
    rng = np.random.default_rng(args.seed)
    keras.utils.set_random_seed(args.seed)
    skipped = {}

    _progress(f"building kseg {args.variant} (K={args.num_classes}); measuring the GEMM peak")
    model = build_kseg(args)
    compile_kseg(model, args.jit_compile)
    peak = gemm_peak_gflops(args.gemm_size)
    flops = model_gflop(model, (h, w))

    peer, peer_skipped = None, None
    peer_skipped = "--no-peer" if args.no_peer else peer_unavailable_reason(model, (h, w))
    if peer_skipped is None:
        _progress("building keras-hub SegFormer peer (random init, constructor arguments)")
        peer = build_peer(model, (h, w), args.num_classes)
        compile_peer(peer, args.jit_compile)
    else:
        skipped["keras-hub peer"] = peer_skipped
    models = {"kseg": model}
    if peer is not None:
        models["keras_hub"] = peer

    x_inf = tf.constant(rng.uniform(0, 255, (args.infer_batch, h, w, 3)).astype("float32"))
    x_tr = tf.constant(rng.uniform(0, 255, (args.train_batch, h, w, 3)).astype("float32"))
    y_tr = tf.constant(rng.integers(0, args.num_classes, (args.train_batch, h, w)).astype("int32"))

    infer = {n: make_inference_fns(m, (h, w), args.jit_compile, is_kseg=(n == "kseg")) for n, m in models.items()}
    out_shapes = {n: [list(t.shape) for t in tf.nest.flatten(f[0](x_inf))] for n, f in infer.items()}
    times = {n: {} for n in models}

    def record(key, measured):
        for n, v in measured.items():
            times[n][key] = v

    peer_call = (lambda f: (lambda: f(x_inf))) if peer is not None else None
    record("forward_ms", _time_rows("forward", lambda: infer["kseg"][0](x_inf),
                                    peer_call(infer["keras_hub"][0]) if peer else None, args))
    record("label_map_ms", _time_rows("label map, dense", lambda: infer["kseg"][1](x_inf),
                                      peer_call(infer["keras_hub"][1]) if peer else None, args))
    for mode, fn in kseg_label_fns(model, args).items():
        record(f"label_map_{mode}_ms", _time_rows(f"label map {mode}", lambda fn=fn: fn(x_inf), None, args))
    if not args.no_train:
        record("train_step_ms", _time_rows(
            "train step", lambda: model.train_on_batch(x_tr, y_tr),
            (lambda: peer.train_on_batch(x_tr, y_tr)) if peer else None, args))
    if not args.no_tflite:
        try:
            _progress("converting to TFLite fp32")
            lite = {n: tflite_invoker(m, (h, w), args.tflite_threads) for n, m in models.items()}
            record("tflite_ms", _time_rows("TFLite fp32", lite["kseg"], lite.get("keras_hub"), args))
        except Exception as err:  # noqa: BLE001 - any conversion failure is reported in the table, not hidden
            skipped["TFLite"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    else:
        skipped["TFLite"] = "--no-tflite"
    evaluation = None
    if not args.no_eval:
        try:
            _progress(f"evaluation throughput on {args.eval_dataset}/{args.eval_split}")
            evaluation = evaluation_throughput(args)
        except Exception as err:  # noqa: BLE001 - e.g. no dataset on this machine: reported in the table
            skipped["evaluation"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    else:
        skipped["evaluation"] = "--no-eval"

    result = {
        "variant": args.variant,
        "size": [h, w],
        "num_classes": args.num_classes,
        "infer_batch": args.infer_batch,
        "train_batch": args.train_batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "jit_compile": bool(args.jit_compile),
        "slide_crop": list(args.slide_crop),
        "slide_stride": list(args.slide_stride),
        "slide_windows": int(np.prod(slide_grid(h, w, args.slide_crop, args.slide_stride))),
        "ms_ratios": list(args.ms_ratios),
        "ms_passes": 2 * len(args.ms_ratios),
        "tflite_threads": args.tflite_threads,
        "device": _device_description(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "keras_hub": _keras_hub_version()},
        "optimizer": f"keras.optimizers.AdamW(learning_rate={LR}, weight_decay={WEIGHT_DECAY})",
        "peer_skipped": peer_skipped,
        "skipped": skipped,
        "limit": {
            "gemm_gflops": peak,
            "gemm_size": args.gemm_size,
            "model_gflop": flops,
            "forward_ms": 1e3 * flops * args.infer_batch / peak,
            "train_step_ms": 1e3 * 3 * flops * args.train_batch / peak,
        },
        "evaluation": evaluation,
        "models": {},
        "ratios": {},
        "paired_ratios": {},
    }
    for name, m in models.items():
        entry = {"params": int(m.count_params()), "forward_output_shapes": out_shapes[name],
                 "computes": KSEG_COMPUTES if name == "kseg" else PEER_COMPUTES}
        for key, values in times[name].items():
            entry[key] = _median(values)
            entry[key + "_all"] = values
        result["models"][name] = entry
    if peer is not None:
        for key in times["keras_hub"]:
            a, b = result["models"]["kseg"][key], result["models"]["keras_hub"][key]
            result["ratios"][key] = a / b
            # Median of the per-repeat ratios: each pair ran back to back, so this one
            # is less sensitive to load changing during the run.
            pairs = zip(times["kseg"][key], times["keras_hub"][key])
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
