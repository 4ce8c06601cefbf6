"""2-D sine position encoding of DETR (Carion et al. 2020, Sec. A.4), used by MaskFormer.

MaskFormer's transformer decoder adds it to the keys of its cross-attention over the
stride-32 image features (MaskFormer Sec. 3.3 "same Transformer decoder design as DETR";
the authors' ``PositionEmbeddingSine(N_steps, normalize=True)``, HF
``MaskFormerSinePositionEmbedding``). Computed from H and W at run time, so any input size
works; nothing is learned.
"""

import math

import tensorflow as tf


def sine_position_embedding(height, width, num_pos_feats=128, temperature=10000.0, normalize=True,
                            scale=2 * math.pi, eps=1e-6):
    """Sine/cosine encoding of every (y, x) position of an H x W grid, no padding mask.

    ``y_embed = 1..H`` (optionally ``y / (H + eps) * scale``), likewise ``x``; channel ``i``
    of each half uses ``pos / temperature ** (2 * (i // 2) / num_pos_feats)``, sines on even
    and cosines on odd channels interleaved; the y half comes first (DETR / HF order).

    Args:
      height, width: int or scalar int tensors (dynamic sizes are fine).
      num_pos_feats: channels per axis (d_model / 2 = 128 for MaskFormer).
      temperature, normalize, scale, eps: as DETR's ``PositionEmbeddingSine``.
    Returns: float32 (H * W, 2 * num_pos_feats), row-major over (y, x).
    """
    y = tf.range(1, tf.cast(height, tf.int32) + 1, dtype=tf.float32)
    x = tf.range(1, tf.cast(width, tf.int32) + 1, dtype=tf.float32)
    if normalize:
        y = y / (y[-1] + eps) * scale
        x = x / (x[-1] + eps) * scale
    dim_t = tf.range(num_pos_feats, dtype=tf.float32)
    dim_t = tf.pow(float(temperature), 2.0 * tf.floor(dim_t / 2.0) / float(num_pos_feats))

    def encode(pos):  # (L,) -> (L, num_pos_feats), [sin, cos] interleaved
        p = pos[:, None] / dim_t
        return tf.reshape(tf.stack([tf.sin(p[:, 0::2]), tf.cos(p[:, 1::2])], axis=-1), (-1, num_pos_feats))

    py, px = encode(y), encode(x)
    h, w = tf.shape(py)[0], tf.shape(px)[0]
    py = tf.broadcast_to(py[:, None, :], (h, w, num_pos_feats))
    px = tf.broadcast_to(px[None, :, :], (h, w, num_pos_feats))
    return tf.reshape(tf.concat([py, px], axis=-1), (h * w, 2 * num_pos_feats))
