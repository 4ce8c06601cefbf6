"""SETR = plain ViT encoder + Naive / PUP / MLA decoder + auxiliary heads (Zheng et al. 2021)."""

import keras

from kseg.backbones.vit import ViT, crop_to_input, spatial_size, vit_arch
from kseg.heads.setr_heads import SETRMLAAuxHead, SETRMLAHead, SETRMLANeck, SETRUpHead
from kseg.models.deep_supervision import DeepSupervisedSegmentor
from kseg.models.registry import register_variant

DECODERS = ("naive", "pup", "mla")
# Auxiliary taps for T-Large (24 layers), SETR Sec. 4 "auxiliary loss": Naive Z10/15/20,
# PUP Z10/15/20/24; MLA supervises its 4 neck streams. T-Small (ViT-B, 12 layers) Naive:
# Z3/6/9, the authors' ``SETR_Naive_Base_768x768_*_cityscapes_bs_8.py`` (in_index 2, 5, 8).
# For other depths the T-Large indices are scaled by depth/24 (12-layer PUP: Z5/8/10/12).
AUX_LAYERS_24 = {"naive": (10, 15, 20), "pup": (10, 15, 20, 24)}
AUX_LAYERS_12 = {"naive": (3, 6, 9)}


def default_aux_layers(decoder, depth):
    if decoder == "mla":
        return ()
    if depth == 12 and decoder in AUX_LAYERS_12:
        return AUX_LAYERS_12[decoder]
    return tuple(max(1, min(depth, round(i * depth / 24))) for i in AUX_LAYERS_24[decoder])


