"""Runs in a fresh process (TensorFlow's logical CPU devices must be configured before it
initialises): ``python tests/training/replica_check.py CHECK [FAMILY ...]`` prints one JSON
line per family with the largest differences between a multi-replica (or accumulated /
clipped) run and the single-device reference with the same global batch.

Checks:
  replicas   3 fit steps, MirroredStrategy on 2 logical CPUs vs one device, batch 4.
  accumulate 3 fit steps, 2 replicas x accumulate_steps 2 (micro-batch 1) vs one device,
             batch 4, optim.clip_grad_norm small enough to clip every step.
  evaluate   distributed evaluation (2 replicas) on 5 images of mixed sizes vs the
             single-device evaluator: confusion matrices.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from kseg.training.strategy import configure_cpu_replicas  # noqa: E402

configure_cpu_replicas(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import families  # noqa: E402
from kseg.config import OptimConfig, ScheduleConfig  # noqa: E402
from kseg.training.train_step import install_train_step  # noqa: E402

STEPS = 3
BATCH = 4
_MIRRORED = []
EPSILON = float(os.environ.get("CHECK_EPS", "1e-8"))
LR = float(os.environ.get("CHECK_LR", "2e-4"))


def gauge_names(name, weights):
    """Trainable tensors whose gradient vanishes in exact arithmetic (here: below 1e-6 of
    the largest gradient component on the first batch): they do not change the output."""
    keras.utils.set_random_seed(0)
    model = families.build(name)
    model.set_weights(weights)
    model.compile()
    images, labels = data()
    with tf.GradientTape() as tape:
        out = model(images[:BATCH], training=True)
        loss = model.compute_loss(x=images[:BATCH], y=labels[:BATCH], y_pred=out)
    # Dense arrays (gathered tables, e.g. Swin's relative position bias, give IndexedSlices).
    grads = [None if g is None else np.asarray(tf.convert_to_tensor(g))
             for g in tape.gradient(loss, model.trainable_variables)]
    top = max(float(np.max(np.abs(g))) for g in grads if g is not None)
    return {v.path for v, g in zip(model.trainable_variables, grads)
            if g is None or float(np.max(np.abs(g))) <= 1e-6 * top}


def mirrored():
    """One MirroredStrategy per process (separate instances would share collective keys)."""
    if not _MIRRORED:
        _MIRRORED.append(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    return _MIRRORED[0]


def data(seed=0, n=BATCH * STEPS, size=families.IMAGE_SIZE, k=families.NUM_CLASSES):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, *size, 3)).astype("float32")
    # Smooth blobs of classes plus some ignored pixels, so every class and 255 occur.
    yy, xx = np.mgrid[: size[0], : size[1]]
    labels = np.stack([((xx // (8 + i % 5) + yy // (9 + i % 3) + i) % k) for i in range(n)]).astype("int32")
    labels[:, :3, :] = 255
    return images, labels


class Losses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))


def train(name, weights, strategy, accumulate=1, clip=None, lr=LR, eps=EPSILON, per_group_clip=None):
    images, labels = data()
    with strategy.scope():
        model = families.build(name)
        model.set_weights(weights)
        model.compile(optim=OptimConfig(lr=lr, head_lr_mult=10.0, clip_grad_norm=clip, epsilon=eps),
                      schedule=ScheduleConfig(name="poly", warmup_steps=2, warmup_ratio=0.1),
                      max_steps=10)
        install_train_step(model, accumulate)
        if per_group_clip:  # what Keras does with global_clipnorm on each sub-optimizer
            for opt in model.optimizer.optimizers:
                opt.global_clipnorm = per_group_clip
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
    losses = Losses()
    model.fit(ds, epochs=1, steps_per_epoch=STEPS, callbacks=[losses], verbose=0)
    return np.array(losses.values), [np.array(w) for w in model.weights], model


def compare(ref, other, gauge=()):
    (l0, w0, m), (l1, w1, _) = ref, other
    names = [v.path for v in m.weights]
    scale = max(float(np.max(np.abs(a))) for a in w0)
    non_gauge = max(float(np.max(np.abs(a - b))) / scale for a, b, n in zip(w0, w1, names) if n not in gauge)
    kept = [(a, b) for a, b, n in zip(w0, w1, names) if n not in gauge]
    l2_non_gauge = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in kept)) / np.sqrt(sum(np.sum(a ** 2) for a, _ in kept)))
    worst = sorted(((float(np.max(np.abs(a - b))), n, float(np.max(np.abs(a)))) for a, b, n in zip(w0, w1, names)),
                   reverse=True)[:3]
    loss_rel = float(np.max(np.abs(l1 - l0) / np.abs(l0)))
    # Relative difference of every weight tensor, measured against the tensor's scale.
    rel = max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-6)) for a, b in zip(w0, w1))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(w0, w1))
    total = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(w0, w1)))
                  / np.sqrt(sum(np.sum(a ** 2) for a in w0)))
    return {"loss_rel": loss_rel, "weight_rel_max": rel, "weight_abs_max": moved, "weight_rel_l2": total,
            "losses": l0.tolist(), "worst": worst,
            "weight_rel_max_non_gauge": non_gauge, "weight_rel_l2_non_gauge": l2_non_gauge,
            "gauge": sorted(gauge)}


def initial_weights(name):
    keras.utils.set_random_seed(0)
    return [np.array(w) for w in families.build(name).weights]


def check_replicas(name):
    w = initial_weights(name)
    one = train(name, w, tf.distribute.get_strategy())
    two = train(name, w, mirrored())
    out = compare(one, two, gauge_names(name, w))
    out["moved_from_init"] = max(float(np.max(np.abs(a - b))) for a, b in zip(w, one[1]))
    return out


def check_accumulate(name):
    w = initial_weights(name)
    one = train(name, w, tf.distribute.get_strategy(), clip=0.05)
    acc = train(name, w, mirrored(), accumulate=2, clip=0.05)
    out = compare(one, acc, gauge_names(name, w))
    noclip = train(name, w, tf.distribute.get_strategy(), clip=None)
    out["clip_changes_weights_abs"] = max(float(np.max(np.abs(a - b))) for a, b in zip(one[1], noclip[1]))
    # The clip is global over both parameter groups: clipping each group by its own norm
    # (Keras' global_clipnorm set on each sub-optimizer) moves the weights differently.
    per_group = train(name, w, tf.distribute.get_strategy(), per_group_clip=0.05)
    out["per_group_clip_differs_abs"] = max(float(np.max(np.abs(a - b))) for a, b in zip(one[1], per_group[1]))
    return out


def check_evaluate(name):
    from kseg.inference import evaluate
    from kseg.training.evaluation import evaluate_distributed

    keras.utils.set_random_seed(0)
    model = families.build(name)
    rng = np.random.default_rng(1)
    sizes = [(64, 64), (48, 80), (64, 64), (32, 48), (80, 64)]  # 5 images: not a multiple of 2
    elements = []
    for h, w in sizes:
        img = rng.uniform(0, 255, (1, h, w, 3)).astype("float32")
        lab = rng.integers(0, families.NUM_CLASSES, (1, h, w)).astype("int32")
        lab[:, :2] = 255
        elements.append((img, lab))

    def dataset():
        return tf.data.Dataset.from_generator(
            lambda: iter(elements),
            output_signature=(tf.TensorSpec([1, None, None, 3], tf.float32),
                              tf.TensorSpec([1, None, None], tf.int32)))

    ref = evaluate(model, dataset(), families.NUM_CLASSES, progress=False)
    weights = model.get_weights()
    strategy = mirrored()
    with strategy.scope():
        dist_model = families.build(name)
        dist_model.set_weights(weights)
    seen = []
    got = evaluate_distributed(dist_model, dataset(), families.NUM_CLASSES, strategy=strategy, progress=False,
                               on_image=lambda i, l, p: seen.append(i.shape[:2]))
    return {"cm_equal": ref["confusion_matrix"] == got["confusion_matrix"],
            "num_images": got["num_images"], "ref_images": ref["num_images"],
            "order_kept": [tuple(s) for s in seen] == sizes,
            "cm_sum": int(np.sum(got["confusion_matrix"]))}


CHECKS = {"replicas": check_replicas, "accumulate": check_accumulate, "evaluate": check_evaluate}

# ``all``: what tests/integration/test_distribute.py asserts, in one process.
ALL = [("replicas", name) for name in families.FAMILIES] + [("accumulate", "segmenter"),
                                                             ("evaluate", "segformer")]

if __name__ == "__main__":
    check, names = sys.argv[1], sys.argv[2:]
    jobs = ALL if check == "all" else [(check, name) for name in (names or list(families.FAMILIES))]
    for check, name in jobs:
        try:
            result = CHECKS[check](name)
        except Exception as e:  # report and go on: one family's failure must not hide the others
            import traceback

            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {e}"[:2000]}
        print("RESULT " + json.dumps({"family": name, "check": check, **result}), flush=True)
