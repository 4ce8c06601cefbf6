"""MaskFormer heads (Cheng et al. 2021, Sec. 3.3): FPN pixel decoder and DETR transformer module.

- :class:`MaskFormerPixelDecoder` ("pixel decoder", a light FPN, all ``feature_size``=256
  channels): a 3x3 conv + GroupNorm(32) + ReLU *stem* on the stride-32 feature; then, for
  strides 16, 8, 4, a lateral 1x1 conv + GroupNorm projection of the backbone feature is
  added to the nearest-upsampled running map and fused by a 3x3 conv + GroupNorm + ReLU;
  a final 3x3 ``mask_projection`` conv (with bias) gives the per-pixel embeddings
  (B, H/4, W/4, mask_feature_size). The paper describes the FPN in words only; kernel
  sizes, the 3x3 stem, bias-free convs and GN(32) follow the authors' ``BasePixelDecoder``
  and HF ``MaskFormerPixelDecoder`` (sub-layer names mirror HF:
  ``pixel_level_module.decoder.fpn.{stem,layers.i.proj,layers.i.block}``, ``mask_projection``).
- :class:`MaskFormerTransformerModule`: a 1x1 ``input_projection`` of the stride-32
  backbone feature to ``hidden_size`` (only when the widths differ, as HF/authors), DETR's
  sine position encoding on it (keys of the cross-attention), ``num_queries`` learned
  query positions (``queries_embedder``) with zero-initialised query features, and a
  post-norm DETR decoder (:class:`DetrDecoder`) whose shared final LayerNorm is applied to
  every layer's output (deep supervision, DETR ``return_intermediate``).

Every LayerNorm/GroupNorm uses PyTorch's epsilon 1e-5 and runs in float32 under a mixed
policy; attention softmax is float32. The transformer module runs wholly in float32 (a
float32 island, cheap: Q=100 queries against the stride-32 map). Why: the first decoder
layer's query features are zeros, so its self-attention output and the input of
``self_attn_layer_norm`` are constant over channels; that LayerNorm then multiplies its
gradient by up to 1/sqrt(1e-5) ~ 316, and under mixed_float16 the loss-scaled gradient
overflows float16 at every scale the optimizer tries (every step is skipped).
Nearest upsampling uses PyTorch's index rule (``floor(dst * in / out)``,
:func:`torch_nearest_resize`) so odd sizes match the authors.
"""

import keras
import tensorflow as tf
from keras import ops

from kseg.layers.attention import merge_heads, scaled_dot_product_attention, split_heads
from kseg.layers.sine_position import sine_position_embedding


def torch_nearest_resize(x, size):
    """Nearest-neighbour resize of (B, H, W, C) to ``size`` = (h, w) with PyTorch's rule.

    ``F.interpolate(mode="nearest")`` picks source index ``floor(dst * in / out)``, which
    differs from ``tf.image.resize(method="nearest")`` (half-pixel centres) when the ratio
    is not an integer. Works for dynamic sizes and under XLA (two gathers).
    """
    in_h, in_w = tf.shape(x)[1], tf.shape(x)[2]
    out_h, out_w = size[0], size[1]

    def index(n_out, n_in):
        scale = tf.cast(n_in, tf.float32) / tf.cast(n_out, tf.float32)
        idx = tf.cast(tf.floor(tf.cast(tf.range(n_out), tf.float32) * scale), tf.int32)
        return tf.minimum(idx, n_in - 1)

    x = tf.gather(x, index(out_h, in_h), axis=1)
    return tf.gather(x, index(out_w, in_w), axis=2)


def _group_norm(channels, name):
    # GroupNorm(32) as the authors / HF; statistics in float32 under mixed precision.
    return keras.layers.GroupNormalization(groups=min(32, channels), epsilon=1e-5, name=name, dtype="float32")


# --------------------------------------------------------------------------- pixel decoder


