"""Tiny builders of every model family, in one place, for the training tests
(replica equivalence, mixed precision, accumulation). Add an entry per new family.

Each entry: ``name -> (builder(num_classes) -> built model, has_batchnorm)``. Builders
turn every random op off (drop path, dropout) so runs are comparable, and keep the widths
small so a step takes well under a second on a CPU.
"""

import kseg

NUM_CLASSES = 4
IMAGE_SIZE = (64, 64)


def _segformer(k):
    return kseg.build_model("segformer_mit_b0", num_classes=k, depths=(1, 1, 1, 1), decoder_dim=32,
                            drop_path_rate=0.0, dropout=0.0)


def _segmenter_linear(k):
    from kseg.models import Segmenter

    model = Segmenter(k, backbone="vit_t16", decoder="linear", depth=2, drop_path_rate=0.0, dropout=0.0,
                      variant="segmenter_vit_t16_linear")
    model.build((None, None, None, 3))
    return model


def _segmenter_mask(k):
    return kseg.build_model("segmenter_vit_t16_mask", num_classes=k, depth=2, decoder_layers=1,
                            drop_path_rate=0.0, dropout=0.0)


def _setr_pup(k):
    return kseg.build_model("setr_pup_vit_t16", num_classes=k, depth=2, channels=16, drop_path_rate=0.0,
                            dropout=0.0)


def _segvit(k):
    from kseg.models.segvit import SegViT

    model = SegViT(k, backbone="vit_t16", img_size=64, decoder_layers=1, depth=4, out_layers=(2, 3, 4),
                   qd_block=3, qu_layers=(2, 4), drop_path_rate=0.0, dropout=0.0, decoder_dropout=0.0,
                   variant="segvit_vit_t16")
    model.build((None, None, None, 3))
    return model


def _maskformer(k):
    from kseg.models.maskformer import MaskFormer

    model = MaskFormer(k, backbone="swin_t", backbone_kwargs={"embed_dim": 16, "depths": [1, 1, 1, 1],
                                                              "num_heads": [1, 1, 2, 2], "window_size": 4},
                       num_queries=6, hidden_size=32, num_heads=2, ffn_dim=64, decoder_layers=2,
                       fpn_feature_size=32, mask_feature_size=32, drop_path_rate=0.0, dropout=0.0,
                       variant="maskformer_swin_t")
    model.build((None, None, None, 3))
    return model


# name -> (builder, has BatchNorm in training mode). One tiny entry per family.
FAMILIES = {
    "segformer": (_segformer, True),
    "segmenter": (_segmenter_mask, False),
    "setr": (_setr_pup, True),
    "segvit": (_segvit, False),
    "maskformer": (_maskformer, False),
}
# Extra decoders, for checks that want them.
EXTRA = {
    "segmenter_linear": (_segmenter_linear, False),
}


def build(name, num_classes=NUM_CLASSES):
    builder, _ = {**FAMILIES, **EXTRA}[name]
    return builder(num_classes)
