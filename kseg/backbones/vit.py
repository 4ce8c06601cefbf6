"""Plain Vision Transformer (ViT, Dosovitskiy et al. 2021) and DeiT (Touvron et al. 2021).

The encoder of Segmenter (Strudel et al. 2021, Sec. 3.1) and SETR (Zheng et al. 2021,
Sec. 3.1): non-overlapping P x P patches -> linear projection (a stride-P convolution) ->
class token (+ DeiT distillation token) -> learned position embedding -> L pre-norm blocks
-> LayerNorm. Inputs whose sides are not multiples of P are padded bottom/right with zeros
(of the normalised image) to the next multiple, so the token grid is ``ceil(H/P) x
ceil(W/P)`` and no pixel is dropped: the authors' Segmenter (``segm/model/utils.py``
``padding``) and mmseg's ``PatchEmbed(padding="corner")`` (SETR, SegViT) do the same; the
models crop their output back with :func:`crop_to_input`. The stored position-embedding grid
(``img_size / patch_size`` per side) is resampled at run time to that token grid, any H and
W (``kseg.layers.pos_embed``; bicubic like HF/timm by default, bilinear as the Segmenter
authors on request).

Weights and names follow timm's ``VisionTransformer`` (``patch_embed.proj``,
``cls_token``, ``dist_token``, ``pos_embed``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,
norm2,mlp.fc1,mlp.fc2}``, ``norm``; ``.`` -> ``_``), LayerNorm epsilon 1e-6 as timm,
exact GELU, qkv bias, MLP ratio 4, stochastic depth linearly increasing from 0 to
``drop_path_rate`` over the blocks.
"""

import keras
import tensorflow as tf
from keras import ops

from kseg.backbones.normalization import NORMALIZATIONS
from kseg.layers.pos_embed import INTERPOLATIONS, resample_grid
from kseg.layers.vit_block import ViTBlock


def spatial_size(x):
    """(H, W) of a (B, H, W, C) tensor: Python ints when static, else scalar tensors."""
    h, w = x.shape[1], x.shape[2]
    if h is not None and w is not None:
        return int(h), int(w)
    shape = tf.shape(x)
    return shape[1], shape[2]


def pad_to_multiple(x, multiple):
    """Pads (B, H, W, C) bottom/right with zeros to (B, ceil(H/m)*m, ceil(W/m)*m, C).

    A no-op (no op in the graph) when H and W are static multiples of ``multiple``.
    """
    h, w = spatial_size(x)
    if isinstance(h, int) and h % multiple == 0 and w % multiple == 0:
        return x
    return tf.pad(x, [[0, 0], [0, (-h) % multiple], [0, (-w) % multiple], [0, 0]])


def crop_to_input(logits, size, multiple):
    """The model's output for an input of ``size`` = (H, W) that was padded to multiples of
    ``multiple`` (:func:`pad_to_multiple`).

    Divisible inputs: ``logits`` unchanged (B, h, w, K) at the native stride s, which resize
    exactly onto the input. Other inputs: ``logits`` resized bilinearly (align_corners=False)
    to the padded size and cropped to (B, H, W, K), as the authors' Segmenter does
    (``segm/model/segmenter.py``: ``F.interpolate`` to the padded size, then ``unpadding``);
    losses and inference then see full-resolution logits whose further resize is the
    identity. Static sizes choose in Python; dynamic ones with ``tf.cond``.
    """
    h, w = size

    def padded_and_cropped():
        hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        up = tf.image.resize(logits, tf.stack([hp, wp]), method="bilinear")
        return tf.cast(up[:, :h, :w], logits.dtype)

    if isinstance(h, int) and isinstance(w, int):
        return logits if h % multiple == 0 and w % multiple == 0 else padded_and_cropped()
    divisible = tf.logical_and(tf.equal(h % multiple, 0), tf.equal(w % multiple, 0))
    return tf.cond(divisible, lambda: logits, padded_and_cropped)


@keras.saving.register_keras_serializable(package="kseg")
class ViTPatchEmbed(keras.layers.Layer):
    """``proj``: a P x P convolution with stride P on the input padded bottom/right to
    multiples of P (:func:`pad_to_multiple`); the grid is ceil(H/P) x ceil(W/P).

    Input (B, H, W, C_in) -> (B, ceil(H/P), ceil(W/P), dim).
    """

    def __init__(self, dim, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.patch_size = dim, patch_size
        self.proj = keras.layers.Conv2D(dim, patch_size, strides=patch_size, name="proj")

    def build(self, input_shape):
        self.proj.build(input_shape)
        self.built = True

    def call(self, x):
        return self.proj(pad_to_multiple(x, self.patch_size))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "patch_size": self.patch_size}


