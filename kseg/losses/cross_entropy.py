"""Per-pixel cross-entropy with an ignore index, at label resolution."""

import itertools
import os

import keras
import tensorflow as tf
from keras import ops


def _channel_chunks(num_classes):
    """[(start, end)) class ranges, one per CPU core (at most 8): TF's CPU resize kernels
    run on one thread, so each chunk's resize (and its gradient) runs on its own core."""
    n = max(1, min(os.cpu_count() or 1, 8, num_classes))
    edges = [round(i * num_classes / n) for i in range(n + 1)]
    return list(itertools.pairwise(edges))


def resized_softmax_cross_entropy(labels, logits):
    """Per-pixel softmax cross-entropy of ``logits`` resized bilinearly to the labels' size.

    ``-log softmax(resize(logits))[label]``, float32 (B, H, W): the value of
    ``tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.image.resize(logits, (H, W)))``
    (mmseg resizes logits to the label size before the loss, align_corners=False), to
    float rounding, with its gradient with respect to the low-resolution logits.

    Why not those two TF ops: on a CPU the fused cross-entropy kernel and the resize (and
    its gradient) are single-threaded passes over the full-size (B, H, W, K) tensor, the
    largest of a training step (SegFormer-B0, 2 x 512 x 512 x 150: ~1.2 s of a 2.5 s step,
    measured). Here the classes are split in one chunk per core, each chunk is resized on
    its own core, the log-sum-exp runs as multi-threaded reductions over the chunks, and
    the gradient ``(softmax - onehot) * dy`` (the exponentials of the forward pass reused)
    goes back through each chunk's ``ResizeBilinearGrad``. Resizing channels separately is
    exact: bilinear interpolation mixes pixels, never channels.

    Args:
      labels: int (B, H, W) in [0, K).
      logits: float32 (B, h, w, K), any h, w; K known statically.
    Raises:
      tf.errors.InvalidArgumentError: a label outside [0, K).
    """
    labels = tf.cast(labels, tf.int32)
    num_classes = logits.shape[-1]
    size = tf.shape(labels)[1:3]
    checks = [tf.debugging.assert_non_negative(labels, message="cross-entropy: negative label"),
              tf.debugging.assert_less(labels, num_classes, message="cross-entropy: label >= number of classes")]
    with tf.control_dependencies(checks):
        labels = tf.identity(labels)
    chunks = _channel_chunks(num_classes)

    @tf.custom_gradient
    def loss(small):
        parts = [tf.image.resize(small[..., a:b], size, method="bilinear") for a, b in chunks]
        peak = tf.reduce_max(parts[0], axis=-1)
        for part in parts[1:]:
            peak = tf.maximum(peak, tf.reduce_max(part, axis=-1))
        exps = [tf.exp(part - peak[..., None]) for part in parts]
        total = tf.add_n([tf.reduce_sum(e, axis=-1) for e in exps])
        picked = tf.add_n([  # the label's logit, from the chunk that holds it
            tf.where((labels >= a) & (labels < b),
                     tf.gather(part, tf.clip_by_value(labels - a, 0, b - a - 1), batch_dims=3), 0.0)
            for (a, b), part in zip(chunks, parts)])

        def grad(dy):
            scale = (dy / total)[..., None]
            grads = [tf.raw_ops.ResizeBilinearGrad(
                grads=e * scale - tf.one_hot(labels - a, b - a, dtype=e.dtype) * dy[..., None],
                original_image=small[..., a:b], align_corners=False, half_pixel_centers=True)
                for (a, b), e in zip(chunks, exps)]
            return tf.concat(grads, axis=-1)

        return tf.math.log(total) - (picked - peak), grad

    return loss(tf.cast(logits, tf.float32))


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
        labels = ops.cast(y_true, "int32")
        valid = ops.not_equal(labels, self.ignore_index)
        safe = ops.where(valid, labels, 0)
        losses = resized_softmax_cross_entropy(safe, y_pred)
        if self.class_weight is not None:
            losses = losses * ops.take(ops.convert_to_tensor(self.class_weight, "float32"), safe)
        return ops.where(valid, losses, 0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_index": self.ignore_index, "class_weight": self.class_weight}
