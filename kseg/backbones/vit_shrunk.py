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
  block's fused ``qkv`` kernel (its q columns on the sampled tokens, its k/v columns on all;
  ``ViTBlock(x, queries=...)``).
  Authors' ``backbone/vit_shrink.py``: ``shrink_idx=8`` (0-based) for ViT-L, i.e.
  ``qd_block=9``; for ViT-B the Shrunk FLOPs of Table 8 (97.1 G; naive shrunk 74.1 G) are
  reproduced with ``qd_block=7`` (6 blocks at 1/16), see :mod:`kseg.models.segvit`.

Input: (B, H, W, 3) normalised images. Output: dict ``layer{i}`` -> (B, h_i, w_i, C) for
each ``out_layers`` entry (h_i = ceil(H/P) after bottom/right padding, or its ceil-half at and after ``qd_block``), plus
``final``/``prefix`` as :class:`ViT` when ``final_norm`` (SegViT: False).
"""

import keras
import tensorflow as tf

from kseg.backbones.vit import ViT


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

    def run_block(self, index, block, x, num_prefix, grid, training=None):
        """Block ``qd_block`` runs with QD: its queries are the prefix tokens and the token
        grid sampled with stride 2; the grid becomes (ceil(h/2), ceil(w/2))."""
        if index != self.qd_block:
            return super().run_block(index, block, x, num_prefix, grid, training=training)
        h, w = grid
        b = tf.shape(x)[0]
        sampled = tf.reshape(x[:, num_prefix:], (b, h, w, self.embed_dim))[:, ::2, ::2]
        queries = tf.concat([x[:, :num_prefix], tf.reshape(sampled, (b, -1, self.embed_dim))], axis=1)
        return block(x, queries=queries, training=training), (tf.shape(sampled)[1], tf.shape(sampled)[2])

    def get_config(self):
        return {**super().get_config(), "qd_block": self.qd_block}
