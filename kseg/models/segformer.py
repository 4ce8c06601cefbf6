"""SegFormer = MiT encoder + All-MLP decoder (Xie et al. 2021), variants B0..B5."""

import keras

from kseg.backbones.mit import MIT_VARIANTS, MiT
from kseg.heads.segformer_head import SegFormerHead
from kseg.models.registry import register_variant
from kseg.models.segmentor import Segmentor


@keras.saving.register_keras_serializable(package="kseg")
class SegFormer(Segmentor):
    """SegFormer semantic segmentation model.

    Input: (B, H, W, 3) raw RGB pixels in [0, 255] (float32 or uint8), any H, W.
    Output: float32 logits (B, ceil(H/4), ceil(W/4), num_classes) (stride 4, Sec. 3.2).
    Normalisation: ImageNet mean/std (the MiT ImageNet-1K weights).

    Args:
      num_classes: K. backbone: a ``MIT_VARIANTS`` key. decoder_dim: C of the All-MLP
      decoder (256 for B0/B1, 768 for B2-B5, paper Sec. 4.1). drop_path_rate: 0.1 as in
      the authors' configs. dropout: 0.1 before the classifier (authors' code).
      depths: blocks per stage replacing the variant's (e.g. ``(1, 1, 1, 1)`` for tiny test
        configs that keep every width of the variant); None keeps Table 6's.
    """

    head_path_pattern = "segformer/decode_head/.*"

    def __init__(self, num_classes, backbone="mit_b0", decoder_dim=256, drop_path_rate=0.1,
                 dropout=0.1, depths=None, variant=None, name="segformer", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.backbone_name, self.decoder_dim = num_classes, backbone, decoder_dim
        self.drop_path_rate, self.dropout, self.variant = drop_path_rate, dropout, variant
        arch = dict(MIT_VARIANTS[backbone])
        if depths is not None:
            if len(depths) != 4:
                raise ValueError(f"depths must give 4 stages, got {depths!r}")
            arch["depths"] = tuple(int(d) for d in depths)
        self.depths = arch["depths"]
        self.encoder = MiT(**arch, drop_path_rate=drop_path_rate, name="encoder")
        self.decode_head = SegFormerHead(
            num_classes, decoder_dim, dropout, in_channels=arch["hidden_sizes"], name="decode_head"
        )

    def build(self, input_shape):
        self.encoder.build(input_shape)
        self.decode_head.build(None)
        self.built = True

    def forward(self, x, training=None):
        return self.decode_head(self.encoder(x, training=training), training=training)

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            "decoder_dim": self.decoder_dim,
            "drop_path_rate": self.drop_path_rate,
            "dropout": self.dropout,
            "depths": list(self.depths),
            **self.normalization_config(),
            "variant": self.variant,
            "name": self.name,
        }


# Variant table (paper Sec. 4.1: decoder C = 256 for B0/B1, 768 for B2-B5).
for _b, _dim in zip(range(6), (256, 256, 768, 768, 768, 768)):
    register_variant(f"segformer_mit_b{_b}", SegFormer, backbone=f"mit_b{_b}", decoder_dim=_dim)
