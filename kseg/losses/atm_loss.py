"""The ATM loss of SegViT (Zhang et al. 2022, Sec. 3.2, Eq. 4) with deep supervision.

For every supervised group (the main output and each entry of ``aux_outputs``)::

    L = cls_weight * L_cls + focal_weight * L_focal + dice_weight * L_dice

- **Fixed assignment** (segvit.md §7.3): token q is class q. A token whose class occurs in
  the image (any non-ignored pixel) is a positive with target class q and target mask
  ``labels == q``; every other token's target is the no-object class K and it has no mask
  loss. No Hungarian matching (authors' ``losses/criterion.py``: indices = the present labels).
- ``L_cls``: cross-entropy over K+1 classes on all K tokens, class weights 1 with the
  no-object class weighted ``no_object_weight`` (0.1), averaged as PyTorch's weighted
  ``cross_entropy`` (``sum w_t * ce / sum w_t``) over this replica's tokens.
- ``L_focal``/``L_dice``: :func:`kseg.losses.mask_losses.sigmoid_focal_loss` (alpha 0.25,
  gamma 2, mean over pixels) and :func:`~kseg.losses.mask_losses.dice_loss` (smooth 1) on the
  positive tokens' mask logits, bilinearly resized (align_corners=False) from the head's
  stride to the label size, summed and divided by the number of positive masks.
- Weights, from the authors' ``losses/atm_loss.py`` / ``criterion.py`` (the paper gives
  none): ``cls_weight`` 1, ``focal_weight`` 20, ``dice_weight`` 1, ``no_object_weight``
  0.1 (= MaskFormer's); every group weighted 1.
- Ignored pixels (``ignore_index``, 255): by default they are *negatives* of every mask, as
  in the authors' code (their targets are ``labels == c``; padding is 255); with
  ``mask_ignore="exclude"`` their mask logits are pinned to -1e4 (zero gradient and zero
  loss there; the focal mean still divides by all pixels).
- Mask-count normalisation across replicas: ``n = clamp(all_reduce_sum(n_local) / R, 1)``,
  as the authors (``all_reduce(num_masks) / world_size``). Keras (``compute_loss``) then
  scales each replica's loss by 1/R and sums replica gradients, which gives
  ``sum_all masks / n_all``, the single-device value.

Labels outside [0, K) other than ``ignore_index`` match no token: they act as ignored
pixels (the data pipeline rejects them earlier, see kseg.data).
"""

import keras
import tensorflow as tf

from kseg.losses.mask_losses import dice_loss, sigmoid_focal_loss

MASK_IGNORE_MODES = ("negative", "exclude")


def _global_mask_count(local):
    """``max(sum over replicas of local / num_replicas, 1)`` (float32 scalar)."""
    count = tf.cast(local, tf.float32)
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count) / float(ctx.num_replicas_in_sync)
    return tf.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="kseg")