@keras.saving.register_keras_serializable(package="kseg")
class ViT(keras.layers.Layer):
    """The ViT / DeiT encoder.

    Input: (B, H, W, 3) float, already normalised (the model normalises raw pixels).
    Output: dict of patch-token maps (prefix tokens removed), each (B, ceil(H/P),
    ceil(W/P), embed_dim) in the compute dtype (bottom/right zero padding, see the module):
      ``"layer{i}"`` for every i in ``out_layers`` (1-based; the raw output of block i,
      before any norm, as SETR's taps Z^i), and ``"final"`` (the last block's output after
      the final LayerNorm ``norm``, what Segmenter decodes). With ``return_prefix=True``
      the dict also holds ``"prefix"``: (B, num_prefix_tokens, embed_dim) after ``norm``.

    Args:
      embed_dim, depth, num_heads, patch_size: the architecture (see :data:`VIT_VARIANTS`).
      img_size: pretraining image size; the stored position grid is img_size // patch_size.
      distilled: adds DeiT's distillation token (2 prefix tokens instead of 1).
      mlp_ratio, qkv_bias: 4, True (timm). norm_epsilon: LayerNorm epsilon of the blocks and the
        final norm: 1e-6 (timm, mmseg); the Segmenter authors' blocks use PyTorch's 1e-5.
      drop_path_rate: stochastic depth of the last block; dropout: timm ``drop_rate``.
      with_cls_token: run the prefix tokens through the blocks (timm). False: they get their
        position embedding and are dropped before the blocks (mmseg ``with_cls_token=False``,
        SETR-MLA's and SegViT's setting); their variables stay (checkpoints carry them),
        frozen since nothing reads them.
      out_layers: 1-based block indices whose outputs are returned.
      pos_embed_interpolation: ``"bicubic"`` (HF/timm, PyTorch kernel) or ``"bilinear"``.
      final_norm: False drops the final LayerNorm and the ``"final"``/``"prefix"`` outputs
        (SETR decodes raw block outputs with per-head norms; an unused norm would get no
        gradient).
    """

    def __init__(self, embed_dim=768, depth=12, num_heads=12, patch_size=16, img_size=224,
                 distilled=False, mlp_ratio=4.0, qkv_bias=True, norm_epsilon=1e-6, drop_path_rate=0.0,
                 dropout=0.0, out_layers=(), pos_embed_interpolation="bicubic", return_prefix=False,
                 final_norm=True, with_cls_token=True, **kwargs):
        super().__init__(**kwargs)
        self.with_cls_token = with_cls_token
        if pos_embed_interpolation not in INTERPOLATIONS:
            raise ValueError(f"pos_embed_interpolation must be one of {INTERPOLATIONS}, got {pos_embed_interpolation!r}")
        bad = [i for i in out_layers if not 1 <= int(i) <= depth]
        if bad:
            raise ValueError(f"out_layers {bad} outside 1..{depth} (1-based block indices)")
        self.embed_dim, self.depth, self.num_heads, self.patch_size = embed_dim, depth, num_heads, patch_size
        self.img_size, self.distilled, self.mlp_ratio, self.qkv_bias = img_size, distilled, mlp_ratio, qkv_bias
        self.norm_epsilon, self.drop_path_rate, self.dropout_rate = norm_epsilon, drop_path_rate, dropout
        self.out_layers = sorted(int(i) for i in out_layers)
        self.pos_embed_interpolation, self.return_prefix = pos_embed_interpolation, return_prefix
        self.final_norm = final_norm
        self.grid_size = img_size // patch_size
        self.num_prefix_tokens = 2 if distilled else 1
        self.patch_embed = ViTPatchEmbed(embed_dim, patch_size, name="patch_embed")
        self.pos_drop = keras.layers.Dropout(dropout)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = [
            ViTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, rates[i], dropout, norm_epsilon, name=f"blocks_{i}")
            for i in range(depth)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="norm") if final_norm else None

    def build(self, input_shape):
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.patch_embed.build((None, None, None, input_shape[-1]))
        self.cls_token = self.add_weight((1, 1, self.embed_dim), init, name="cls_token")
        if self.distilled:
            self.dist_token = self.add_weight((1, 1, self.embed_dim), init, name="dist_token")
        n = self.num_prefix_tokens + self.grid_size ** 2
        self.pos_embed = self.add_weight((1, n, self.embed_dim), init, name="pos_embed")
        for blk in self.blocks:
            blk.build((None, None, self.embed_dim))
        if self.final_norm:
            self.norm.build((None, None, self.embed_dim))
        if not self.with_cls_token:  # dropped before the blocks: no gradient would reach them
            self.cls_token.trainable = False
            if self.distilled:
                self.dist_token.trainable = False
        self.built = True

    def interpolated_pos_embed(self, h, w):
        """(prefix (1, p, C), patch grid (1, h*w, C)) float32 for a dynamic h x w token grid."""
        pos = ops.convert_to_tensor(self.pos_embed)
        pos = tf.cast(pos, tf.float32)
        prefix, patches = pos[:, : self.num_prefix_tokens], pos[0, self.num_prefix_tokens:]
        g = self.grid_size
        grid = resample_grid(tf.reshape(patches, (g, g, self.embed_dim)), h, w, self.pos_embed_interpolation)
        return prefix, tf.reshape(grid, (1, -1, self.embed_dim))

    def call(self, x, training=None):
        x = self.patch_embed(x)
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        dtype = x.dtype
        prefix_pos, patch_pos = self.interpolated_pos_embed(h, w)
        tokens = tf.reshape(x, (b, -1, self.embed_dim)) + tf.cast(patch_pos, dtype)
        if self.with_cls_token:
            prefix = [self.cls_token] + ([self.dist_token] if self.distilled else [])
            prefix = tf.cast(tf.concat([tf.cast(t, tf.float32) for t in prefix], axis=1) + prefix_pos, dtype)
            x = tf.concat([tf.tile(prefix, [b, 1, 1]), tokens], axis=1)
        else:
            x = tokens
        x = self.pos_drop(x, training=training)
        p = self.num_prefix_tokens if self.with_cls_token else 0
        out = {}
        for i, blk in enumerate(self.blocks, start=1):
            x, (h, w) = self.run_block(i, blk, x, p, (h, w), training=training)
            if i in self.out_layers:
                out[f"layer{i}"] = tf.reshape(x[:, p:], (b, h, w, self.embed_dim))
        if not self.final_norm:
            return out
        x = self.norm(x)
        out["final"] = tf.reshape(x[:, p:], (b, h, w, self.embed_dim))
        if self.return_prefix:
            out["prefix"] = x[:, :p]
        return out

    def run_block(self, index, block, x, num_prefix, grid, training=None):
        """Runs block ``index`` (1-based) on the tokens x (B, num_prefix + h*w, C), prefix
        tokens first, laid out on ``grid`` = (h, w) (tensors); returns ``(tokens, grid)``.
        The hook where an encoder changes the token grid (SegViT's query down-sampling)."""
        return block(x, training=training), grid

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads,
            "patch_size": self.patch_size, "img_size": self.img_size, "distilled": self.distilled,
            "mlp_ratio": self.mlp_ratio, "qkv_bias": self.qkv_bias, "norm_epsilon": self.norm_epsilon,
            "drop_path_rate": self.drop_path_rate, "dropout": self.dropout_rate, "out_layers": self.out_layers,
            "pos_embed_interpolation": self.pos_embed_interpolation, "return_prefix": self.return_prefix,
            "with_cls_token": self.with_cls_token,
            "final_norm": self.final_norm,
        }