@keras.saving.register_keras_serializable(package="kseg")
class FPNConvLayer(keras.layers.Layer):
    """3x3 conv (no bias) + GroupNorm + ReLU (HF ``MaskFormerFPNConvLayer``: ``0``, ``1``).

    Input (B, H, W, C_in); output (B, H, W, channels) in the compute dtype.
    """

    def __init__(self, channels, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.kernel_size = channels, kernel_size
        self.conv = keras.layers.Conv2D(channels, kernel_size, padding="same", use_bias=False, name="conv")
        self.norm = _group_norm(channels, "norm")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.norm.build(tuple(input_shape[:-1]) + (self.channels,))
        self.built = True

    def call(self, x):
        y = self.norm(self.conv(x))
        return ops.cast(ops.relu(y), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="kseg")
class FPNLayer(keras.layers.Layer):
    """One top-down FPN step (HF ``MaskFormerFPNLayer``): ``proj`` = lateral 1x1 conv (no
    bias) + GroupNorm of the backbone feature, added to the running map upsampled (nearest)
    to the lateral's size, then ``block`` = :class:`FPNConvLayer`.

    Inputs: ``down`` (B, h, w, channels), ``left`` (B, H, W, C_lateral). Output (B, H, W, channels).
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.proj_conv = keras.layers.Conv2D(channels, 1, use_bias=False, name="proj_conv")
        self.proj_norm = _group_norm(channels, "proj_norm")
        self.block = FPNConvLayer(channels, name="block")

    def build(self, lateral_shape):
        self.proj_conv.build(lateral_shape)
        out = tuple(lateral_shape[:-1]) + (self.channels,)
        self.proj_norm.build(out)
        self.block.build(out)
        self.built = True

    def call(self, down, left):
        left = ops.cast(self.proj_norm(self.proj_conv(left)), self.compute_dtype)
        down = torch_nearest_resize(down, tf.shape(left)[1:3])
        return self.block(down + left)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="kseg")
class MaskFormerPixelDecoder(keras.layers.Layer):
    """The FPN pixel decoder (module docstring).

    Input: dict with ``res2``..``res5`` (B, H/s, W/s, C_s), s = 4, 8, 16, 32.
    Output: per-pixel embeddings (B, H/4, W/4, mask_feature_size) in float32.

    Args:
      in_channels: dict ``{"res2": C2, ..., "res5": C5}`` (the backbone's ``out_channels``).
      feature_size: FPN width (256). mask_feature_size: C_E (256).
    """

    LEVELS = ("res2", "res3", "res4", "res5")

    def __init__(self, in_channels, feature_size=256, mask_feature_size=256, **kwargs):
        super().__init__(**kwargs)
        self.in_channels = {k: int(in_channels[k]) for k in self.LEVELS}
        self.feature_size, self.mask_feature_size = feature_size, mask_feature_size
        self.stem = FPNConvLayer(feature_size, name="fpn_stem")
        # layers[0] fuses res4, layers[1] res3, layers[2] res2 (HF order: lateral_widths[::-1]).
        self.fpn_layers = [FPNLayer(feature_size, name=f"fpn_layers_{i}") for i in range(3)]
        self.mask_projection = keras.layers.Conv2D(mask_feature_size, 3, padding="same", name="mask_projection")

    def build(self, input_shape=None):
        self.stem.build((None, None, None, self.in_channels["res5"]))
        for layer, level in zip(self.fpn_layers, ("res4", "res3", "res2")):
            layer.build((None, None, None, self.in_channels[level]))
        self.mask_projection.build((None, None, None, self.feature_size))
        self.built = True

    def call(self, features):
        y = self.stem(features["res5"])
        for layer, level in zip(self.fpn_layers, ("res4", "res3", "res2")):
            y = layer(y, features[level])
        return ops.cast(self.mask_projection(y), "float32")

    def get_config(self):
        return {**super().get_config(), "in_channels": dict(self.in_channels), "feature_size": self.feature_size,
                "mask_feature_size": self.mask_feature_size}


# --------------------------------------------------------------------------- DETR decoder


@keras.saving.register_keras_serializable(package="kseg")
class DetrAttention(keras.layers.Layer):
    """Multi-head attention with separate q/k/v/o projections (HF ``MaskFormerDetr*Attention``,
    torch ``nn.MultiheadAttention``). Position encodings are added by the caller to the
    query/key *inputs* only, never to values (DETR). Softmax in float32; attention-weight
    dropout as torch's ``nn.MultiheadAttention(dropout=...)``.

    Inputs: query (B, N, d), key (B, M, d), value (B, M, d). Output (B, N, d).
    """

    def __init__(self, hidden_size, num_heads, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size, self.num_heads, self.dropout_rate = hidden_size, num_heads, dropout
        dtype = self.dtype_policy  # sublayers follow this layer's policy (float32 island)
        self.q_proj = keras.layers.Dense(hidden_size, name="q_proj", dtype=dtype)
        self.k_proj = keras.layers.Dense(hidden_size, name="k_proj", dtype=dtype)
        self.v_proj = keras.layers.Dense(hidden_size, name="v_proj", dtype=dtype)
        self.o_proj = keras.layers.Dense(hidden_size, name="o_proj", dtype=dtype)
        self.attn_drop = keras.layers.Dropout(dropout, dtype=dtype)

    def build(self, input_shape=None):
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            layer.build((None, None, self.hidden_size))
        self.built = True

    def call(self, query, key, value, training=None):
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        out = scaled_dot_product_attention(q, k, v, dropout=self.attn_drop, training=training)
        return self.o_proj(merge_heads(out))

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "num_heads": self.num_heads,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class DetrDecoderLayer(keras.layers.Layer):
    """Post-norm DETR decoder layer (DETR ``TransformerDecoderLayer.forward_post``).

    ``t = LN1(t + drop(SelfAttn(q=k=t+pos_q, v=t)))``;
    ``t = LN2(t + drop(CrossAttn(q=t+pos_q, k=mem+pos_mem, v=mem)))``;
    ``t = LN3(t + drop(fc2(drop(relu(fc1(t))))))``.
    Names mirror HF: ``self_attn``, ``self_attn_layer_norm``, ``encoder_attn``,
    ``encoder_attn_layer_norm``, ``mlp.fc1``/``mlp.fc2`` (here ``fc1``/``fc2``),
    ``final_layer_norm``.

    Inputs: queries (B, Q, d), query_pos (B or 1, Q, d), memory (B, M, d), memory_pos
    (B or 1, M, d). Output (B, Q, d).
    """

    def __init__(self, hidden_size=256, num_heads=8, ffn_dim=2048, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.num_heads, self.ffn_dim, self.dropout_rate = hidden_size, num_heads, ffn_dim, dropout
        dtype = self.dtype_policy  # sublayers follow this layer's policy (float32 island)
        self.self_attn = DetrAttention(hidden_size, num_heads, dropout, name="self_attn", dtype=dtype)
        self.self_attn_layer_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="self_attn_layer_norm",
                                                                    dtype=dtype)
        self.encoder_attn = DetrAttention(hidden_size, num_heads, dropout, name="encoder_attn", dtype=dtype)
        self.encoder_attn_layer_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="encoder_attn_layer_norm",
                                                                       dtype=dtype)
        self.fc1 = keras.layers.Dense(ffn_dim, activation="relu", name="fc1", dtype=dtype)
        self.fc2 = keras.layers.Dense(hidden_size, name="fc2", dtype=dtype)
        self.final_layer_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_layer_norm", dtype=dtype)
        self.drop = keras.layers.Dropout(dropout, dtype=dtype)

    def build(self, input_shape=None):
        tokens = (None, None, self.hidden_size)
        for layer in (self.self_attn, self.encoder_attn, self.self_attn_layer_norm, self.encoder_attn_layer_norm,
                      self.final_layer_norm, self.fc1):
            layer.build(tokens)
        self.fc2.build((None, None, self.ffn_dim))
        self.built = True

    def call(self, x, query_pos, memory, memory_pos, training=None):
        q = x + query_pos
        x = self.self_attn_layer_norm(x + self.drop(self.self_attn(q, q, x, training=training), training=training))
        attn = self.encoder_attn(x + query_pos, memory + memory_pos, memory, training=training)
        x = self.encoder_attn_layer_norm(x + self.drop(attn, training=training))
        ffn = self.fc2(self.drop(self.fc1(x), training=training))
        return self.final_layer_norm(x + self.drop(ffn, training=training))

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "num_heads": self.num_heads,
                "ffn_dim": self.ffn_dim, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class MaskFormerTransformerModule(keras.layers.Layer):
    """The transformer module (module docstring; HF ``MaskFormerTransformerModule``).

    Input: the stride-32 backbone feature (B, h, w, in_channels).
    Output: (L, B, Q, hidden_size), the decoder's shared final LayerNorm applied to the
    output of each of the L layers (the last entry feeds the main prediction, the others
    the auxiliary losses).

    Args: in_channels; num_queries (100); hidden_size d (256); num_heads (8); ffn_dim
      (2048); num_layers (6); dropout (0.1, DETR: residual, FFN and attention weights).
      ``dtype`` reaches every sublayer: :class:`kseg.models.MaskFormer` builds the module in
      float32 under any mixed policy (why: module docstring).
    """

    def __init__(self, in_channels, num_queries=100, hidden_size=256, num_heads=8, ffn_dim=2048, num_layers=6,
                 dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.num_queries, self.hidden_size = in_channels, num_queries, hidden_size
        self.num_heads, self.ffn_dim, self.num_layers, self.dropout_rate = num_heads, ffn_dim, num_layers, dropout
        dtype = self.dtype_policy  # sublayers follow this layer's policy (float32 island)
        self.input_projection = (keras.layers.Conv2D(hidden_size, 1, name="input_projection", dtype=dtype)
                                 if in_channels != hidden_size else None)
        self.decoder_layers = [DetrDecoderLayer(hidden_size, num_heads, ffn_dim, dropout, name=f"layers_{i}",
                                                dtype=dtype) for i in range(num_layers)]
        self.layernorm = keras.layers.LayerNormalization(epsilon=1e-5, name="layernorm", dtype=dtype)

    def build(self, input_shape=None):
        if self.input_projection is not None:
            self.input_projection.build((None, None, None, self.in_channels))
        # Learned query positions (HF ``queries_embedder.weight``); DETR's nn.Embedding ~ N(0, 1).
        self.query_embed = self.add_weight(name="query_embed", shape=(self.num_queries, self.hidden_size),
                                           initializer=keras.initializers.RandomNormal(stddev=1.0))
        for layer in self.decoder_layers:
            layer.build()
        self.layernorm.build((None, None, self.hidden_size))
        self.built = True

    def call(self, features, training=None):
        if self.input_projection is not None:
            features = self.input_projection(features)
        b, h, w = tf.shape(features)[0], tf.shape(features)[1], tf.shape(features)[2]
        memory = tf.reshape(features, (b, h * w, self.hidden_size))
        memory_pos = ops.cast(sine_position_embedding(h, w, self.hidden_size // 2)[None], memory.dtype)
        query_pos = ops.cast(self.query_embed, memory.dtype)[None]
        x = tf.zeros((b, self.num_queries, self.hidden_size), dtype=memory.dtype)
        outs = []
        for layer in self.decoder_layers:
            x = layer(x, query_pos, memory, memory_pos, training=training)
            outs.append(self.layernorm(x))
        return tf.stack(outs, axis=0)

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "num_queries": self.num_queries,
                "hidden_size": self.hidden_size, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
                "num_layers": self.num_layers, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="kseg")
class MaskEmbedMLP(keras.layers.Layer):
    """The mask-embedding MLP (DETR's box-head MLP; HF ``mask_embedder.{0,1,2}.0``):
    ``num_layers`` Dense layers of ``hidden_size`` with ReLU between, the last to
    ``out_dim`` (MaskFormer Sec. 3.3: 2 hidden layers of 256).

    Input (..., in_dim); output (..., out_dim).
    """

    def __init__(self, hidden_size=256, out_dim=256, num_layers=3, **kwargs):
        super().__init__(**kwargs)
        self.hidden_size, self.out_dim, self.num_layers = hidden_size, out_dim, num_layers
        self.dense_layers = [
            keras.layers.Dense(out_dim if i == num_layers - 1 else hidden_size,
                               activation=None if i == num_layers - 1 else "relu", name=f"layers_{i}")
            for i in range(num_layers)
        ]

    def build(self, input_shape):
        dim = input_shape[-1]
        for layer in self.dense_layers:
            layer.build((None, dim))
            dim = layer.units
        self.built = True

    def call(self, x):
        for layer in self.dense_layers:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(), "hidden_size": self.hidden_size, "out_dim": self.out_dim,
                "num_layers": self.num_layers}
