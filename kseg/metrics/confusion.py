"""Confusion-matrix segmentation metrics: aAcc, mIoU, mAcc, per-class IoU / Acc.

One int64 confusion matrix ``cm[K, K]`` (rows = ground truth, columns = prediction) is
accumulated over a whole split, and the scores are computed from it once, as mmseg does
(``intersect_and_union`` summed over images, then ``total_area_to_metrics``):

- ``IoU[k] = cm[k, k] / (row[k] + col[k] - cm[k, k])``, ``Acc[k] = cm[k, k] / row[k]``;
- ``aAcc = trace(cm) / sum(cm)``;
- ``mIoU`` / ``mAcc`` are NaN-skipping means: a class with no ground-truth and no
  predicted pixel (``row + col == 0``) has IoU NaN and is left out of mIoU; a class with
  no ground-truth pixel has Acc NaN and is left out of mAcc (mmseg's ``nanmean``).

Pixels whose label is ``ignore_index`` (255) are skipped. Any other label outside
``[0, K)`` is an error, never silently counted.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf


def _flat_pair_index(labels, preds, num_classes: int, ignore_index: int):
    """Returns (index int32 [N] into the flattened [K*K] matrix, K*K for skipped pixels).

    Asserts that labels are in ``[0, K)`` or ``ignore_index`` and preds in ``[0, K)``.
    Out-of-range values never reach a valid bin (also when assertions are no-ops, as
    under XLA): they fall into the overflow bin ``K*K``.
    """
    k = num_classes
    labels = tf.cast(labels, tf.int32)
    preds = tf.cast(preds, tf.int32)
    tf.debugging.assert_equal(
        tf.shape(labels), tf.shape(preds), message="labels and preds must have the same shape"
    )
    labels = tf.reshape(labels, [-1])
    preds = tf.reshape(preds, [-1])
    not_ignored = tf.not_equal(labels, ignore_index)
    label_ok = tf.logical_and(labels >= 0, labels < k)
    pred_ok = tf.logical_and(preds >= 0, preds < k)
    bad = tf.logical_and(not_ignored, tf.logical_not(label_ok))
    checks = [
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            [
                f"label values must be in [0, {k}) or the ignore index {ignore_index}; fix "
                "the label map (void -> 255) or num_classes. Out-of-range pixels, min, max:",
                tf.reduce_sum(tf.cast(bad, tf.int32)),
                tf.reduce_min(tf.where(bad, labels, tf.int32.max)),
                tf.reduce_max(tf.where(bad, labels, tf.int32.min)),
            ],
        ),
        tf.debugging.Assert(
            tf.reduce_all(pred_ok),
            [f"predictions must be class indices in [0, {k})"],
        ),
    ]
    with tf.control_dependencies(checks):
        valid = tf.logical_and(tf.logical_and(not_ignored, label_ok), pred_ok)
        return tf.where(valid, labels * k + preds, k * k)


def confusion_matrix(labels, preds, num_classes: int, ignore_index: int = 255) -> tf.Tensor:
    """Confusion matrix of one batch (mmseg ``intersect_and_union``, as a full matrix).

    Args:
      labels: int [B, H, W] (any shape) ground truth, ``ignore_index`` = skip.
      preds: int, same shape as ``labels``, predicted class indices in [0, K).
      num_classes: K.
      ignore_index: label value that is not counted (255).

    Returns:
      int64 [K, K]; ``cm[i, j]`` = number of pixels with label i predicted as j.

    Raises:
      tf.errors.InvalidArgumentError: a label outside [0, K) that is not ``ignore_index``
        (the message gives their count, min and max), or a prediction outside [0, K).
        Works in eager mode and in ``tf.function``; under XLA assertions are no-ops and
        such pixels are dropped (never counted).
    """
    k = int(num_classes)
    idx = _flat_pair_index(labels, preds, k, ignore_index)
    # int32 per batch (a batch has < 2**31 pixels), int64 when accumulated.
    counts = tf.math.unsorted_segment_sum(tf.ones_like(idx), idx, num_segments=k * k + 1)
    return tf.reshape(tf.cast(counts[: k * k], tf.int64), [k, k])


def _nan_to_none(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def summarize(cm, class_names: Optional[Sequence[str]] = None) -> dict:
    """Scores of a confusion matrix (mmseg ``total_area_to_metrics``), in percent.

    Args:
      cm: int [K, K] confusion matrix (rows = ground truth), a tensor or an array.
      class_names: K names; default ``"0" .. "K-1"``.

    Returns:
      ``{"aAcc", "mIoU", "mAcc"}``: float percent (NaN when no class qualifies), and
      ``{"IoU", "Acc"}``: ``{class name: percent or None}``; None marks a class skipped in
      the mean (IoU: absent from ground truth and prediction; Acc: absent from ground truth).

    Raises:
      ValueError: ``cm`` is not square or ``class_names`` has the wrong length.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be [K, K], got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} names for {k} classes")
    inter = np.diag(cm)
    area_label = cm.sum(axis=1)
    area_pred = cm.sum(axis=0)
    union = area_label + area_pred - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
        acc = np.where(area_label > 0, inter / area_label, np.nan)
    total = cm.sum()

    def nanmean(x):
        return float(np.nanmean(x) * 100) if np.any(~np.isnan(x)) else float("nan")

    return {
        "aAcc": float(inter.sum() / total * 100) if total > 0 else float("nan"),
        "mIoU": nanmean(iou),
        "mAcc": nanmean(acc),
        "IoU": {n: _nan_to_none(v * 100) for n, v in zip(names, iou)},
        "Acc": {n: _nan_to_none(v * 100) for n, v in zip(names, acc)},
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(r):
        return "|" + "|".join(f" {str(c):^{w}} " for c, w in zip(r, widths)) + "|"

    return "\n".join([sep, line(header), sep, *[line(r) for r in rows], sep])


def format_table(summary: dict) -> str:
    """mmseg-style text report: a per-class ``Class | IoU | Acc`` table, then a summary
    ``aAcc | mIoU | mAcc`` table; percent with 2 decimals, skipped classes as ``nan``."""

    def fmt(v):
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    rows = [[name, fmt(iou), fmt(summary["Acc"][name])] for name, iou in summary["IoU"].items()]
    per_class = _table(["Class", "IoU", "Acc"], rows)
    total = _table(["aAcc", "mIoU", "mAcc"], [[fmt(summary[k]) for k in ("aAcc", "mIoU", "mAcc")]])
    return f"per class results:\n{per_class}\nSummary:\n{total}"


@keras.saving.register_keras_serializable(package="kseg", name="SegMeanIoU")
class MeanIoU(keras.metrics.Metric):
    """Streaming mIoU over one confusion matrix, for ``model.compile(metrics=[...])``.

    ``update_state(y_true, y_pred)`` takes labels int [B, H, W] (``ignore_index`` = skip)
    and logits float [B, h, w, K] at any stride: the logits are resized bilinearly
    (``tf.image.resize``, align_corners=False) to (H, W), arg-maxed, and the batch's
    confusion matrix is added to one int64 [K, K] variable. The variable is created
    with ``aggregation="sum"`` and on-read synchronization (Keras metric variables), so
    under ``tf.distribute`` (MirroredStrategy) each replica accumulates its own shard
    and ``result()`` reads the sum over replicas.

    ``result()`` is mIoU in percent [0, 100], the unit of every other kseg report
    (``summarize``, the eval JSON, the console, TensorBoard; mmseg reports percent too),
    averaged over classes present in the ground truth or the prediction; 0.0 before any
    update. ``confusion_matrix()`` gives
    the accumulated matrix and ``summary(class_names)`` the full ``summarize`` dict.

    Args:
      num_classes: K.
      ignore_index: label value skipped (255).
      name: metric name in logs (``mIoU`` -> ``val_mIoU``).
      sample_weight (in ``update_state``): optional, broadcastable to [B, H, W]; pixels
        with weight <= 0 are skipped, others count once.

    Raises (in ``update_state``): tf.errors.InvalidArgumentError for labels outside
    [0, K) that are not ``ignore_index``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, name: str = "mIoU", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.total_cm = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="int64",
            aggregation="sum",
            name="total_confusion_matrix",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.convert_to_tensor(y_true)
        if labels.shape.rank == 4:  # [B, H, W, 1]
            labels = tf.squeeze(labels, axis=-1)
        labels = tf.cast(labels, tf.int32)
        logits = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
        logits = tf.image.resize(logits, tf.shape(labels)[1:3], method="bilinear")
        preds = tf.argmax(logits, axis=-1, output_type=tf.int32)
        if sample_weight is not None:
            weight = tf.cast(tf.convert_to_tensor(sample_weight), tf.float32)
            if weight.shape.rank == 1:  # [B]
                weight = tf.reshape(weight, [-1, 1, 1])
            elif weight.shape.rank == 4:  # [B, H, W, 1]
                weight = tf.squeeze(weight, axis=-1)
            weight = tf.broadcast_to(weight, tf.shape(labels))
            labels = tf.where(weight > 0, labels, self.ignore_index)
        self.total_cm.assign_add(
            confusion_matrix(labels, preds, self.num_classes, self.ignore_index)
        )

    def result(self):
        cm = tf.cast(tf.convert_to_tensor(self.total_cm), tf.float64)
        inter = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - inter
        present = union > 0
        iou = tf.math.divide_no_nan(inter, union)
        n = tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(100.0 * tf.math.divide_no_nan(tf.reduce_sum(iou), n), tf.float32)

    def reset_state(self):
        self.total_cm.assign(tf.zeros_like(self.total_cm))

    def confusion_matrix(self) -> tf.Tensor:
        """The accumulated int64 [K, K] matrix (rows = ground truth), summed over replicas."""
        return tf.convert_to_tensor(self.total_cm)

    def summary(self, class_names: Optional[Sequence[str]] = None) -> dict:
        """``summarize`` of the accumulated matrix (percent; eager only)."""
        return summarize(self.confusion_matrix().numpy(), class_names)

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "name": self.name,
            "dtype": self.dtype,
        }


SegMeanIoU = MeanIoU  # the registered name ("kseg>SegMeanIoU"), importable under it too
