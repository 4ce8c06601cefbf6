"""The multi-head attention core every kseg attention layer runs (timm ``layers/attention.py``
keeps one ``Attention`` the same way), and SegFormer's efficient self-attention.

:func:`scaled_dot_product_attention` is the one place where attention scores are formed:
``softmax(Q K^T / sqrt(d) + bias) V`` (Vaswani et al. 2017, Eq. 1), with the scores, bias,
softmax and (optional) attention-weight dropout in float32 whatever the policy (under a
mixed policy the projections run in float16/bfloat16, whose range large score ranges
overflow) and the weighted sum back in the dtype of the values. The layers around it only
project, split and merge heads, under the names of their reference checkpoints:

- :class:`kseg.layers.vit_block.ViTAttention` (timm ``Attention``, fused ``qkv``);
- :class:`EfficientSelfAttention` (SegFormer, spatially reduced keys/values);
- :class:`kseg.layers.window_attention.WindowAttention` (Swin, relative position bias and
  the shifted-window mask);
- ``DecoderSelfAttention`` / ``DecoderCrossAttention`` (SegViT's ATM, which also reads the
  scores) in :mod:`kseg.heads.segvit_atm_head`;
- ``DetrAttention`` (MaskFormer's transformer decoder) in :mod:`kseg.heads.maskformer_head`.
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


def scaled_dot_product_attention(q, k, v, bias=None, grouped_bias=None, dropout=None, training=None,
                                 return_scores=False):
    """``softmax(Q K^T / sqrt(d) + bias) V``, scores and softmax in float32.

    Args:
      q: (..., N, d) queries; k, v: (..., M, d) keys and values with the same leading
        (batch, heads) dimensions. d is the head width; the scale is ``d ** -0.5``.
      bias: optional additive float bias broadcastable to the scores (..., N, M): a mask
        (large negative values), or Swin's relative position bias (heads, N, M).
      grouped_bias: optional additive (G, N, M) bias for a batch made of groups of G
        consecutive entries (Swin's shifted-window mask: batch = images x G windows, window
        g of every image gets ``grouped_bias[g]``); q's leading dims must be (B * G, heads)
        with static trailing dims.
      dropout: optional ``keras.layers.Dropout`` on the attention weights (float32).
      training: passed to ``dropout``.
      return_scores: also return the float32 scores (..., N, M) after scaling and biases,
        before the softmax (SegViT's ATM turns them into masks).
    Returns:
      (..., N, d) in the dtype of ``v``; with ``return_scores``, ``(output, scores)``.
    """
    scores = tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32) * (q.shape[-1] ** -0.5)
    if bias is not None:
        scores = scores + tf.cast(bias, tf.float32)
    if grouped_bias is not None:
        groups = tf.shape(grouped_bias)[0]
        trailing = scores.shape[1:]
        scores = tf.reshape(scores, (-1, groups, *trailing)) + tf.cast(grouped_bias, tf.float32)[None, :, None]
        scores = tf.reshape(scores, (-1, *trailing))
    probs = tf.nn.softmax(scores, axis=-1)
    if dropout is not None:
        probs = dropout(probs, training=training)
    out = tf.matmul(tf.cast(probs, v.dtype), v)
    return (out, scores) if return_scores else out


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
