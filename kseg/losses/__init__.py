"""Segmentation losses."""

from kseg.losses.cross_entropy import SegCrossEntropy, resize_logits_to
