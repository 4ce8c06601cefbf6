"""The SegViT encoder: a plain ViT as mmseg's ``VisionTransformer`` runs it for SegViT, with
optional query-based down-sampling (QD) for the Shrunk structure (Zhang et al. 2022, Sec. 3.3).

Two differences from :class:`kseg.backbones.vit.ViT` (whose weights and names it keeps, so
timm / Google checkpoints load with :func:`kseg.convert.vit.load_vit`):

- ``with_cls_token=False`` (SegViT's config, ``configs/_base_/models/seg_vit-b16.py``): the
  class token gets its position embedding and is then dropped *before* the blocks (mmseg
  semantics). Its variable stays (checkpoints carry it) but is frozen, since nothing reads it.
- ``qd_block``: the 1-based block that does QD. Its queries (and its residual stream) are
  the token grid sampled with stride 2 (``x[:, ::2, ::2]``, "2x2 nearest", the ablation's best
  "Q/Nearest", Table 7); keys and values are the full-resolution tokens. Every later block
  runs on the ceil(h/2) x ceil(w/2) grid (stride 2P). QD adds no parameters: it reuses the
  block's fused ``qkv`` kernel (its q columns on the sampled tokens, its k/v columns on all).
  Authors' ``backbone/vit_shrink.py``: ``shrink_idx=8`` (0-based) for ViT-L, i.e.
  ``qd_block=9``; for ViT-B the Shrunk FLOPs of Table 8 (97.1 G; naive shrunk 74.1 G) are
  reproduced with ``qd_block=7`` (6 blocks at 1/16), see :mod:`kseg.models.segvit`.

Input: (B, H, W, 3) normalised images. Output: dict ``layer{i}`` -> (B, h_i, w_i, C) for
each ``out_layers`` entry (h_i = ceil(H/P) after bottom/right padding, or its ceil-half at and after ``qd_block``), plus
``final``/``prefix`` as :class:`ViT` when ``final_norm`` (SegViT: False).
"""

import keras
import tensorflow as tf
from keras import ops

from kseg.backbones.vit import ViT
from kseg.layers.attention import merge_heads, scaled_dot_product_attention, split_heads


def query_downsampled_block(block, x, num_prefix, h, w, training=None):
    """Runs a :class:`kseg.layers.vit_block.ViTBlock` with QD on the token grid.

    Args:
      block: the ViTBlock (its ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp``).
      x: (B, num_prefix + h*w, C) tokens, prefix tokens first. h, w: the grid (tensors).
    Returns: (tokens (B, num_prefix + h2*w2, C), h2, w2) with h2 = ceil(h/2), w2 = ceil(w/2).
    """
    c = block.dim
    b = tf.shape(x)[0]
    grid = tf.reshape(x[:, num_prefix:], (b, h, w, c))[:, ::2, ::2]
    h2, w2 = tf.shape(grid)[1], tf.shape(grid)[2]
    queries = tf.concat([x[:, :num_prefix], tf.reshape(grid, (b, -1, c))], axis=1)
    attn = block.attn
    kernel = ops.cast(attn.qkv.kernel, x.dtype)
    q = ops.matmul(block.norm1(queries), kernel[:, :c])
    kv = ops.matmul(block.norm1(x), kernel[:, c:])
    if attn.qkv_bias:
        bias = ops.cast(attn.qkv.bias, x.dtype)
        q, kv = q + bias[:c], kv + bias[c:]
    k, v = ops.split(kv, 2, axis=-1)
    heads = [split_heads(t, attn.num_heads) for t in (q, k, v)]
    out = attn.proj_drop(attn.proj(merge_heads(scaled_dot_product_attention(*heads))), training=training)
    y = queries + block.drop_path(out, training=training)
    y = y + block.drop_path(block.mlp(block.norm2(y), training=training), training=training)
    return y, h2, w2


@keras.saving.register_keras_serializable(package="kseg")
class SegViTEncoder(ViT):
    """ViT encoder of SegViT (see module docstring).

    Args: those of :class:`ViT` (``final_norm`` defaults to False as SegViT's config), plus
      with_cls_token: keep the class token in the blocks (False: mmseg's
        ``with_cls_token=False``, SegViT's setting).
      qd_block: 1-based index of the query-downsampling block, or None (plain ViT).
    Raises: ValueError for a ``qd_block`` outside 1..depth, or a distilled backbone.
    """

    def __init__(self, with_cls_token=False, qd_block=None, final_norm=False, **kwargs):
        super().__init__(final_norm=final_norm, with_cls_token=with_cls_token, **kwargs)
        if qd_block is not None and not 1 <= int(qd_block) <= self.depth:
            raise ValueError(f"qd_block {qd_block} outside 1..{self.depth} (1-based block index)")
        if self.distilled:
            raise ValueError("SegViTEncoder supports ViT backbones without a distillation token (vit_*)")
        self.qd_block = None if qd_block is None else int(qd_block)

    def call(self, x, training=None):
        x = self.patch_embed(x)
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        dtype = x.dtype
        prefix_pos, patch_pos = self.interpolated_pos_embed(h, w)
        x = tf.reshape(x, (b, -1, self.embed_dim)) + tf.cast(patch_pos, dtype)
        p = 0
        if self.with_cls_token:
            prefix = tf.cast(tf.cast(self.cls_token, tf.float32) + prefix_pos, dtype)
            x = tf.concat([tf.tile(prefix, [b, 1, 1]), x], axis=1)
            p = 1
        x = self.pos_drop(x, training=training)
        out = {}
        for i, blk in enumerate(self.blocks, start=1):
            if i == self.qd_block:
                x, h, w = query_downsampled_block(blk, x, p, h, w, training=training)
            else:
                x = blk(x, training=training)
            if i in self.out_layers:
                out[f"layer{i}"] = tf.reshape(x[:, p:], (b, h, w, self.embed_dim))
        if self.final_norm:
            x = self.norm(x)
            out["final"] = tf.reshape(x[:, p:], (b, h, w, self.embed_dim))
            if self.return_prefix and p:
                out["prefix"] = x[:, :p]
        return out

    def get_config(self):
        return {**super().get_config(), "qd_block": self.qd_block}
