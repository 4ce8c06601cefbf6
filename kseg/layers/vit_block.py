"""The pre-norm transformer block of ViT (Dosovitskiy et al. 2021, Eq. 2-3), timm layout.

Names mirror timm's ``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``), so weight converters are renames. Tokens are (B, N, C).
"""

import keras
from keras import ops

from kseg.layers.attention import merge_heads, scaled_dot_product_attention, split_heads
from kseg.layers.drop_path import DropPath


@keras.saving.register_keras_serializable(package="kseg")
class ViTAttention(keras.layers.Layer):
    """Multi-head attention with one fused ``qkv`` projection (rows q, k, v) and ``proj``.

    ``attn(x)``: self-attention, (B, N, dim) -> (B, N, dim). ``attn(x, context=c)``: the
    queries are x's (B, N, dim) and the keys/values c's (B, M, dim), through the same
    ``qkv`` kernel (its q columns on x, its k/v columns on c; SegViT's query
    down-sampling, :mod:`kseg.backbones.vit_shrunk`). Scores and softmax in float32
    (:func:`kseg.layers.attention.scaled_dot_product_attention`).
    """

    def __init__(self, dim, num_heads, qkv_bias=True, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.qkv_bias, self.dropout_rate = dim, num_heads, qkv_bias, dropout
        self.qkv = keras.layers.Dense(3 * dim, use_bias=qkv_bias, name="qkv")
        self.proj = keras.layers.Dense(dim, name="proj")
        self.proj_drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.qkv.build((None, None, self.dim))
        self.proj.build((None, None, self.dim))
        self.built = True

    def call(self, x, context=None, training=None):
        if context is None:
            q, k, v = ops.split(self.qkv(x), 3, axis=-1)
        else:
            c = self.dim
            kernel = ops.cast(self.qkv.kernel, x.dtype)
            q, kv = ops.matmul(x, kernel[:, :c]), ops.matmul(context, kernel[:, c:])
            if self.qkv_bias:
                bias = ops.cast(self.qkv.bias, x.dtype)
                q, kv = q + bias[:c], kv + bias[c:]
            k, v = ops.split(kv, 2, axis=-1)
        heads = [split_heads(t, self.num_heads) for t in (q, k, v)]
        out = merge_heads(scaled_dot_product_attention(*heads))
        return self.proj_drop(self.proj(out), training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "qkv_bias": self.qkv_bias, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class ViTMlp(keras.layers.Layer):
    """``fc2(drop(GELU(fc1(x))))`` with exact (erf) GELU as in timm/HF ViT. (B, N, dim) -> same."""

    def __init__(self, dim, hidden_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden_dim, self.dropout_rate = dim, hidden_dim, dropout
        self.fc1 = keras.layers.Dense(hidden_dim, name="fc1")
        self.fc2 = keras.layers.Dense(dim, name="fc2")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.fc1.build((None, None, self.dim))
        self.fc2.build((None, None, self.hidden_dim))
        self.built = True

    def call(self, x, training=None):
        x = self.drop(keras.activations.gelu(self.fc1(x), approximate=False), training=training)
        return self.drop(self.fc2(x), training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden_dim": self.hidden_dim,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class ViTBlock(keras.layers.Layer):
    """``x + DropPath(attn(norm1(x)))`` then ``x + DropPath(mlp(norm2(x)))``. (B, N, dim) -> same.

    ``block(x, queries=q)`` runs the block for the (B, N', dim) tokens ``q`` attending to all
    of x: ``y = q + DropPath(attn(norm1(q), context=norm1(x)))``, then the MLP on y, giving
    (B, N', dim) (the hook of SegViT's query down-sampling, which samples q from x).

    Args:
      dim, num_heads; mlp_ratio: hidden = mlp_ratio * dim (4, ViT). drop_path: stochastic
      depth rate of this block. dropout: timm ``drop_rate`` (projection / MLP dropout).
      norm_epsilon: 1e-6 as timm ViT (the Segmenter decoder's blocks use 1e-5, PyTorch's default).
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, dropout=0.0,
                 norm_epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads, self.mlp_ratio, self.qkv_bias = dim, num_heads, mlp_ratio, qkv_bias
        self.drop_path_rate, self.dropout_rate, self.norm_epsilon = drop_path, dropout, norm_epsilon
        self.norm1 = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="norm1")
        self.attn = ViTAttention(dim, num_heads, qkv_bias, dropout, name="attn")
        self.norm2 = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="norm2")
        self.mlp = ViTMlp(dim, int(dim * mlp_ratio), dropout, name="mlp")
        self.drop_path = DropPath(drop_path, name="drop_path")

    def build(self, input_shape):
        shape = (None, None, self.dim)
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(shape)
        self.built = True

    def call(self, x, queries=None, training=None):
        if queries is None:
            x = x + self.drop_path(self.attn(self.norm1(x), training=training), training=training)
        else:
            attended = self.attn(self.norm1(queries), context=self.norm1(x), training=training)
            x = queries + self.drop_path(attended, training=training)
        return x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias, "drop_path": self.drop_path_rate,
                "dropout": self.dropout_rate, "norm_epsilon": self.norm_epsilon}