# Architectures (ViT paper Table 1; DeiT paper Table 1; "Tiny" = DeiT-Ti / augreg Ti dims).
VIT_DIMS = {
    "t": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "s": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "b": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "l": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
}


def _variant(size, patch, img_size, distilled=False, normalization="inception"):
    return {**VIT_DIMS[size], "patch_size": patch, "img_size": img_size, "distilled": distilled,
            "normalization": normalization}


# Backbone variants as data. ``img_size`` is the resolution of the usual checkpoint (the
# Segmenter/SETR backbones were fine-tuned at 384, Segmenter Sec. 4.1; ViT-B/8 exists at
# 224 only). ``normalization``: "inception" = mean 127.5, std 127.5 (Google ViT/augreg
# checkpoints); "imagenet" = ImageNet mean/std (DeiT). Pixel statistics are used by the
# model's ``normalize``; only architecture keys reach :class:`ViT`.
VIT_VARIANTS = {
    **{f"vit_{s}{p}": _variant(s, p, 224 if p == 8 else 384) for s in "tsbl" for p in (8, 16, 32)},
    "deit_t16": _variant("t", 16, 224, distilled=True, normalization="imagenet"),
    "deit_s16": _variant("s", 16, 224, distilled=True, normalization="imagenet"),
    "deit_b16": _variant("b", 16, 384, distilled=True, normalization="imagenet"),
}


def vit_arch(name, depth=None, img_size=None):
    """(ViT constructor kwargs, (mean, std)) of a :data:`VIT_VARIANTS` entry.

    ``depth`` replaces the variant's number of blocks (tiny test or ablation configs that
    keep the variant's width, heads and patch size); ``img_size`` the size its position
    grid is stored for (e.g. 512 for a checkpoint fine-tuned at 512: 32x32 instead of the
    ImageNet 24x24, so loading it loses nothing); None keeps the variant's.
    Raises: KeyError naming the known backbones; ValueError for depth < 1.
    """
    if name not in VIT_VARIANTS:
        raise KeyError(f"unknown ViT backbone {name!r}; known: {', '.join(sorted(VIT_VARIANTS))}")
    arch = dict(VIT_VARIANTS[name])
    if depth is not None:
        if int(depth) < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        arch["depth"] = int(depth)
    if img_size is not None:
        arch["img_size"] = int(img_size)
    return arch, NORMALIZATIONS[arch.pop("normalization")]
