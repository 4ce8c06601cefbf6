"""Window multi-head self-attention with relative position bias (Swin, Liu et al. 2021, Sec. 3.2).

Self-attention is computed inside non-overlapping M x M windows. Each head adds a learned
bias ``B`` indexed by the relative offset of the two tokens (Swin Eq. 4):
``softmax(Q K^T / sqrt(d) + B [+ mask]) V``; the (2M-1)^2 x heads table is
``relative_position_bias_table`` and the fixed (M^2, M^2) lookup index is a constant
(not a weight; the official release stores it as a buffer, converters skip it).

Helpers here work on dynamic sizes (``tf.shape``), so the Swin backbone takes any
input size; callers pad feature maps to window multiples first.

Names mirror the official Swin release (microsoft/Swin-Transformer ``WindowAttention``:
``qkv``, ``proj``, ``relative_position_bias_table``). Scores, bias, mask and softmax run in float32 in the
shared core (:func:`kseg.layers.attention.scaled_dot_product_attention`).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kseg.layers.attention import scaled_dot_product_attention

# The official shifted-window mask value (a large negative logit, not -inf, so a row of
# only masked entries can never appear and fp16 stays finite).
MASK_VALUE = -100.0


def relative_position_index(window_size):
    """(M^2, M^2) int32: the row of the bias table for each (query, key) token pair.

    Token t = r * M + c. Offsets (dr, dc) in [-(M-1), M-1] are shifted to be
    non-negative and flattened as ``(dr + M - 1) * (2M - 1) + (dc + M - 1)``, as in the
    official release, so converted tables line up.
    """
    m = int(window_size)
    rows, cols = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    coords = np.stack([rows.reshape(-1), cols.reshape(-1)])  # (2, M^2)
    rel = coords[:, :, None] - coords[:, None, :] + (m - 1)  # (2, M^2, M^2)
    return (rel[0] * (2 * m - 1) + rel[1]).astype("int32")


def window_partition(x, window_size):
    """(B, Hp, Wp, C) with Hp, Wp multiples of M -> (B * nW, M * M, C), windows row-major per image."""
    m = window_size
    shape = tf.shape(x)
    b, h, w, c = shape[0], shape[1], shape[2], x.shape[-1]
    x = tf.reshape(x, (b, h // m, m, w // m, m, c))
    x = tf.transpose(x, (0, 1, 3, 2, 4, 5))
    return tf.reshape(x, (-1, m * m, c))


def window_reverse(windows, window_size, height, width):
    """Inverse of :func:`window_partition`: (B * nW, M * M, C) -> (B, Hp, Wp, C)."""
    m = window_size
    c = windows.shape[-1]
    x = tf.reshape(windows, (-1, height // m, width // m, m, m, c))
    x = tf.transpose(x, (0, 1, 3, 2, 4, 5))
    return tf.reshape(x, (-1, height, width, c))


def pad_to_multiple(x, multiple):
    """Zero-pads a (B, H, W, C) map at the bottom and right to multiples of ``multiple`` (dynamic)."""
    shape = tf.shape(x)
    pad_h = (multiple - shape[1] % multiple) % multiple
    pad_w = (multiple - shape[2] % multiple) % multiple
    return tf.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])


def cyclic_shift(x, shift):
    """``torch.roll(x, (shift, shift), dims=(1, 2))`` on a (B, H, W, C) map, by slicing + concat.

    Equivalent to ``tf.roll`` but built from ops every converter lowers natively (TFLite has
    no builtin roll). ``shift`` is a Python int with ``|shift| <= min(H, W)``.
    """
    if shift == 0:
        return x
    s = shift  # positive: move down/right; negative: move up/left
    x = tf.concat([x[:, -s:], x[:, :-s]], axis=1)
    return tf.concat([x[:, :, -s:], x[:, :, :-s]], axis=2)


def shifted_window_mask(height, width, window_size, shift_size):
    """The SW-MSA attention mask for a padded (height, width) map: (nW, M^2, M^2) float32.

    After the cyclic shift by ``-shift_size`` the map is split per axis into 3 regions
    ``[0, L-M)``, ``[L-M, L-s)``, ``[L-s, L)``; tokens of one window attend only to tokens
    of the same (row region, column region) pair. Other pairs get :data:`MASK_VALUE`.
    Padded tokens are not masked (as in the official segmentation code and HF).

    Args: height, width: scalar int tensors (multiples of ``window_size``).
    """
    def regions(length):
        idx = tf.range(length)
        return (tf.cast(idx >= length - window_size, tf.int32)
                + tf.cast(idx >= length - shift_size, tf.int32))

    img = regions(height)[:, None] * 3 + regions(width)[None, :]  # (Hp, Wp)
    win = window_partition(tf.cast(img, tf.float32)[None, :, :, None], window_size)[..., 0]  # (nW, M^2)
    diff = win[:, None, :] - win[:, :, None]
    return tf.where(tf.equal(diff, 0.0), 0.0, MASK_VALUE)


@keras.saving.register_keras_serializable(package="kseg")
class WindowAttention(keras.layers.Layer):
    """W-MSA / SW-MSA over pre-partitioned windows (Swin Sec. 3.2, Eq. 4).

    Call: ``attn(windows, attn_mask=None)`` with windows (B * nW, M^2, dim) and an optional
    additive mask (nW, M^2, M^2) from :func:`shifted_window_mask`; returns
    (B * nW, M^2, dim) in the compute dtype. Windows must be ordered image-major (as
    :func:`window_partition` does) so window k of every image gets mask row ``k``.

    Args:
      dim: channels; num_heads: heads (``dim`` must divide); window_size: M.
      qkv_bias: bias on the fused ``qkv`` projection (True in all Swin releases).
    Raises: ValueError if ``dim`` is not divisible by ``num_heads``.
    """

    def __init__(self, dim, num_heads, window_size, qkv_bias=True, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.window_size, self.qkv_bias = dim, num_heads, int(window_size), qkv_bias
        self.head_dim = dim // num_heads
        self.qkv = keras.layers.Dense(3 * dim, use_bias=qkv_bias, name="qkv")
        self.proj = keras.layers.Dense(dim, name="proj")
        self.index = relative_position_index(self.window_size).reshape(-1)

    def build(self, input_shape):
        m = self.window_size
        self.relative_position_bias_table = self.add_weight(
            shape=((2 * m - 1) ** 2, self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="relative_position_bias_table",
        )
        self.qkv.build((None, None, self.dim))
        self.proj.build((None, None, self.dim))
        self.built = True

    def relative_position_bias(self):
        """(heads, M^2, M^2) float32 bias gathered from the table."""
        n = self.window_size ** 2
        table = tf.cast(ops.convert_to_tensor(self.relative_position_bias_table), tf.float32)
        bias = tf.reshape(tf.gather(table, self.index), (n, n, self.num_heads))
        return tf.transpose(bias, (2, 0, 1))

    def call(self, x, attn_mask=None):
        n, h, d = self.window_size ** 2, self.num_heads, self.head_dim
        # Projections on (tokens, C) matrices: rank-2 matmuls (the TFLite converter otherwise
        # folds the 6-D window transpose into a batch matmul of unsupported rank).
        qkv = tf.reshape(self.qkv(tf.reshape(x, (-1, self.dim))), (-1, n, 3, h, d))
        qkv = tf.transpose(qkv, (2, 0, 3, 1, 4))  # (3, B*nW, heads, N, d)
        out = scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], bias=self.relative_position_bias()[None],
                                           grouped_bias=attn_mask)
        out = tf.transpose(out, (0, 2, 1, 3))
        return tf.reshape(self.proj(tf.reshape(out, (-1, self.dim))), (-1, n, self.dim))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "window_size": self.window_size, "qkv_bias": self.qkv_bias}
