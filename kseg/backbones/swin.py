"""Swin Transformer (Liu et al. 2021, "Hierarchical Vision Transformer using Shifted Windows").

The MaskFormer backbone for Swin-T/S/B/L (MaskFormer Sec. 4, Table 1; the definition is
not in the MaskFormer paper: it follows the Swin paper Sec. 3 and the official code,
microsoft/Swin-Transformer, in the detectron2 form MaskFormer ships as
``D2SwinTransformer``):

  patch_embed: 4x4 stride-4 convolution + LayerNorm              -> stride 4, C
  layers_{i}, i = 0..3: ``depths[i]`` blocks alternating W-MSA and SW-MSA (shift M // 2),
      each ``x + DropPath(attn(norm1(x)))``, ``x + DropPath(mlp(norm2(x)))``;
      the stage output (before merging) goes through ``norm{i}`` (LayerNorm) and is
      returned as ``res{i+2}``; ``downsample`` (patch merging: 2x2 neighbours concatenated,
      LayerNorm, linear 4C -> 2C) feeds stage i + 1                  -> strides 8/16/32

Any input size works, non-square included, without Python shape arithmetic: the image is
zero-padded at the bottom/right to a multiple of the patch size, each block zero-pads its
normalised input to window multiples (the shifted-window mask is built in-graph for the
padded size) and crops back, and patch merging pads odd maps by one row/column, exactly
as the official segmentation code and transformers' ``MaskFormerSwinModel`` do. Output
sizes are ceil(H / 4), then ceil(. / 2) per stage.

Layer names mirror the official release (``.`` -> ``_``): ``patch_embed/{proj,norm}``,
``layers_{i}/blocks_{j}/{norm1, attn/{qkv, proj, relative_position_bias_table}, norm2,
mlp/{fc1, fc2}}``, ``layers_{i}/downsample/{norm, reduction}``, ``norm{i}``; converters
(``kseg.convert.swin``) are renames + transposes. The stage outputs are what MaskFormer
feeds its pixel decoder; the window-attention details live in
``kseg.layers.window_attention``.

Mirrors the segmentation code, not transformers' ``SwinModel``, in one respect: the window
is never shrunk to a small stage's size (``SwinModel`` clamps it when a stage is not larger
than the window; MaskFormer and ``MaskFormerSwinModel`` pad instead).

LayerNorm epsilon 1e-5 (PyTorch default), exact GELU, qkv bias, stochastic depth linear in
the block index from 0 to ``drop_path_rate`` (official ``torch.linspace``). No absolute
position embedding (``ape=False`` in every released Swin and in MaskFormer).
"""

import keras
import tensorflow as tf
from keras import ops

from kseg.layers.drop_path import DropPath
from kseg.layers.vit_block import ViTMlp
from kseg.layers.window_attention import (
    WindowAttention,
    cyclic_shift,
    pad_to_multiple,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

FEATURE_KEYS = ("res2", "res3", "res4", "res5")


@keras.saving.register_keras_serializable(package="kseg")
class SwinBlock(keras.layers.Layer):
    """One Swin block (Swin Eq. 3): (shifted) window attention then MLP, pre-norm, residual.

    Call: ``block(x, attn_mask=None, training=None)`` with x (B, H, W, dim), any H, W; the
    mask (from :func:`shifted_window_mask` for the padded size) is used when
    ``shift_size > 0``. Returns (B, H, W, dim).
    """

    def __init__(self, dim, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0, qkv_bias=True,
                 drop_path=0.0, norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}")
        self.dim, self.num_heads, self.window_size, self.shift_size = dim, num_heads, window_size, shift_size
        self.mlp_ratio, self.qkv_bias = mlp_ratio, qkv_bias
        self.drop_path_rate, self.norm_epsilon = drop_path, norm_epsilon
        self.norm1 = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="norm1")
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, name="attn")
        self.norm2 = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="norm2")
        self.mlp = ViTMlp(dim, int(dim * mlp_ratio), name="mlp")
        self.drop_path = DropPath(drop_path, name="drop_path")

    def build(self, input_shape):
        shape = (None, None, None, self.dim)
        self.norm1.build(shape)
        self.attn.build((None, None, self.dim))
        self.norm2.build(shape)
        self.mlp.build(shape)
        self.built = True

    def call(self, x, attn_mask=None, training=None):
        shape = tf.shape(x)
        h, w = shape[1], shape[2]
        m, s = self.window_size, self.shift_size
        y = pad_to_multiple(self.norm1(x), m)
        padded = tf.shape(y)
        if s:
            y = cyclic_shift(y, -s)
        y = self.attn(window_partition(y, m), attn_mask=attn_mask if s else None)
        y = window_reverse(y, m, padded[1], padded[2])
        if s:
            y = cyclic_shift(y, s)
        x = x + self.drop_path(y[:, :h, :w, :], training=training)
        return x + self.drop_path(self.mlp(self.norm2(x)), training=training)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "window_size": self.window_size, "shift_size": self.shift_size, "mlp_ratio": self.mlp_ratio,
                "qkv_bias": self.qkv_bias, "drop_path": self.drop_path_rate, "norm_epsilon": self.norm_epsilon}


