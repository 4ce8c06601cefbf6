"""MaskFormer = backbone + FPN pixel decoder + DETR transformer decoder + mask classification
(Cheng, Schwing, Kirillov, NeurIPS 2021, "Per-Pixel Classification is Not All You Need").

The model predicts ``num_queries`` (class, mask) pairs; semantic segmentation combines them
(``semantic_logits``, Sec. 3.4). Training matches predictions to ground-truth segments with
the Hungarian algorithm (:class:`kseg.losses.set_criterion.MaskFormerCriterion`).
"""

import keras
import tensorflow as tf
from keras import ops

from kseg.heads.maskformer_head import MaskEmbedMLP, MaskFormerPixelDecoder, MaskFormerTransformerModule
from kseg.models.mask_classification import MaskClassificationSegmentor
from kseg.models.registry import register_variant

SWIN_BACKBONES = ("swin_t", "swin_s", "swin_b", "swin_l")
RESNET_BACKBONES = ("r50", "r101", "r101c")


def build_backbone(name, drop_path_rate=0.0, backbone_kwargs=None):
    """The backbone ``name`` (a Swin or ResNet variant id) as a layer named ``backbone``.

    ``backbone_kwargs`` override the variant's table entries (tiny test/CPU configs).
    Swin gets ``drop_path_rate``; ResNets have no stochastic depth (the rate is ignored).
    Raises: KeyError for an unknown name.
    """
    kwargs = dict(backbone_kwargs or {})
    if name.startswith("swin"):
        from kseg.backbones.swin import SWIN_VARIANTS, SwinTransformer

        if name not in SWIN_VARIANTS:
            raise KeyError(f"unknown Swin backbone {name!r}; known: {', '.join(SWIN_VARIANTS)}")
        return SwinTransformer(**{**SWIN_VARIANTS[name], "drop_path_rate": drop_path_rate, **kwargs},
                               name="backbone")
    if name in RESNET_BACKBONES or name.startswith("r"):
        from kseg.backbones.resnet import RESNET_VARIANTS, ResNet

        if name not in RESNET_VARIANTS:
            raise KeyError(f"unknown ResNet backbone {name!r}; known: {', '.join(RESNET_VARIANTS)}")
        return ResNet(**{**RESNET_VARIANTS[name], **kwargs}, name="backbone")
    raise KeyError(f"unknown MaskFormer backbone {name!r}; known: {', '.join(SWIN_BACKBONES + RESNET_BACKBONES)}")


