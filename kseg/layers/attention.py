"""Multi-head attention primitives with a float32 softmax.

Under a mixed policy the projections run in float16/bfloat16, but the softmax over
attention scores runs in float32 (large score ranges overflow float16) and is cast back.
"""

import keras
import tensorflow as tf
from keras import ops


def split_heads(x, num_heads):
    """(B, N, C) -> (B, heads, N, C / heads)."""
    b, n = ops.shape(x)[0], ops.shape(x)[1]
    x = ops.reshape(x, (b, n, num_heads, x.shape[-1] // num_heads))
    return ops.transpose(x, (0, 2, 1, 3))


def merge_heads(x):
    """(B, heads, N, D) -> (B, N, heads * D)."""
    x = ops.transpose(x, (0, 2, 1, 3))
    b, n = ops.shape(x)[0], ops.shape(x)[1]
    return ops.reshape(x, (b, n, x.shape[2] * x.shape[3]))


def scaled_dot_product_attention(q, k, v, mask=None):
    """softmax(Q K^T / sqrt(d)) V with the softmax in float32 (Vaswani et al. 2017, Eq. 1).

    Args:
      q: (B, heads, N, d); k, v: (B, heads, M, d).
      mask: optional additive float mask broadcastable to (B, heads, N, M).
    Returns:
      (B, heads, N, d) in the dtype of ``v``.
    """
    scale = 1.0 / (q.shape[-1] ** 0.5)
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
    scores = ops.cast(scores, "float32") * scale
    if mask is not None:
        scores = scores + ops.cast(mask, "float32")
    probs = ops.cast(tf.nn.softmax(scores, axis=-1), v.dtype)
    return ops.matmul(probs, v)


@keras.saving.register_keras_serializable(package="kseg")
class EfficientSelfAttention(keras.layers.Layer):
    """Self-attention with spatially reduced keys/values (PVT; SegFormer Sec. 3.1, Eq. 2).

    Keys and values come from the feature map shrunk by a strided ``sr_ratio`` x
    ``sr_ratio`` convolution plus LayerNorm, so the cost is O(N^2 / R) with R = sr_ratio^2.
    Sub-layer names follow the HF SegFormer checkpoint (``attention.self.{query,key,
    value,sr,layer_norm}``, ``attention.output.dense``).

    Input: (B, H, W, C) feature map. Output: (B, H, W, C).
    """

    def __init__(self, dim, num_heads, sr_ratio=1, qkv_bias=True, sr_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.qkv_bias, self.sr_norm_epsilon = qkv_bias, sr_norm_epsilon
        self.query = keras.layers.Dense(dim, use_bias=qkv_bias, name="query")
        self.key = keras.layers.Dense(dim, use_bias=qkv_bias, name="key")
        self.value = keras.layers.Dense(dim, use_bias=qkv_bias, name="value")
        if sr_ratio > 1:
            self.sr = keras.layers.Conv2D(dim, sr_ratio, strides=sr_ratio, name="sr")
            self.layer_norm = keras.layers.LayerNormalization(epsilon=sr_norm_epsilon, name="layer_norm")
        self.dense = keras.layers.Dense(dim, name="dense")

    def build(self, input_shape):
        tokens = (None, None, self.dim)
        self.query.build(tokens)
        if self.sr_ratio > 1:
            self.sr.build(input_shape)
            self.layer_norm.build(tokens)
        self.key.build(tokens)
        self.value.build(tokens)
        self.dense.build(tokens)
        self.built = True

    def call(self, x):
        b, h, w = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        tokens = ops.reshape(x, (b, -1, self.dim))
        kv = tokens
        if self.sr_ratio > 1:
            kv = self.sr(x)
            kv = self.layer_norm(ops.reshape(kv, (b, -1, self.dim)))
        q = split_heads(self.query(tokens), self.num_heads)
        k = split_heads(self.key(kv), self.num_heads)
        v = split_heads(self.value(kv), self.num_heads)
        out = self.dense(merge_heads(scaled_dot_product_attention(q, k, v)))
        return ops.reshape(out, (b, h, w, self.dim))

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "sr_ratio": self.sr_ratio,
            "qkv_bias": self.qkv_bias,
            "sr_norm_epsilon": self.sr_norm_epsilon,
        }