class ATMLoss:
    """SegViT set criterion: ``loss(labels, outputs) -> float32 scalar`` (see module docstring).

    Args:
      num_classes: K; the outputs have K tokens and K+1 class logits.
      cls_weight, focal_weight, dice_weight: 1, 20, 1 (authors' ``ATMLoss``).
      no_object_weight: cross-entropy weight of the no-object class (0.1, ``eos_coef``).
      focal_alpha, focal_gamma: 0.25, 2 (DETR / authors' ``sigmoid_focal_loss``).
      ignore_index: 255.
      mask_ignore: ``"negative"`` (authors) or ``"exclude"`` for ignored pixels in the mask losses.
      aux_weight: weight of every auxiliary group (1, authors' ``aux_weight_dict``).
    Call:
      labels: (B, H, W) integer label maps (255 ignored). outputs: dict with
        ``class_logits`` (B, K, K+1), ``mask_logits`` (B, h, w, K), optional
        ``aux_outputs`` (list of such dicts).
    Returns: float32 scalar (this replica's loss; see the normalisation note).
    Raises: ValueError when the outputs do not have K tokens / K+1 classes.
    """

    def __init__(self, num_classes, cls_weight=1.0, focal_weight=20.0, dice_weight=1.0, no_object_weight=0.1,
                 focal_alpha=0.25, focal_gamma=2.0, ignore_index=255, mask_ignore="negative", aux_weight=1.0,
                 name="atm_loss"):
        if mask_ignore not in MASK_IGNORE_MODES:
            raise ValueError(f"mask_ignore must be one of {MASK_IGNORE_MODES}, got {mask_ignore!r}")
        self.num_classes = int(num_classes)
        self.cls_weight, self.focal_weight = float(cls_weight), float(focal_weight)
        self.dice_weight = float(dice_weight)
        self.no_object_weight, self.focal_alpha, self.focal_gamma = float(no_object_weight), focal_alpha, focal_gamma
        self.ignore_index, self.mask_ignore, self.aux_weight = int(ignore_index), mask_ignore, float(aux_weight)
        self.name = name

    # ------------------------------------------------------------------ pieces
    def targets(self, labels):
        """Fixed assignment: (one-hot masks (B, H, W, K) float32, present (B, K) float32,
        token target classes (B, K) int32 with K = no object)."""
        labels = tf.cast(labels, tf.int32)
        onehot = tf.one_hot(labels, self.num_classes, dtype=tf.float32)  # 255 / out of range -> zeros
        present = tf.cast(tf.reduce_any(onehot > 0, axis=(1, 2)), tf.float32)
        classes = tf.where(present > 0, tf.range(self.num_classes)[None], self.num_classes)
        return onehot, present, classes

    def classification_loss(self, class_logits, target_classes):
        """Weighted cross-entropy, PyTorch ``F.cross_entropy(weight=...)`` mean (float32 scalar)."""
        logits = tf.cast(class_logits, tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_classes, logits=logits)
        weights = tf.where(target_classes == self.num_classes, self.no_object_weight, 1.0)
        return tf.reduce_sum(weights * ce) / tf.reduce_sum(weights)

    def mask_losses(self, mask_logits, onehot, present, valid, num_masks):
        """(focal, dice) summed over positive masks / num_masks (float32 scalars)."""
        size = tf.shape(onehot)[1:3]
        logits = tf.image.resize(tf.cast(mask_logits, tf.float32), size, method="bilinear")
        if self.mask_ignore == "exclude":
            logits = tf.where(valid[..., None], logits, -1e4)
        flat_logits = tf.reshape(tf.transpose(logits, (0, 3, 1, 2)), (-1, size[0] * size[1]))
        flat_targets = tf.reshape(tf.transpose(onehot, (0, 3, 1, 2)), (-1, size[0] * size[1]))
        weights = tf.reshape(present, (-1,))
        focal = sigmoid_focal_loss(flat_logits, flat_targets, self.focal_alpha, self.focal_gamma)
        dice = dice_loss(flat_logits, flat_targets)
        return tf.reduce_sum(weights * focal) / num_masks, tf.reduce_sum(weights * dice) / num_masks

    def group_loss(self, outputs, onehot, present, classes, valid, num_masks):
        """The weighted loss of one group (dict with class_logits and mask_logits)."""
        cls = outputs["class_logits"]
        if cls.shape[-2] is not None and (cls.shape[-2] != self.num_classes or cls.shape[-1] != self.num_classes + 1):
            raise ValueError(
                f"ATMLoss(num_classes={self.num_classes}) expects class_logits (B, {self.num_classes}, "
                f"{self.num_classes + 1}) (fixed class-to-token assignment), got {tuple(cls.shape)}; build the "
                "loss with the model's num_classes"
            )
        focal, dice = self.mask_losses(outputs["mask_logits"], onehot, present, valid, num_masks)
        return (self.cls_weight * self.classification_loss(cls, classes)
                + self.focal_weight * focal + self.dice_weight * dice)

    # ------------------------------------------------------------------ API
    def __call__(self, labels, outputs):
        labels = tf.cast(labels, tf.int32)
        if labels.shape.rank == 4:  # (B, H, W, 1)
            labels = labels[..., 0]
        onehot, present, classes = self.targets(labels)
        valid = labels != self.ignore_index
        num_masks = _global_mask_count(tf.reduce_sum(present))
        total = self.group_loss(outputs, onehot, present, classes, valid, num_masks)
        for aux in outputs.get("aux_outputs", None) or []:
            total = total + self.aux_weight * self.group_loss(aux, onehot, present, classes, valid, num_masks)
        return total

    def get_config(self):
        return {"num_classes": self.num_classes, "cls_weight": self.cls_weight, "focal_weight": self.focal_weight,
                "dice_weight": self.dice_weight, "no_object_weight": self.no_object_weight,
                "focal_alpha": self.focal_alpha, "focal_gamma": self.focal_gamma, "ignore_index": self.ignore_index,
                "mask_ignore": self.mask_ignore, "aux_weight": self.aux_weight, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
