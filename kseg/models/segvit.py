"""SegViT = plain ViT + Attention-to-Mask (ATM) decoder (Zhang et al. 2022, "SegViT: Semantic
Segmentation with Plain Vision Transformers"), and its Shrunk structure (QD + QU).

Mask classification: K class tokens (fixed token-to-class assignment), class logits over
K+1 (no object) and sigmoid masks at stride 16; semantic inference ``argmax_c sum_i p_i(c)
m_i`` is :func:`kseg.inference.semantic.semantic_inference`, shared with MaskFormer.

Choices the paper leaves open (segvit.md §7), from the authors' code (github.com/zbwxp/SegVit)
unless noted. An analytic MAC count of this architecture (fvcore-style, the authors' semantic
inference at full crop resolution included, K classes as each table) reproduces every GFLOPs
figure of the paper within 1.0 G: ViT-B 120.4 vs 120.9, Shrunk ViT-B 96.6 vs 97.1, naive
shrunk 73.7 vs 74.1 (Tables 1, 8); ViT-L 636.9 vs 637.9, Shrunk 372.7 vs 373.5 (Table 1);
COCO-Stuff 383.2 / 224.3 vs 383.9 / 224.8 (Table 2); Pascal Context 321.3 / 186.6 vs
321.6 / 186.9 (Table 3). kseg itself runs semantic inference at stride 16, which saves
K^2 * H * W MACs (5.9 G for ViT-B at 512):

- taps: ViT-B layers [6, 8, 12] (Table 5; config ``out_indices=[5, 7, 11]``), ViT-L
  [8, 16, 24] (``out_indices=[7, 15, 23]``); ATM #1 reads the last layer (cascade order 12,
  8, 6 / 24, 16, 8). Other depths must pass ``out_layers``.
- decoder width = ViT width // 2 (384 / 512), heads = ViT heads (12 / 16), 3 layers per ATM,
  dropout 0.1 (see :mod:`kseg.heads.segvit_atm_head` for the layer layout).
- backbone: mmseg ``VisionTransformer`` with ``with_cls_token=False``, ``final_norm=False``,
  LayerNorm eps 1e-6, bicubic position-embedding resize; drop path 0.1 (B) / 0.3 (L); the
  stored position grid is the training crop's (512 -> 32x32 for B, 640 -> 40x40 for L).
- normalisation: 127.5 / 127.5 (AugReg "jax" weights, the L configs' ``img_norm_cfg``).
- Shrunk: QD in block 9 of 24 for ViT-L (``shrink_idx=8``), QU taps [8, 24]
  (``out_indices=[7, 23]``). The code has no ViT-B Shrunk config; QD in block 7 of 12 with QU
  taps [6, 12] is what reproduces Table 8's 97.1 / 74.1 GFLOPs (block 5, the "1/3 depth"
  analogue, would give 82.7 / 59.8), so ViT-B (and ViT-T) use that.
- loss: :class:`kseg.losses.atm_loss.ATMLoss` (CE 1 with no-object 0.1, focal 20, dice 1,
  every group).
"""

import keras

from kseg.backbones.vit import crop_to_input, spatial_size, vit_arch
from kseg.backbones.vit_shrunk import SegViTEncoder
from kseg.heads.segvit_atm_head import ATMHead, ShrunkATMHead
from kseg.models.mask_classification import MaskClassificationSegmentor
from kseg.models.registry import register_variant

# depth -> (cascade taps, QD block, QU taps), 1-based.
DEFAULT_TAPS = {
    12: ((6, 8, 12), 7, (6, 12)),
    24: ((8, 16, 24), 9, (8, 24)),
}


