"""Semantic inference for mask-classification models (MaskFormer, SegViT)."""

import tensorflow as tf


def semantic_inference(class_logits, mask_logits):
    """Per-pixel class scores from (class, mask) pairs.

    ``scores[b, y, x, c] = sum_q softmax(class_logits[b, q])[c] * sigmoid(mask_logits[b, y, x, q])``
    with the no-object class (the last of K+1) dropped after the softmax: MaskFormer
    Sec. 3.4 "semantic inference" (argmax_c of sum_i p_i(c) m_i[h, w]), which SegViT uses
    unchanged (SegViT Sec. 3.2).

    Args:
      class_logits: (B, Q, K+1) logits, any float dtype.
      mask_logits: (B, h, w, Q) mask logits, any float dtype.
    Returns: float32 (B, h, w, K) non-negative scores (argmax gives the label map; they are
      not normalised over classes).
    """
    probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., :-1]
    masks = tf.sigmoid(tf.cast(mask_logits, tf.float32))
    return tf.einsum("bqk,bhwq->bhwk", probs, masks)