@keras.saving.register_keras_serializable(package="kseg")
class SwinPatchMerging(keras.layers.Layer):
    """Patch merging (Swin Sec. 3.1): (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C).

    Odd maps are zero-padded by one row/column at the bottom/right; the four 2x2
    neighbours are concatenated in the official order (even row/even col, odd/even,
    even/odd, odd/odd), normalised (``norm``, 4C) and projected (``reduction``, no bias).
    """

    def __init__(self, dim, norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.norm_epsilon = dim, norm_epsilon
        self.norm = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="norm")
        self.reduction = keras.layers.Dense(2 * dim, use_bias=False, name="reduction")

    def build(self, input_shape):
        self.norm.build((None, None, None, 4 * self.dim))
        self.reduction.build((None, None, None, 4 * self.dim))
        self.built = True

    def call(self, x):
        x = pad_to_multiple(x, 2)
        x = tf.concat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        return self.reduction(self.norm(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "norm_epsilon": self.norm_epsilon}


@keras.saving.register_keras_serializable(package="kseg")
class SwinStage(keras.layers.Layer):
    """A stage (official ``BasicLayer``): blocks, then optional patch merging.

    Call: (B, H, W, dim) -> ``(stage output (B, H, W, dim), next input)`` where the next
    input is the merged (B, ceil(H/2), ceil(W/2), 2 dim) map, or the stage output itself
    when ``downsample`` is False. The shifted-window mask is computed once per call for
    the padded size and shared by the shifted blocks.
    """

    def __init__(self, dim, depth, num_heads, window_size=7, mlp_ratio=4.0, qkv_bias=True,
                 drop_path=0.0, downsample=True, norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        if len(rates) != depth:
            raise ValueError(f"got {len(rates)} drop-path rates for {depth} blocks")
        self.dim, self.depth, self.num_heads, self.window_size = dim, depth, num_heads, window_size
        self.mlp_ratio, self.qkv_bias, self.drop_path_rates = mlp_ratio, qkv_bias, [float(r) for r in rates]
        self.use_downsample, self.norm_epsilon = downsample, norm_epsilon
        self.shift_size = window_size // 2
        self.blocks = [
            SwinBlock(dim, num_heads, window_size, 0 if j % 2 == 0 else self.shift_size, mlp_ratio, qkv_bias,
                      rates[j], norm_epsilon, name=f"blocks_{j}")
            for j in range(depth)
        ]
        self.downsample = SwinPatchMerging(dim, norm_epsilon, name="downsample") if downsample else None

    def build(self, input_shape):
        for blk in self.blocks:
            blk.build((None, None, None, self.dim))
        if self.downsample is not None:
            self.downsample.build((None, None, None, self.dim))
        self.built = True

    def call(self, x, training=None):
        mask = None
        if self.shift_size and self.depth > 1:
            m = self.window_size
            shape = tf.shape(x)
            hp = (shape[1] + m - 1) // m * m
            wp = (shape[2] + m - 1) // m * m
            mask = shifted_window_mask(hp, wp, m, self.shift_size)
        for blk in self.blocks:
            x = blk(x, attn_mask=mask, training=training)
        return x, (self.downsample(x) if self.downsample is not None else x)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "depth": self.depth, "num_heads": self.num_heads,
                "window_size": self.window_size, "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias,
                "drop_path": self.drop_path_rates, "downsample": self.use_downsample,
                "norm_epsilon": self.norm_epsilon}


@keras.saving.register_keras_serializable(package="kseg")
class SwinPatchEmbed(keras.layers.Layer):
    """``proj`` (P x P conv, stride P) + ``norm`` after zero-padding H, W up to multiples of P.

    (B, H, W, C_in) -> (B, ceil(H/P), ceil(W/P), dim).
    """

    def __init__(self, dim, patch_size=4, norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.patch_size, self.norm_epsilon = dim, patch_size, norm_epsilon
        self.proj = keras.layers.Conv2D(dim, patch_size, strides=patch_size, name="proj")
        self.norm = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="norm")

    def build(self, input_shape):
        self.proj.build((None, None, None, input_shape[-1]))
        self.norm.build((None, None, None, self.dim))
        self.built = True

    def call(self, x):
        return self.norm(self.proj(pad_to_multiple(x, self.patch_size)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "patch_size": self.patch_size,
                "norm_epsilon": self.norm_epsilon}


@keras.saving.register_keras_serializable(package="kseg")
class SwinTransformer(keras.layers.Layer):
    """The Swin backbone as MaskFormer uses it (detectron2 ``D2SwinTransformer``).

    Input: (B, H, W, 3) float, already normalised (ImageNet mean/std; the model does it).
    Output: ``{"res2": (B, ceil(H/4), ceil(W/4), C), "res3": (.., 2C), "res4": (.., 4C),
    "res5": (B, ~H/32, ~W/32, 8C)}`` (each stage rounds up), after the per-stage LayerNorms
    ``norm0..norm3``, in the compute dtype. ``out_channels`` gives C per key.

    Args:
      embed_dim: C of stage 1 (96 T/S, 128 B, 192 L).
      depths, num_heads: per stage (see :data:`SWIN_VARIANTS`).
      window_size: M (7 for 224-pretrained weights, 12 for 384-pretrained).
      patch_size: 4. mlp_ratio: 4. qkv_bias: True.
      drop_path_rate: stochastic depth of the last block (MaskFormer uses 0.3).
      pretrain_img_size: resolution of the ImageNet weights; informational (no absolute
        position embedding), kept so configs say which checkpoint fits.
      norm_epsilon: LayerNorm epsilon (1e-5).
      out_features: subset of ``res2..res5`` to return (all by default).
    Raises: ValueError for mismatched per-stage lists, an embed_dim not divisible by the
      heads, or unknown ``out_features``.
    """

    def __init__(self, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                 patch_size=4, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.2, pretrain_img_size=224,
                 norm_epsilon=1e-5, out_features=FEATURE_KEYS, **kwargs):
        super().__init__(**kwargs)
        depths, num_heads = [int(d) for d in depths], [int(h) for h in num_heads]
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {depths} and num_heads {num_heads} must have one entry per stage")
        if len(depths) != 4:
            raise ValueError(f"the MaskFormer Swin backbone has 4 stages (res2..res5), got depths {depths}")
        bad = [k for k in out_features if k not in FEATURE_KEYS]
        if bad:
            raise ValueError(f"unknown out_features {bad}; choose from {FEATURE_KEYS}")
        self.embed_dim, self.depths, self.num_heads = int(embed_dim), depths, num_heads
        self.window_size, self.patch_size, self.mlp_ratio = int(window_size), int(patch_size), mlp_ratio
        self.qkv_bias, self.drop_path_rate, self.pretrain_img_size = qkv_bias, float(drop_path_rate), pretrain_img_size
        self.norm_epsilon, self.out_features = norm_epsilon, [k for k in FEATURE_KEYS if k in out_features]
        self.num_features = [self.embed_dim * 2 ** i for i in range(4)]
        self.out_channels = {k: self.num_features[i] for i, k in enumerate(FEATURE_KEYS) if k in self.out_features}
        self.out_strides = {k: self.patch_size * 2 ** i for i, k in enumerate(FEATURE_KEYS) if k in self.out_features}
        for dim, heads in zip(self.num_features, num_heads):
            if dim % heads:
                raise ValueError(f"stage width {dim} is not divisible by {heads} heads")

        total = sum(depths)
        rates = [self.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.patch_embed = SwinPatchEmbed(self.embed_dim, self.patch_size, norm_epsilon, name="patch_embed")
        self.layers = []
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            self.layers.append(SwinStage(
                self.num_features[i], depth, num_heads[i], self.window_size, mlp_ratio, qkv_bias,
                rates[first:first + depth], downsample=i < 3, norm_epsilon=norm_epsilon, name=f"layers_{i}"))
        # One LayerNorm per returned stage, named as D2SwinTransformer's ``norm{i}``.
        self.norm_indices = [i for i, k in enumerate(FEATURE_KEYS) if k in self.out_features]
        for i in self.norm_indices:
            setattr(self, f"norm{i}", keras.layers.LayerNormalization(epsilon=norm_epsilon, name=f"norm{i}"))

    def build(self, input_shape):
        self.patch_embed.build((None, None, None, input_shape[-1]))
        for i, stage in enumerate(self.layers):
            stage.build((None, None, None, self.num_features[i]))
        for i in self.norm_indices:
            getattr(self, f"norm{i}").build((None, None, None, self.num_features[i]))
        self.built = True

    def call(self, x, training=None):
        x = self.patch_embed(ops.cast(x, self.compute_dtype))
        out = {}
        for i, stage in enumerate(self.layers[: self.norm_indices[-1] + 1]):
            y, x = stage(x, training=training)
            if i in self.norm_indices:
                out[FEATURE_KEYS[i]] = getattr(self, f"norm{i}")(y)
        return out

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "depths": self.depths,
                "num_heads": self.num_heads, "window_size": self.window_size, "patch_size": self.patch_size,
                "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias, "drop_path_rate": self.drop_path_rate,
                "pretrain_img_size": self.pretrain_img_size, "norm_epsilon": self.norm_epsilon,
                "out_features": self.out_features}


# Architectures as data (Swin paper Sec. 3.3; MaskFormer's configs for window/pretraining:
# Swin-T/S use the 224 / window-7 ImageNet-1K weights, Swin-B/L the 384 / window-12 weights,
# ImageNet-22K for the dagger rows of MaskFormer Table 1). Only architecture keys; pass
# ``drop_path_rate`` (MaskFormer: 0.3) separately.
SWIN_VARIANTS = {
    "swin_t": {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "window_size": 7,
               "pretrain_img_size": 224},
    "swin_s": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24), "window_size": 7,
               "pretrain_img_size": 224},
    "swin_b": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32), "window_size": 12,
               "pretrain_img_size": 384},
    "swin_l": {"embed_dim": 192, "depths": (2, 2, 18, 2), "num_heads": (6, 12, 24, 48), "window_size": 12,
               "pretrain_img_size": 384},
}


def build_backbone(name, /, **overrides):
    """A :class:`SwinTransformer` for a :data:`SWIN_VARIANTS` name, with keyword overrides.

    Example: ``build_backbone("swin_t", drop_path_rate=0.3, name="backbone")``.
    Raises: KeyError naming the known variants.
    """
    if name not in SWIN_VARIANTS:
        raise KeyError(f"unknown Swin backbone {name!r}; known: {', '.join(SWIN_VARIANTS)}")
    return SwinTransformer(**{**SWIN_VARIANTS[name], **overrides})
