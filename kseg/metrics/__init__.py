"""Segmentation metrics from one confusion matrix: aAcc, mIoU, mAcc, per-class IoU / Acc."""

from kseg.metrics.confusion import (
    MeanIoU,
    SegMeanIoU,
    confusion_matrix,
    format_table,
    summarize,
)

__all__ = ["MeanIoU", "SegMeanIoU", "confusion_matrix", "format_table", "summarize"]
