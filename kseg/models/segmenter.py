"""Segmenter = ViT/DeiT encoder + linear or mask-transformer decoder (Strudel et al. 2021)."""

import keras

from kseg.backbones.vit import ViT, crop_to_input, spatial_size, vit_arch
from kseg.heads.segmenter_head import MaskTransformerHead, SegmenterLinearHead
from kseg.models.registry import register_variant
from kseg.models.segmentor import Segmentor


@keras.saving.register_keras_serializable(package="kseg")
class Segmenter(Segmentor):
    """Segmenter semantic segmentation model.

    Input: (B, H, W, 3) raw RGB pixels in [0, 255] (float32 or uint8), any H, W.
    Output: float32 logits (B, H/P, W/P, K) at the patch stride P (twice that resolution with
    ``upsample_tokens``) when H and W are multiples of P; losses/inference resize them
    bilinearly. Other sizes follow the authors' forward (``segm/model/segmenter.py``): the
    input is padded bottom/right to multiples of P, decoded, resized to the padded size and
    cropped, so the output is (B, H, W, K).
    Normalisation: 127.5/127.5 for ViT (Google checkpoints), ImageNet mean/std for DeiT.
    The class/distillation tokens go through the encoder (as in pretraining) and are
    dropped before decoding (authors' code; spec ambiguity 1).

    Args:
      num_classes: K. backbone: a ``kseg.backbones.vit.VIT_VARIANTS`` key.
      decoder: ``"linear"`` or ``"mask"``. decoder_dim / decoder_layers: d and M of the
        mask transformer (default d = encoder width, M = 2, Sec. 4.2 / Table 11).
      upsample_tokens: the v1 x2 token upsampling before the mask decoder (default off).
      drop_path_rate: 0.1 (stochastic depth on, Table 2; rate from the authors' config).
      dropout: 0.0 (dropout off, Table 2).
      pos_embed_interpolation: "bicubic" (timm/HF kernel) or "bilinear" (the paper's text).
      depth: encoder blocks replacing the variant's (tiny test configs); None keeps it.
      img_size: the size the position grid is stored for (default: the ViT variant's 384;
        the authors' checkpoints store their training crop's grid, e.g. 512 -> 32x32).
      norm_epsilon: encoder LayerNorm epsilon: 1e-6 (timm, mmseg); the authors' encoder uses
        PyTorch's 1e-5, which their presets set.
      mean, std: normalisation overrides (:class:`Segmentor`).
    """

    head_path_pattern = "segmenter/decode_head/.*"

    def __init__(self, num_classes, backbone="vit_b16", decoder="linear", decoder_dim=None, decoder_layers=2,
                 upsample_tokens=False, drop_path_rate=0.1, dropout=0.0, pos_embed_interpolation="bicubic",
                 depth=None, img_size=None, norm_epsilon=1e-6, variant=None, name="segmenter", **kwargs):
        super().__init__(name=name, **kwargs)
        if decoder not in ("linear", "mask"):
            raise ValueError(f"decoder must be 'linear' or 'mask', got {decoder!r}")
        arch, (self.mean, self.std) = vit_arch(backbone, depth, img_size)
        self.num_classes, self.backbone_name, self.decoder = num_classes, backbone, decoder
        self.decoder_dim = decoder_dim or arch["embed_dim"]
        self.decoder_layers, self.upsample_tokens = decoder_layers, upsample_tokens
        self.drop_path_rate, self.dropout, self.variant = drop_path_rate, dropout, variant
        self.pos_embed_interpolation = pos_embed_interpolation
        self.encoder = ViT(**arch, drop_path_rate=drop_path_rate, dropout=dropout, norm_epsilon=norm_epsilon,
                           pos_embed_interpolation=pos_embed_interpolation, name="encoder")
        d_enc = arch["embed_dim"]
        if decoder == "linear":
            self.decode_head = SegmenterLinearHead(num_classes, d_enc, name="decode_head")
        else:
            self.decode_head = MaskTransformerHead(
                num_classes, d_enc, self.decoder_dim, decoder_layers, dropout=dropout,
                upsample_tokens=upsample_tokens, name="decode_head",
            )

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.decode_head.build(None)
        self.built = True

    def forward(self, x, training=None):
        logits = self.decode_head(self.encoder(x, training=training)["final"], training=training)
        return crop_to_input(logits, spatial_size(x), self.encoder.patch_size)

    def get_config(self):
        return {
            "num_classes": self.num_classes, "backbone": self.backbone_name, "decoder": self.decoder,
            "decoder_dim": self.decoder_dim, "decoder_layers": self.decoder_layers,
            "upsample_tokens": self.upsample_tokens, "drop_path_rate": self.drop_path_rate,
            "dropout": self.dropout, "pos_embed_interpolation": self.pos_embed_interpolation,
            "depth": self.encoder.depth, "img_size": self.encoder.img_size,
            "norm_epsilon": self.encoder.norm_epsilon, **self.normalization_config(),
            "variant": self.variant, "name": self.name,
        }


# Variant table: the models the paper reports (Tables 3, 4, 6: Seg-S†/16, B†/16, B/32, B/16,
# B/8, L/32, L/16 linear; B-Mask/32, B†-Mask/16, L-Mask/16), plus Seg-B-Mask/16 (the
# "Segmenter ViT-Base" of SegViT Table 1 and the project's example id) and a ViT-Tiny
# mask model for CPU recipes (not in the paper).
SEGMENTER_VARIANTS = {
    "linear": ("deit_s16", "deit_b16", "vit_b8", "vit_b16", "vit_b32", "vit_l16", "vit_l32"),
    "mask": ("deit_b16", "vit_b16", "vit_b32", "vit_l16", "vit_t16"),
}
for _decoder, _backbones in SEGMENTER_VARIANTS.items():
    for _bb in _backbones:
        register_variant(f"segmenter_{_bb}_{_decoder}", Segmenter, backbone=_bb, decoder=_decoder)