@keras.saving.register_keras_serializable(package="kseg")
class MaskFormer(MaskClassificationSegmentor):
    """MaskFormer for semantic segmentation.

    Input: (B, H, W, 3) raw RGB pixels in [0, 255] (float32 or uint8), any H, W; normalised
    in-graph with ImageNet mean/std (the authors' configs for Swin and ResNet).
    Output (``call``): dict with
      - ``class_logits`` float32 (B, Q, K+1), the last class "no object";
      - ``mask_logits`` float32 (B, h, w, Q) at stride 4 (h = the backbone's res2 height);
      - when training, ``aux_outputs``: a list of L-1 such dicts, one per earlier decoder
        layer (deep supervision, Sec. 3.3 / Table VIII).
    ``semantic_logits(outputs)``: float32 (B, h, w, K) (Sec. 3.4 semantic inference).

    ``mask_logits[b, y, x, q] = E_mask[b, q] . E_pixel[b, y, x]`` (Sec. 3.3; the sigmoid is
    applied by inference and the losses).

    Args:
      num_classes: K.
      backbone: ``swin_t|s|b|l`` or ``r50|r101|r101c``. backbone_kwargs: overrides of the
        backbone's table (tiny configs), e.g. ``{"embed_dim": 32, "depths": [1, 1, 1, 1]}``.
      num_queries: N (100). hidden_size: C_Q = d_model (256). num_heads (8). ffn_dim (2048).
      decoder_layers: L (6). dropout: 0.1 (DETR, inside the transformer decoder).
      fpn_feature_size: pixel-decoder width (256). mask_feature_size: C_E (256).
      drop_path_rate: Swin stochastic depth (0.3 in the authors' Swin configs).
      mask_mlp_layers: 3 (2 hidden layers, Sec. 3.3).
      matcher: ``"scipy"`` (host ``linear_sum_assignment``, default) or ``"hungarian"``
        (in-graph, XLA/TPU), used by :meth:`default_loss`.
      no_object_weight (0.1), mask_weight (20, focal), dice_weight (1): the criterion's.
    Layer names mirror HF ``MaskFormerForInstanceSegmentation``: ``backbone``
    (``model.pixel_level_module.encoder``), ``pixel_decoder``
    (``...pixel_level_module.decoder``), ``transformer_module``, ``class_predictor``,
    ``mask_embedder``.
    """

    # Everything but the backbone: the authors' ResNet configs train the backbone at 0.1x the
    # head rate (BACKBONE_MULTIPLIER), which recipes express as lr = 0.1 x 1e-4 with
    # head_lr_mult 10; Swin recipes use head_lr_mult 1.
    head_path_pattern = r"maskformer/(pixel_decoder|transformer_module|class_predictor|mask_embedder)/.*"

    def __init__(self, num_classes, backbone="swin_t", backbone_kwargs=None, num_queries=100, hidden_size=256,
                 num_heads=8, ffn_dim=2048, decoder_layers=6, dropout=0.1, fpn_feature_size=256,
                 mask_feature_size=256, drop_path_rate=0.3, mask_mlp_layers=3, matcher="scipy",
                 no_object_weight=0.1, mask_weight=20.0, dice_weight=1.0, variant=None, name="maskformer",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.backbone_name = num_classes, backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.num_queries, self.hidden_size, self.num_heads, self.ffn_dim = num_queries, hidden_size, num_heads, ffn_dim
        self.decoder_layers, self.dropout = decoder_layers, dropout
        self.fpn_feature_size, self.mask_feature_size = fpn_feature_size, mask_feature_size
        self.drop_path_rate, self.mask_mlp_layers, self.matcher = drop_path_rate, mask_mlp_layers, matcher
        self.no_object_weight, self.mask_weight, self.dice_weight = no_object_weight, mask_weight, dice_weight
        self.variant = variant
        self.backbone = build_backbone(backbone, drop_path_rate, self.backbone_kwargs)
        channels = self.backbone.out_channels
        self.pixel_decoder = MaskFormerPixelDecoder(channels, fpn_feature_size, mask_feature_size,
                                                    name="pixel_decoder")
        self.transformer_module = MaskFormerTransformerModule(
            channels["res5"], num_queries, hidden_size, num_heads, ffn_dim, decoder_layers, dropout,
            name="transformer_module", dtype="float32")  # float32 island under mixed precision
        self.class_predictor = keras.layers.Dense(num_classes + 1, name="class_predictor")
        self.mask_embedder = MaskEmbedMLP(hidden_size, mask_feature_size, mask_mlp_layers, name="mask_embedder")

    def build(self, input_shape):
        self.backbone.build(input_shape)
        self.pixel_decoder.build()
        self.transformer_module.build()
        self.class_predictor.build((None, self.hidden_size))
        self.mask_embedder.build((None, self.hidden_size))
        self.built = True

    def forward(self, x, training=None):
        feats = self.backbone(x, training=training)
        pixel_embed = self.pixel_decoder(feats)  # (B, h, w, C_E) float32
        hidden = self.transformer_module(feats["res5"], training=training)  # (L, B, Q, d)
        if not training:
            hidden = hidden[-1:]  # only the last layer's predictions are needed
        class_logits = ops.cast(self.class_predictor(hidden), "float32")
        mask_embed = ops.cast(self.mask_embedder(hidden), "float32")
        mask_logits = tf.einsum("lbqc,bhwc->lbhwq", mask_embed, pixel_embed)
        outputs = {"class_logits": class_logits[-1], "mask_logits": mask_logits[-1]}
        if training:
            outputs["aux_outputs"] = [{"class_logits": class_logits[i], "mask_logits": mask_logits[i]}
                                      for i in range(self.decoder_layers - 1)]
        return outputs

    def default_loss(self, class_weight=None):
        """The set criterion (:class:`kseg.losses.set_criterion.MaskFormerCriterion`) with
        the paper's weights; ``class_weight`` (K values) scales the classification term
        per class (the no-object weight stays ``no_object_weight``)."""
        from kseg.losses.set_criterion import MaskFormerCriterion

        return MaskFormerCriterion(num_classes=self.num_classes, num_queries=self.num_queries,
                                   no_object_weight=self.no_object_weight, mask_weight=self.mask_weight,
                                   dice_weight=self.dice_weight, matcher=self.matcher,
                                   class_weight=class_weight)

    def compile(self, optimizer=None, loss=None, metrics=None, **kwargs):
        """As :meth:`MaskClassificationSegmentor.compile`, with XLA handled for the matcher.

        ``jit_compile`` defaults to False (Keras' "auto" would pick XLA on a GPU, where the
        default host matcher cannot run). With ``jit_compile=True`` a criterion using the
        host ``"scipy"`` matcher is replaced by the same criterion with the in-graph
        ``"hungarian"`` matcher (same optimal assignments up to ties), with a warning.
        """
        if kwargs.get("jit_compile", "auto") in ("auto", None):
            kwargs["jit_compile"] = False
        loss = loss if loss is not None else self.default_loss()
        if kwargs["jit_compile"] and getattr(loss, "matcher", None) == "scipy":
            import logging

            logging.getLogger(__name__).warning(
                "jit_compile=True: MaskFormer switches its criterion to the in-graph 'hungarian' matcher "
                "(the scipy matcher is a host call XLA cannot compile)")
            loss = type(loss).from_config({**loss.get_config(), "matcher": "hungarian", "compact_targets": False})
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def get_config(self):
        return {
            "num_classes": self.num_classes, "backbone": self.backbone_name, "backbone_kwargs": self.backbone_kwargs,
            "num_queries": self.num_queries, "hidden_size": self.hidden_size, "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim, "decoder_layers": self.decoder_layers, "dropout": self.dropout,
            "fpn_feature_size": self.fpn_feature_size, "mask_feature_size": self.mask_feature_size,
            "drop_path_rate": self.drop_path_rate, "mask_mlp_layers": self.mask_mlp_layers, "matcher": self.matcher,
            "no_object_weight": self.no_object_weight, "mask_weight": self.mask_weight,
            "dice_weight": self.dice_weight, **self.normalization_config(), "variant": self.variant, "name": self.name,
        }


# Variant table (MaskFormer Table 1). Swin: drop path 0.3 (authors' Swin configs); ResNets
# have none. Swin-B/L use window 12 (their 384-pretrained weights, authors' configs).
for _bb in SWIN_BACKBONES:
    register_variant(f"maskformer_{_bb}", MaskFormer, backbone=_bb, drop_path_rate=0.3)
for _bb in RESNET_BACKBONES:
    register_variant(f"maskformer_{_bb}", MaskFormer, backbone=_bb, drop_path_rate=0.0)
# Not in the paper: a Swin-T-shaped model at ~1/3 width for CPU recipes trained from scratch
# (recipes/maskformer_swin_t_camvid.yaml): Swin C=32, heads 1/2/4/8, window 7, depths 2/2/2/2;
# FPN and mask embeddings 64 wide; the paper's 6-layer post-norm decoder at d=128 (4 heads,
# FFN 512) with 50 queries.
register_variant("maskformer_swin_nano", MaskFormer, backbone="swin_t",
                 backbone_kwargs={"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8)},
                 num_queries=50, hidden_size=128, num_heads=4, ffn_dim=512, fpn_feature_size=64,
                 mask_feature_size=64, drop_path_rate=0.0)
