"""Segmentation losses."""

from kseg.losses.cross_entropy import SegCrossEntropy, resize_logits_to
from kseg.losses.mask_losses import dice_loss, sigmoid_focal_loss
