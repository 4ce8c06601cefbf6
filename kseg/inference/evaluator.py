"""Evaluation over a split: one confusion matrix, mmseg's aAcc / mIoU / mAcc.

Each image is labelled at its original size (``predict_labels`` with the recipe's
``EvalConfig``: whole, slide or ms_flip, optional keep-ratio resize) and its confusion
matrix added to one int64 [K, K] matrix for the whole split; the scores are computed once
from that matrix (mmseg ``IoUMetric``: ``intersect_and_union`` summed, then
``total_area_to_metrics``).

Throughput: one ``tf.function`` per model and settings, traced once for any image size
(``input_signature`` with unknown batch, height and width), so a split of mixed sizes
does not retrace; a ``tf.data.Dataset`` is prefetched, so decoding the next images
overlaps the inference of the current one. The summary reports ``images_per_second``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from kseg.inference.predictor import MODES, predict_labels, warn_if_slide_is_whole
from kseg.metrics.confusion import confusion_matrix, summarize
from kseg.utils.progress import ProgressTask


def _cfg(eval_cfg, key, default):
    if isinstance(eval_cfg, dict):
        return eval_cfg.get(key, default)
    return getattr(eval_cfg, key, default)


def inference_kwargs(eval_cfg=None, logits_fn=None) -> dict:
    """``predict_logits`` / ``predict_labels`` keyword arguments from an ``EvalConfig`` (or
    dict; None: whole).

    Raises: ValueError for an unknown mode.
    """
    mode = _cfg(eval_cfg, "mode", "whole")
    if mode not in MODES:
        raise ValueError(f"eval mode {mode!r} is not supported; valid: {', '.join(MODES)}")
    scale = _cfg(eval_cfg, "scale", None)
    return {
        "mode": mode,
        "scale": None if scale is None else tuple(scale),
        "crop_size": tuple(_cfg(eval_cfg, "crop_size", (512, 512))),
        "stride": tuple(_cfg(eval_cfg, "stride", (341, 341))),
        "ms_ratios": tuple(_cfg(eval_cfg, "ms_ratios", (0.5, 0.75, 1.0, 1.25, 1.5, 1.75))),
        "ms_flip": bool(_cfg(eval_cfg, "ms_flip", True)),
        "ms_inner_mode": _cfg(eval_cfg, "ms_inner_mode", "whole"),
        "logits_fn": logits_fn,
    }


def inference_settings(kwargs: dict) -> dict:
    """The settings of :func:`inference_kwargs` as they go into an eval JSON: mode, scale,
    crop_size, stride (slide), ms_ratios / ms_flip / ms_inner_mode (ms_flip); lists."""
    out = {"mode": kwargs["mode"], "scale": None if kwargs["scale"] is None else list(kwargs["scale"])}
    if kwargs["mode"] == "slide" or (kwargs["mode"] == "ms_flip" and kwargs["ms_inner_mode"] == "slide"):
        out.update(crop_size=list(kwargs["crop_size"]), stride=list(kwargs["stride"]))
    if kwargs["mode"] == "ms_flip":
        out.update(ms_ratios=list(kwargs["ms_ratios"]), ms_flip=kwargs["ms_flip"],
                   ms_inner_mode=kwargs["ms_inner_mode"])
    return out


def _split(element):
    """(image, label) from a tuple/list or a dict with "image" and "label"."""
    if isinstance(element, dict):
        return element["image"], element["label"]
    return element[0], element[1]


# model -> {settings: tf.function}: one trace per model and settings, reused by the
# evaluations of a training run.
_STEPS = weakref.WeakKeyDictionary()


def _step_fn(model, k, ignore_index, kwargs):
    """tf.function (images f32 [B, H, W, 3], labels i32 [B, H, W]) -> (cm int64 [K, K],
    preds int32 [B, H, W]), for any H, W."""
    key = (k, ignore_index, *[(n, v if n != "logits_fn" else id(v)) for n, v in kwargs.items()])
    steps = _STEPS.setdefault(model, {})
    if key not in steps:
        model_ref = weakref.ref(model)  # a strong one would keep the cache entry alive

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, None, 3], tf.float32),
                tf.TensorSpec([None, None, None], tf.int32),
            ]
        )
        def step(images, labels):
            preds = predict_labels(model_ref(), images, **kwargs)
            return confusion_matrix(labels, preds, k, ignore_index), preds

        steps.clear()  # keep only the latest settings
        steps[key] = step
    return steps[key]


def _same_size_groups(batches, group):
    """Merges consecutive (b, images, labels) of one image size into batches of at most
    ``group`` images (a batch already larger passes alone); yields (first b, last b,
    images, labels)."""
    pending = []

    def flush():
        if len(pending) == 1:
            return (pending[0][0],) + tuple(pending[0])
        return (pending[0][0], pending[-1][0], tf.concat([p[1] for p in pending], 0),
                tf.concat([p[2] for p in pending], 0))

    for item in batches:
        size = tuple(item[1].shape[1:3])
        count = sum(int(p[1].shape[0]) for p in pending)
        if pending and (size != tuple(pending[0][1].shape[1:3]) or count + int(item[1].shape[0]) > group):
            yield flush()
            pending = []
        pending.append(item)
    if pending:
        yield flush()


def _num_batches(dataset):
    if isinstance(dataset, tf.data.Dataset):
        n = int(dataset.cardinality())
        return n if n >= 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None


def evaluate(
    model,
    dataset,
    num_classes: int,
    eval_cfg=None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = 255,
    progress: bool = True,
    max_images: int | None = None,
    on_image: Callable | None = None,
    logits_fn: Callable | None = None,
    group_images: int = 4,
) -> dict:
    """Scores ``model`` on a split.

    Args:
      model: Keras segmentation model (see ``predict_logits``).
      dataset: iterable (e.g. ``tf.data.Dataset``) of ``(image, label)`` or
        ``{"image", "label"}``: image [B, H, W, 3] RGB in [0, 255] (uint8 or float),
        label int [B, H, W] (or [B, H, W, 1]; unbatched [H, W, 3] / [H, W] also work),
        ``ignore_index`` = not scored. B > 1 only when the images of a batch share one
        size (images are never padded).
      num_classes: K.
      eval_cfg: ``kseg.config.EvalConfig`` (or a dict) with ``mode`` (whole | slide |
        ms_flip), ``scale``, ``crop_size``, ``stride``, ``ms_*``; None: whole, original size.
      class_names: K names for the per-class dicts and the table.
      ignore_index: label value skipped (255).
      progress: show the progress (counted in batches) with the running mIoU
        (:mod:`kseg.utils.progress`: a bar on a terminal, periodic lines otherwise).
      max_images: stop after this many images (the last batch is cut).
      on_image: called as ``on_image(image, label, pred)`` per image with numpy arrays
        image [H, W, 3] (as given), label int32 [H, W], pred int32 [H, W] (e.g. to
        collect overlays).
      logits_fn: passed to ``predict_logits`` (dict outputs).
      group_images: consecutive images of one size go through the model together, up to
        this many (fewer, larger calls use both cores better: CamVid val, B0, 1 -> 4:
        20% less CPU time). The labels can differ from one-at-a-time inference only where
        batched matrix products round differently (~1e-6 of the logits); 1 disables it.

    Returns:
      ``summarize(cm, class_names)`` (aAcc, mIoU, mAcc in percent; per-class IoU / Acc)
      plus ``confusion_matrix`` (nested list, int, rows = ground truth), ``num_images``,
      ``inference`` (the settings: mode, scale, crop_size / stride for slide, ms_* for
      ms_flip), ``seconds`` (wall time of the loop, first tracing included) and
      ``images_per_second``.

    Raises:
      ValueError: unknown mode, or a label outside [0, K) that is not ``ignore_index``
        (the message names the image number).

    Warns:
      UserWarning: slide inference whose window covers the whole (resized) first image
        (slide then computes exactly whole).
    """
    k = int(num_classes)
    kwargs = inference_kwargs(eval_cfg, logits_fn)

    step = _step_fn(model, k, ignore_index, kwargs)
    total = np.zeros((k, k), np.int64)
    seen = 0
    target = _num_batches(dataset)
    if isinstance(dataset, tf.data.Dataset):  # decode the next images during inference
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    bar = ProgressTask("evaluating", target, "batches") if progress else None
    start = time.perf_counter()

    def batches():
        """(index of the dataset batch, images, labels), cut at max_images."""
        taken = 0
        for b, element in enumerate(dataset):
            if max_images is not None and taken >= max_images:
                return
            images, labels = _split(element)
            images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
            if images.shape.rank == 3:  # unbatched [H, W, 3], [H, W]
                images, labels = images[tf.newaxis], labels[tf.newaxis]
            if labels.shape.rank == 4:
                labels = tf.squeeze(labels, axis=-1)
            if max_images is not None:
                images, labels = images[: max_images - taken], labels[: max_images - taken]
            taken += int(images.shape[0])
            yield b, images, labels

    for b, b_last, images, labels in _same_size_groups(batches(), group_images):
        if seen == 0:
            warn_if_slide_is_whole(images.shape[1], images.shape[2], kwargs["mode"], kwargs["scale"],
                                   kwargs["crop_size"], kwargs["ms_inner_mode"], kwargs["ms_ratios"], stacklevel=3)
        try:
            cm, preds = step(tf.cast(images, tf.float32), tf.cast(labels, tf.int32))
        except tf.errors.InvalidArgumentError as e:
            found = re.search(r"assertion failed: (.*)", e.message)
            reason = found.group(1) if found else e.message
            if bar is not None:
                bar.close()
            last = seen + int(images.shape[0]) - 1
            which = f"image {seen}" if last == seen else f"images {seen}..{last}"
            raise ValueError(
                f"evaluation failed on {which} of the split (batch {b}): {reason}"
            ) from e
        total += cm.numpy()
        n = int(images.shape[0])
        if on_image is not None:
            imgs, labs, prs = images.numpy(), labels.numpy().astype(np.int32), preds.numpy()
            for i in range(n):
                on_image(imgs[i], labs[i], prs[i])
        seen += n
        if bar is not None:
            bar.update(b_last + 1, info=f"mIoU {summarize(total)['mIoU']:.2f}")
    summary = summarize(total, class_names)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    summary["confusion_matrix"] = total.tolist()
    summary["num_images"] = seen
    summary["inference"] = inference_settings(kwargs)
    summary["seconds"] = round(seconds, 3)
    summary["images_per_second"] = round(seen / seconds, 3) if seconds > 0 else None
    return summary


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def save_results(summary: dict, path: str) -> None:
    """Writes an ``evaluate`` summary as strict JSON (NaN -> null), creating folders."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_json_safe(summary), f, indent=2)
