"""Per-pixel cross-entropy with an ignore index, at label resolution."""

import keras
import tensorflow as tf
from keras import ops


def resize_logits_to(logits, labels):
    """Bilinearly resizes (B, h, w, K) logits to the (B, H, W) label size (align_corners=False)."""
    return tf.image.resize(tf.cast(logits, tf.float32), tf.shape(labels)[1:3], method="bilinear")


@keras.saving.register_keras_serializable(package="kseg")
class SegCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy per pixel; ignored pixels contribute zero.

    ``y_true``: int (B, H, W) class ids in [0, K) or ``ignore_index``.
    ``y_pred``: float logits (B, h, w, K) at any stride; resized bilinearly to (H, W) first
    (mmseg ``resize(..., align_corners=False)`` before the loss).
    Returns per-pixel float32 losses (B, H, W); with Keras' default
    ``sum_over_batch_size`` reduction the loss is the mean over all B*H*W pixels, ignored
    ones counting as zero: mmseg's ``CrossEntropyLoss`` with ``avg_non_ignore=False``, the
    setting the SegFormer/SETR/Segmenter reference configs ran with. This mean is also
    exact under tf.distribute, where each replica's sum is divided by the global size.

    Args:
      ignore_index: label value skipped by the loss (255).
      class_weight: optional list of K per-class weights (mmseg ``class_weight``).
    """

    def __init__(self, ignore_index=255, class_weight=None, name="seg_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_index = ignore_index
        self.class_weight = None if class_weight is None else [float(w) for w in class_weight]

    def call(self, y_true, y_pred):
        logits = resize_logits_to(y_pred, y_true)
        labels = ops.cast(y_true, "int32")
        valid = ops.not_equal(labels, self.ignore_index)
        safe = ops.where(valid, labels, 0)
        losses = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
        if self.class_weight is not None:
            losses = losses * ops.take(ops.convert_to_tensor(self.class_weight, "float32"), safe)
        return ops.where(valid, losses, 0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index, "class_weight": self.class_weight}