@keras.saving.register_keras_serializable(package="kseg")
class SETR(DeepSupervisedSegmentor):
    """SEgmentation TRansformer.

    Input: (B, H, W, 3) raw RGB pixels in [0, 255] (float32 or uint8), any H, W.
    Output (inference): float32 logits (B, h, w, K) at the decoder's native stride when H and
    W are multiples of 16: Naive 16 (H/16), PUP 2 (H/2), MLA 4 (H/4); losses and inference
    resize them bilinearly to the labels / image. Other sizes: the input is padded
    bottom/right to multiples of 16 (mmseg's ``PatchEmbed(padding="corner")``; the authors'
    code only ever sees whole crops, its ``PatchEmbed`` asserts the size) and every output is
    resized to the padded size and cropped to (B, H, W, K), as Segmenter's authors do.
    Training (``training=True``): ``{"logits": main, "aux": [...]}`` (see
    :class:`DeepSupervisedSegmentor`); auxiliary heads at stride 16, weighted 0.4 each
    (reference configs; the paper gives no weights).
    Normalisation: the backbone's (127.5/127.5 for Google ViT weights) unless ``mean``/``std``
    are given; every authors' and mmseg SETR config uses the ImageNet mean/std, which their
    presets set.

    Args:
      num_classes: K. backbone: ``vit_b16`` (T-Small) / ``vit_l16`` (T-Large) or any
        ``VIT_VARIANTS`` key. decoder: "naive", "pup" or "mla".
      aux_heads: build the auxiliary heads (False: a plain per-pixel model).
      aux_loss_weight: weight of every auxiliary loss (0.4, reference configs).
      aux_layers: 1-based ViT layers of the Naive/PUP auxiliary heads (default: paper's
        Z10/15/20[/24] for 24 layers, the authors' Z3/6/9 for a 12-layer Naive, else scaled). mla_layers: 4 taps (default: uniformly spaced,
        depth/4 * (1..4): Z6/12/18/24 for T-Large, Sec. 3.3).
      channels: width of Naive/PUP convs (256); mla_channels / mla_head_channels: 256 / 128
        (reference). The MLA classifier is the official code's 3x3 conv; mmseg's 1x1
        ``cls_seg`` is the variant SegViT Table 1 counted (113.5 vs 123.4 GFLOPs, ViT-B 512).
      drop_path_rate: 0.0, dropout: 0.0 (every authors' model config sets the backbone's
        ``drop_rate=0.``; no drop path).
      norm_epsilon: encoder LayerNorm epsilon (1e-6, the authors' ``partial(nn.LayerNorm,
        eps=1e-6)``). mean, std: normalisation overrides (:class:`Segmentor`).
      pos_embed_interpolation: "bicubic" (default) or "bilinear".
      depth: encoder blocks replacing the variant's (tiny test configs; auxiliary and MLA
        taps are derived from it); None keeps it.
      img_size: the size the position grid is stored for (default: the ViT variant's 384).
    SETR-MLA drops the class token before the blocks (official ``VIT_MLA``, mmseg
    ``with_cls_token=False``); Naive and PUP keep it.
    The main Naive/PUP head reads the raw output of the last block (no final encoder norm:
    each head has its own LayerNorm, as in the reference).
    """

    head_path_pattern = r"setr/(decode_head|auxiliary_head_\d+)/.*"

    def __init__(self, num_classes, backbone="vit_l16", decoder="pup", aux_heads=True, aux_loss_weight=0.4,
                 aux_layers=None, mla_layers=None, channels=256, mla_channels=256, mla_head_channels=128,
                 drop_path_rate=0.0, dropout=0.0, pos_embed_interpolation="bicubic", depth=None, img_size=None,
                 norm_epsilon=1e-6, variant=None, name="setr", **kwargs):
        super().__init__(name=name, **kwargs)
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        arch, (self.mean, self.std) = vit_arch(backbone, depth, img_size)
        depth, dim = arch["depth"], arch["embed_dim"]
        self.num_classes, self.backbone_name, self.decoder = num_classes, backbone, decoder
        self.aux_heads, self.aux_loss_weight = aux_heads, aux_loss_weight
        self.aux_layers = tuple(aux_layers) if aux_layers is not None else default_aux_layers(decoder, depth)
        self.mla_layers = tuple(mla_layers) if mla_layers is not None else tuple(depth // 4 * i for i in range(1, 5))
        self.channels, self.mla_channels, self.mla_head_channels = channels, mla_channels, mla_head_channels
        self.drop_path_rate, self.dropout, self.variant = drop_path_rate, dropout, variant
        self.pos_embed_interpolation = pos_embed_interpolation
        taps = set(self.mla_layers) if decoder == "mla" else {depth} | (set(self.aux_layers) if aux_heads else set())
        self.encoder = ViT(**arch, drop_path_rate=drop_path_rate, dropout=dropout, out_layers=sorted(taps),
                           norm_epsilon=norm_epsilon,
                           pos_embed_interpolation=pos_embed_interpolation, final_norm=False,
                           with_cls_token=decoder != "mla", name="encoder")
        self.depth, self.embed_dim = depth, dim
        self.aux = []
        if decoder == "mla":
            self.mla_neck = SETRMLANeck(dim, mla_channels, len(self.mla_layers), name="mla_neck")
            self.decode_head = SETRMLAHead(num_classes, mla_channels, mla_head_channels, len(self.mla_layers),
                                           name="decode_head")
            if aux_heads:
                self.aux = [SETRMLAAuxHead(num_classes, mla_channels, name=f"auxiliary_head_{i}")
                            for i in range(len(self.mla_layers))]
        else:
            self.decode_head = SETRUpHead(num_classes, dim, channels, 4 if decoder == "pup" else 2, 1,
                                          name="decode_head")
            if aux_heads:
                # Naive model: 1x1 first conv; PUP model's aux heads: 3x3 (reference conv3x3_conv1x1).
                k = 3 if decoder == "pup" else 1
                self.aux = [SETRUpHead(num_classes, dim, channels, 2, k, name=f"auxiliary_head_{i}")
                            for i in range(len(self.aux_layers))]
        self.aux_loss_weights = tuple([aux_loss_weight] * len(self.aux))

    def build(self, input_shape):
        self.encoder.build(input_shape)
        if self.decoder == "mla":
            self.mla_neck.build(None)
        self.decode_head.build(None)
        for head in self.aux:
            head.build(None)
        self.built = True

    def forward(self, x, training=None):
        feats = self.encoder(x, training=training)
        if self.decoder == "mla":
            streams = self.mla_neck([feats[f"layer{i}"] for i in self.mla_layers], training=training)
            main = self.decode_head(streams, training=training)
            aux_inputs = streams
        else:
            main = self.decode_head(feats[f"layer{self.depth}"], training=training)
            aux_inputs = [feats[f"layer{i}"] for i in self.aux_layers] if self.aux else []
        size, patch = spatial_size(x), self.encoder.patch_size
        main = crop_to_input(main, size, patch)
        if not training:
            return main, []
        return main, [crop_to_input(head(t, training=training), size, patch) for head, t in zip(self.aux, aux_inputs)]

    def get_config(self):
        return {
            "num_classes": self.num_classes, "backbone": self.backbone_name, "decoder": self.decoder,
            "aux_heads": self.aux_heads, "aux_loss_weight": self.aux_loss_weight,
            "aux_layers": list(self.aux_layers), "mla_layers": list(self.mla_layers), "channels": self.channels,
            "mla_channels": self.mla_channels, "mla_head_channels": self.mla_head_channels,
            "drop_path_rate": self.drop_path_rate, "dropout": self.dropout,
            "pos_embed_interpolation": self.pos_embed_interpolation,
            "depth": self.encoder.depth, "img_size": self.encoder.img_size,
            "norm_epsilon": self.encoder.norm_epsilon, **self.normalization_config(),
            "variant": self.variant, "name": self.name,
        }


# Variants (SETR Table 2 / Table 1d: T-Small = ViT-B dims, T-Large = ViT-L dims, patch 16),
# plus a ViT-Tiny PUP for CPU recipes (not in the paper) whose decoder convs are 64 wide:
# at 256 the PUP convs at stride 4 and 2 cost ~6x the ViT-Tiny encoder.
for _dec in DECODERS:
    for _bb in ("vit_b16", "vit_l16"):
        register_variant(f"setr_{_dec}_{_bb}", SETR, backbone=_bb, decoder=_dec)
register_variant("setr_pup_vit_t16", SETR, backbone="vit_t16", decoder="pup", channels=64)
