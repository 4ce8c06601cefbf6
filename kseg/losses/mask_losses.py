"""Per-mask losses of mask classification (MaskFormer, SegViT): sigmoid focal and dice.

Both take mask logits and binary targets flattened to (N, P) (N masks of P pixels) and
return one float32 loss per mask (N,); the caller sums them and divides by the number of
masks (across replicas), as DETR / MaskFormer's ``SetCriterion`` does.
"""

import tensorflow as tf


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Focal loss (Lin et al. 2017, Eq. 5) per mask, averaged over its P pixels.

    ``alpha`` weights positives (negatives get 1 - alpha; alpha < 0 disables it).
    Source: MaskFormer Sec. 4 (alpha 0.25, gamma 2, as DETR), ``sigmoid_focal_loss`` of
    the authors' ``criterion.py`` (mean over pixels, per mask).

    Args: logits, targets: (N, P); targets in {0, 1}. Returns: float32 (N,).
    """
    logits = tf.cast(logits, tf.float32)
    targets = tf.cast(targets, tf.float32)
    prob = tf.sigmoid(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    p_t = prob * targets + (1.0 - prob) * (1.0 - targets)
    loss = ce * tf.pow(1.0 - p_t, gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return tf.reduce_mean(loss, axis=-1)


def dice_loss(logits, targets, smooth=1.0):
    """Soft dice loss ``1 - (2 sum(p t) + s) / (sum p + sum t + s)`` per mask, p = sigmoid.

    Source: MaskFormer Sec. 4 / V-Net (Milletari et al. 2016); smoothing 1 in numerator and
    denominator as the authors' ``dice_loss``.

    Args: logits, targets: (N, P); targets in {0, 1}. Returns: float32 (N,).
    """
    prob = tf.sigmoid(tf.cast(logits, tf.float32))
    targets = tf.cast(targets, tf.float32)
    numerator = 2.0 * tf.reduce_sum(prob * targets, axis=-1)
    denominator = tf.reduce_sum(prob, axis=-1) + tf.reduce_sum(targets, axis=-1)
    return 1.0 - (numerator + smooth) / (denominator + smooth)