@keras.saving.register_keras_serializable(package="kseg")
class SegViT(MaskClassificationSegmentor):
    """SegViT semantic segmentation model.

    Input: (B, H, W, 3) raw RGB pixels in [0, 255] (float32 or uint8), any H, W (padded
    bottom/right to multiples of 16 by the ViT, mmseg's ``PatchEmbed(padding="corner")``; the
    grid is ceil(H/16) x ceil(W/16)).
    Output (dict, float32): ``class_logits`` (B, K, K+1), ``mask_logits`` (B, h, w, K) with
    h = H/16, w = W/16 for multiples of 16; for other sizes the masks are resized to the padded
    size and cropped to (B, H, W, K) (the authors' head only sees square whole crops, which it
    resizes to the crop; Segmenter's authors crop like this), and when training ``aux_outputs`` (2 earlier groups of
    the cascade, or the first 2 decoder layers of the Shrunk model's ATM).
    ``semantic_logits(outputs)`` -> (B, h, w, K) scores.

    Args:
      num_classes: K. backbone: ``vit_b16`` / ``vit_l16`` / ``vit_t16`` (a ``VIT_VARIANTS`` key
        without distillation token).
      shrunk: the Shrunk structure (QD in the encoder, QU + single ATM).
      img_size: training crop; sets the stored position grid and the QU token grid
        (img_size // 16). Default: 512 (B, T), 640 (L).
      depth: replaces the backbone's number of blocks (tiny test / ablation configs; then
        pass the taps explicitly). None: the backbone's.
      out_layers: cascade taps (1-based, any order; decoded deepest first). qd_block: QD
        block; qu_layers: (low 1/16 tap, last layer). Defaults: :data:`DEFAULT_TAPS`.
      decoder_dim: ATM width (ViT width // 2). decoder_heads: (ViT heads). decoder_layers: 3.
      decoder_dropout: 0.1. drop_path_rate: 0.1 (B) / 0.3 (L, variant table). dropout: ViT
        ``drop_rate`` (0).
      cls_weight, focal_weight, dice_weight, no_object_weight: the default loss's weights
        (1, 20, 1, 0.1).
      pos_embed_interpolation: "bicubic" (mmseg) or "bilinear"; also used for QU tokens.
      norm_epsilon: encoder LayerNorm epsilon (1e-6, the configs' ``backbone_norm_cfg``).
      mean, std: normalisation overrides (:class:`Segmentor`; the ViT-L configs use the
        "jax" 127.5/127.5, the repository's 512 dataset config the ImageNet statistics).
    Raises: ValueError for bad taps / blocks or an unsupported depth without explicit taps.
    """

    head_path_pattern = r"segvit/decode_head/.*"

    def __init__(self, num_classes, backbone="vit_b16", shrunk=False, img_size=None, depth=None, out_layers=None,
                 qd_block=None, qu_layers=None, decoder_dim=None, decoder_heads=None, decoder_layers=3,
                 decoder_dropout=0.1, drop_path_rate=0.1, dropout=0.0, cls_weight=1.0, focal_weight=20.0,
                 dice_weight=1.0, no_object_weight=0.1, pos_embed_interpolation="bicubic", norm_epsilon=1e-6,
                 variant=None, name="segvit", **kwargs):
        super().__init__(name=name, **kwargs)
        arch, (self.mean, self.std) = vit_arch(backbone, depth)
        self.depth = None if depth is None else int(depth)
        depth, dim, heads = arch["depth"], arch["embed_dim"], arch["num_heads"]
        if img_size is None:
            img_size = 640 if depth == 24 else 512
        arch["img_size"] = int(img_size)
        defaults = DEFAULT_TAPS.get(depth)
        needed = (out_layers,) if not shrunk else (qd_block, qu_layers)
        if defaults is None and any(v is None for v in needed):
            raise ValueError(
                f"backbone {backbone!r} has depth {depth}; SegViT defaults exist for depth 12 and 24 only. "
                "Pass out_layers (cascade) or qd_block and qu_layers (shrunk) explicitly"
            )
        self.num_classes, self.backbone_name, self.shrunk, self.img_size = num_classes, backbone, shrunk, int(img_size)
        if out_layers is None:  # unused by the Shrunk model
            out_layers = defaults[0] if defaults else ()
        self.out_layers = tuple(int(i) for i in out_layers)
        self.qd_block = int(qd_block if qd_block is not None else defaults[1]) if shrunk else None
        self.qu_layers = None
        if shrunk:
            self.qu_layers = tuple(int(i) for i in (qu_layers if qu_layers is not None else defaults[2]))
        self.decoder_dim = int(decoder_dim or dim // 2)
        self.decoder_heads = int(decoder_heads or heads)
        self.decoder_layers, self.decoder_dropout = decoder_layers, decoder_dropout
        self.drop_path_rate, self.dropout, self.variant = drop_path_rate, dropout, variant
        self.cls_weight, self.focal_weight, self.dice_weight = cls_weight, focal_weight, dice_weight
        self.no_object_weight, self.pos_embed_interpolation = no_object_weight, pos_embed_interpolation
        if shrunk:
            low, last = self.qu_layers if len(self.qu_layers) == 2 else (None, None)
            if low is None or not (1 <= low < self.qd_block <= last <= depth):
                raise ValueError(
                    f"shrunk SegViT needs qu_layers = (low, last) with low < qd_block <= last <= {depth} "
                    f"(low is a 1/16 tap before QD, last a 1/32 tap); got qu_layers {self.qu_layers}, "
                    f"qd_block {self.qd_block}"
                )
            taps = self.qu_layers
        else:
            if len(set(self.out_layers)) != len(self.out_layers):
                raise ValueError(f"out_layers {self.out_layers} has duplicates")
            taps = self.out_layers
        self.encoder = SegViTEncoder(**arch, drop_path_rate=drop_path_rate, dropout=dropout, out_layers=taps,
                                     norm_epsilon=norm_epsilon,
                                     qd_block=self.qd_block, pos_embed_interpolation=pos_embed_interpolation,
                                     name="encoder")
        if shrunk:
            self.decode_head = ShrunkATMHead(num_classes, dim, self.decoder_dim, self.decoder_heads,
                                             self.img_size // arch["patch_size"], decoder_layers, decoder_dropout,
                                             pos_embed_interpolation, name="decode_head")
        else:
            self.decode_head = ATMHead(num_classes, dim, self.decoder_dim, self.decoder_heads, decoder_layers,
                                       num_stages=len(self.out_layers), dropout=decoder_dropout, name="decode_head")

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.decode_head.build(None)
        self.built = True

    def forward(self, x, training=None):
        feats = self.encoder(x, training=training)
        if self.shrunk:
            inputs = [feats[f"layer{i}"] for i in self.qu_layers]
        else:
            inputs = [feats[f"layer{i}"] for i in sorted(self.out_layers, reverse=True)]
        outputs = dict(self.decode_head(inputs, training=training))
        size, patch = spatial_size(x), self.encoder.patch_size
        outputs["mask_logits"] = crop_to_input(outputs["mask_logits"], size, patch)
        if training and "aux_outputs" in outputs:  # popped by ``call`` otherwise
            outputs["aux_outputs"] = [{**aux, "mask_logits": crop_to_input(aux["mask_logits"], size, patch)}
                                      for aux in outputs["aux_outputs"]]
        return outputs

    def default_loss(self, class_weight=None):
        """:class:`kseg.losses.atm_loss.ATMLoss` with this model's weights (ignore index 255)."""
        from kseg.losses.atm_loss import ATMLoss

        if class_weight is not None:
            raise ValueError("SegViT's ATM loss takes no per-class weights (model.class_weight must be unset)")
        return ATMLoss(self.num_classes, cls_weight=self.cls_weight, focal_weight=self.focal_weight,
                       dice_weight=self.dice_weight, no_object_weight=self.no_object_weight)

    def get_config(self):
        return {
            "num_classes": self.num_classes, "backbone": self.backbone_name, "shrunk": self.shrunk,
            "img_size": self.img_size, "depth": self.depth, "out_layers": list(self.out_layers),
            "qd_block": self.qd_block,
            "qu_layers": list(self.qu_layers) if self.qu_layers else None, "decoder_dim": self.decoder_dim,
            "decoder_heads": self.decoder_heads, "decoder_layers": self.decoder_layers,
            "decoder_dropout": self.decoder_dropout, "drop_path_rate": self.drop_path_rate,
            "dropout": self.dropout, "cls_weight": self.cls_weight, "focal_weight": self.focal_weight,
            "dice_weight": self.dice_weight, "no_object_weight": self.no_object_weight,
            "pos_embed_interpolation": self.pos_embed_interpolation, "norm_epsilon": self.encoder.norm_epsilon,
            **self.normalization_config(), "variant": self.variant, "name": self.name,
        }


# Variants: the paper's models (Table 1: ViT-B 512, ViT-L 640, ViT-L Shrunk; Table 8: ViT-B
# Shrunk) and a ViT-Tiny model for CPU recipes (not in the paper).
register_variant("segvit_vit_b16", SegViT, backbone="vit_b16", img_size=512, drop_path_rate=0.1)
register_variant("segvit_vit_b16_shrunk", SegViT, backbone="vit_b16", shrunk=True, img_size=512, drop_path_rate=0.1)
register_variant("segvit_vit_l16", SegViT, backbone="vit_l16", img_size=640, drop_path_rate=0.3)
register_variant("segvit_vit_l16_shrunk", SegViT, backbone="vit_l16", shrunk=True, img_size=640, drop_path_rate=0.3)
register_variant("segvit_vit_t16", SegViT, backbone="vit_t16", img_size=512, drop_path_rate=0.1)
