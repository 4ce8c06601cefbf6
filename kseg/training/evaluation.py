"""Evaluation over all replicas of a tf.distribute strategy, with the single-device result.

Each round hands one evaluation batch to each replica (``experimental_distribute_values_
from_function``, so replicas may get images of different sizes), runs the evaluator's
step (prediction + confusion matrix) in every replica and sums the matrices with
``strategy.reduce``. When the split runs out in the middle of a round, the idle replicas
get a copy of the round's last image whose label is all ``ignore_index``: a confusion
matrix skips ignored pixels, so the padding adds exactly zero and the result is the
single-device confusion matrix, integer for integer.

Why not ``model.predict`` / ``model.evaluate``: Keras 3.15 splits each *global* batch over
the replicas, so a last batch with fewer images than replicas leaves a replica an empty
batch, which crashes its forward pass (reshapes of 0-size tensors) and would have to be
masked out of a streaming metric; it also needs one image size per global batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from kseg.inference.evaluator import (
    _split,
    _step_fn,
    evaluate,
    inference_kwargs,
    inference_settings,
)
from kseg.metrics.confusion import summarize
from kseg.utils.progress import ProgressTask


def _prepare(element):
    images, labels = _split(element)
    images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
    if images.shape.rank == 3:
        images, labels = images[tf.newaxis], labels[tf.newaxis]
    if labels.shape.rank == 4:
        labels = tf.squeeze(labels, axis=-1)
    return tf.cast(images, tf.float32), tf.cast(labels, tf.int32)


def evaluate_distributed(
    model,
    dataset,
    num_classes: int,
    eval_cfg=None,
    strategy=None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    progress: bool = True,
    on_image: Callable | None = None,
    logits_fn: Callable | None = None,
) -> dict:
    """:func:`kseg.inference.evaluate` spread over the replicas of ``strategy``.

    Args: as :func:`kseg.inference.evaluate`; ``strategy`` defaults to the current one.
      With one replica this is ``evaluate``. Under MultiWorkerMirroredStrategy every worker
      iterates the whole split (each keeps the batches of its own replicas) and every
      worker gets the full result; ``on_image`` sees this worker's images only.
    Returns: the ``evaluate`` summary (``confusion_matrix``, ``num_images``, aAcc, mIoU...).
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return evaluate(model, dataset, num_classes, eval_cfg, class_names=class_names,
                        ignore_index=ignore_index, progress=progress, on_image=on_image,
                        logits_fn=logits_fn)
    k = int(num_classes)
    kwargs = inference_kwargs(eval_cfg, logits_fn)
    step = _step_fn(model, k, ignore_index, kwargs)
    start = time.perf_counter()
    total = np.zeros((k, k), np.int64)
    seen = 0
    bar = ProgressTask("evaluating", None, "rounds") if progress else None
    iterator = iter(dataset)
    rounds = 0
    while True:
        batch = []
        for _ in range(replicas):
            try:
                batch.append(_prepare(next(iterator)))
            except StopIteration:
                break
        if not batch:
            break
        real = len(batch)
        last_image, last_label = batch[-1]
        while len(batch) < replicas:
            batch.append((last_image[:1], tf.fill(tf.shape(last_label[:1]), ignore_index)))
        images = strategy.experimental_distribute_values_from_function(
            lambda ctx: batch[ctx.replica_id_in_sync_group][0])
        labels = strategy.experimental_distribute_values_from_function(
            lambda ctx: batch[ctx.replica_id_in_sync_group][1])
        # A plain function: strategy.run would hand PerReplica values to a tf.function as is.
        cm, preds = strategy.run(lambda i, l: step(i, l), args=(images, labels))
        total += strategy.reduce(tf.distribute.ReduceOp.SUM, cm, axis=None).numpy()
        seen += sum(int(b[0].shape[0]) for b in batch[:real])
        if on_image is not None:
            local = strategy.experimental_local_results(preds)
            ids = _local_replica_ids(strategy)
            for pred, rid in zip(local, ids):
                if rid >= real:
                    continue
                imgs, labs = batch[rid][0].numpy(), batch[rid][1].numpy()
                for i, p in enumerate(pred.numpy()):
                    on_image(imgs[i], labs[i], p)
        rounds += 1
        if bar is not None:
            bar.update(rounds, info=f"mIoU {summarize(total)['mIoU']:.2f}")
        if real < replicas:
            break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    summary = summarize(total, class_names)
    summary["confusion_matrix"] = total.tolist()
    summary["num_images"] = seen
    summary["inference"] = inference_settings(kwargs)
    summary["seconds"] = round(seconds, 3)
    summary["images_per_second"] = round(seen / seconds, 3) if seconds > 0 else None
    return summary


def _local_replica_ids(strategy):
    """Global replica ids of this worker's replicas, in ``experimental_local_results`` order."""
    ids = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(ctx.replica_id_in_sync_group))
    return [int(v) for v in strategy.experimental_local_results(ids)]
