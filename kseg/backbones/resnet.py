"""ResNet-50/101 and R101c (He et al. 2016), the CNN backbones of MaskFormer (Table 1).

The definition is not in the MaskFormer paper; it follows detectron2's ``ResNet`` as
MaskFormer builds it (torchvision-derived weights, ``STRIDE_IN_1X1: False``):

  stem: 7x7/2 conv (64) + BN + ReLU, 3x3/2 max pool                   -> stride 4
        R101c ("deeplab" stem): three 3x3 convs 64/2, 64, 128 (+ BN + ReLU each), max pool
  res2..res5: 3, 4, 6 (R50) or 23 (R101), 3 bottleneck blocks; widths 64/128/256/512,
        outputs 256/512/1024/2048; the first block of res3..res5 has stride 2, placed on
        the 3x3 conv (torchvision "v1.5"); a projection ``shortcut`` (1x1 conv + BN) where
        the channels change                                    -> strides 4, 8, 16, 32

Bottleneck: ``relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))``, each conv with
its BN (no conv bias). Padding is PyTorch's symmetric ``k // 2`` (see
``kseg.layers.conv_norm_act``) and the max pool pads by 1 on every side; map sizes are
ceil(H / 2) per stride-2 step, any H and W.

Normalisation: detectron2's default ``RESNETS.NORM`` is ``FrozenBN`` (MaskFormer's ADE20K
configs keep it): BN statistics and affine parameters fixed at their ImageNet values.
``norm="bn"`` trains ordinary BatchNorm instead. ``freeze_at`` follows detectron2
``BACKBONE.FREEZE_AT`` (0: nothing frozen, 1: stem, 2: stem + res2, ...).

Layer names mirror the detectron2 checkpoint tree (``.`` -> ``_``): ``stem/conv1[/norm]``
(R101c: ``stem/conv{1,2,3}``), ``res{s}_{j}/{conv1,conv2,conv3,shortcut}[/norm]``.
Converters (``kseg.convert.resnet``) also read torchvision and transformers layouts.
"""

import keras
from keras import ops

from kseg.layers.conv_norm_act import ConvNormAct

FEATURE_KEYS = ("res2", "res3", "res4", "res5")


@keras.saving.register_keras_serializable(package="kseg")
class BottleneckBlock(keras.layers.Layer):
    """1x1 -> 3x3 (stride) -> 1x1 with BN, projection shortcut when shapes change.

    (B, H, W, C_in) -> (B, ceil(H / stride), ceil(W / stride), out_channels).
    ``stride_in_1x1=True`` puts the stride on the first 1x1 (original MSRA/Caffe ResNet).
    """

    def __init__(self, in_channels, out_channels, bottleneck_channels, stride=1, stride_in_1x1=False,
                 norm="frozen_bn", **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.bottleneck_channels, self.stride = bottleneck_channels, stride
        self.stride_in_1x1, self.norm = stride_in_1x1, norm
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = (ConvNormAct(out_channels, 1, stride, norm=norm, name="shortcut")
                         if in_channels != out_channels or stride != 1 else None)
        self.conv1 = ConvNormAct(bottleneck_channels, 1, s1, norm=norm, activation="relu", name="conv1")
        self.conv2 = ConvNormAct(bottleneck_channels, 3, s3, norm=norm, activation="relu", name="conv2")
        self.conv3 = ConvNormAct(out_channels, 1, 1, norm=norm, name="conv3")

    def build(self, input_shape):
        shape = (None, None, None, self.in_channels)
        if self.shortcut is not None:
            self.shortcut.build(shape)
        self.conv1.build(shape)
        self.conv2.build((None, None, None, self.bottleneck_channels))
        self.conv3.build((None, None, None, self.bottleneck_channels))
        self.built = True

    def call(self, x, training=None):
        y = self.conv3(self.conv2(self.conv1(x, training=training), training=training), training=training)
        short = self.shortcut(x, training=training) if self.shortcut is not None else x
        return ops.relu(y + short)

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "out_channels": self.out_channels,
                "bottleneck_channels": self.bottleneck_channels, "stride": self.stride,
                "stride_in_1x1": self.stride_in_1x1, "norm": self.norm}


@keras.saving.register_keras_serializable(package="kseg")
class ResNetStem(keras.layers.Layer):
    """``"basic"``: conv1 7x7/2 -> max pool 3x3/2; ``"deeplab"`` (R101c): conv1 3x3/2 (out/2),
    conv2 3x3 (out/2), conv3 3x3 (out) -> max pool. (B, H, W, 3) -> (B, ~H/4, ~W/4, out_channels).

    The pool pads with zeros, which equals PyTorch's -inf padding here: its input is a ReLU
    output (>= 0) and every window holds at least one real pixel.
    """

    def __init__(self, stem_type="basic", out_channels=64, norm="frozen_bn", **kwargs):
        super().__init__(**kwargs)
        if stem_type not in ("basic", "deeplab"):
            raise ValueError(f"stem_type must be 'basic' or 'deeplab', got {stem_type!r}")
        self.stem_type, self.out_channels, self.norm = stem_type, out_channels, norm
        if stem_type == "basic":
            self.convs = [ConvNormAct(out_channels, 7, 2, norm=norm, activation="relu", name="conv1")]
        else:
            half = out_channels // 2
            self.convs = [
                ConvNormAct(half, 3, 2, norm=norm, activation="relu", name="conv1"),
                ConvNormAct(half, 3, 1, norm=norm, activation="relu", name="conv2"),
                ConvNormAct(out_channels, 3, 1, norm=norm, activation="relu", name="conv3"),
            ]
        for i, conv in enumerate(self.convs, start=1):
            setattr(self, f"conv{i}", conv)

    def build(self, input_shape):
        channels = input_shape[-1]
        for conv in self.convs:
            conv.build((None, None, None, channels))
            channels = conv.filters
        self.built = True

    def call(self, x, training=None):
        for conv in self.convs:
            x = conv(x, training=training)
        x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return ops.max_pool(x, 3, strides=2, padding="valid")

    def get_config(self):
        return {**super().get_config(), "stem_type": self.stem_type, "out_channels": self.out_channels,
                "norm": self.norm}


@keras.saving.register_keras_serializable(package="kseg")
class ResNet(keras.layers.Layer):
    """The ResNet backbone (detectron2 layout) returning res2..res5.

    Input: (B, H, W, 3) float, already normalised (ImageNet mean/std, RGB; the model does it).
    Output: ``{"res2": (B, ~H/4, ~W/4, 256), "res3": (.., 512), "res4": (.., 1024),
    "res5": (B, ~H/32, ~W/32, 2048)}`` (sizes round up), in the compute dtype.
    ``out_channels`` gives the channels per key.

    Args:
      depths: bottleneck blocks per stage (R50 (3, 4, 6, 3), R101 (3, 4, 23, 3)).
      stem_type: ``"basic"`` or ``"deeplab"`` (R101c); stem_channels: 64 / 128.
      width_per_group: bottleneck width of res2 (64; doubles per stage).
      stride_in_1x1: False (torchvision / MaskFormer), True for MSRA Caffe weights.
      norm: ``"frozen_bn"`` (detectron2 default) or ``"bn"``.
      freeze_at: 0..5, detectron2 FREEZE_AT (stem = 1, res2 = 2, ...).
      out_features: subset of ``res2..res5``.
    Raises: ValueError for a bad ``depths`` length, ``freeze_at`` or ``out_features``.
    """

    def __init__(self, depths=(3, 4, 6, 3), stem_type="basic", stem_channels=64, width_per_group=64,
                 stride_in_1x1=False, norm="frozen_bn", freeze_at=0, out_features=FEATURE_KEYS, **kwargs):
        super().__init__(**kwargs)
        depths = [int(d) for d in depths]
        if len(depths) != 4:
            raise ValueError(f"ResNet needs 4 stage depths (res2..res5), got {depths}")
        if not 0 <= int(freeze_at) <= 5:
            raise ValueError(f"freeze_at must be in 0..5 (detectron2 FREEZE_AT), got {freeze_at}")
        bad = [k for k in out_features if k not in FEATURE_KEYS]
        if bad:
            raise ValueError(f"unknown out_features {bad}; choose from {FEATURE_KEYS}")
        self.depths, self.stem_type, self.stem_channels = depths, stem_type, int(stem_channels)
        self.width_per_group, self.stride_in_1x1, self.norm = int(width_per_group), stride_in_1x1, norm
        self.freeze_at, self.out_features = int(freeze_at), [k for k in FEATURE_KEYS if k in out_features]
        self.num_features = [self.width_per_group * 4 * 2 ** i for i in range(4)]
        self.out_channels = {k: self.num_features[i] for i, k in enumerate(FEATURE_KEYS) if k in self.out_features}
        self.out_strides = {k: 4 * 2 ** i for i, k in enumerate(FEATURE_KEYS) if k in self.out_features}
        self.stem = ResNetStem(stem_type, self.stem_channels, norm, name="stem")
        self.stages = []
        in_ch = self.stem_channels
        for i, depth in enumerate(depths):
            out_ch, width = self.num_features[i], self.width_per_group * 2 ** i
            blocks = []
            for j in range(depth):
                blocks.append(BottleneckBlock(in_ch, out_ch, width, 2 if (j == 0 and i > 0) else 1,
                                              stride_in_1x1, norm, name=f"res{i + 2}_{j}"))
                in_ch = out_ch
            self.stages.append(blocks)
        if self.freeze_at >= 1:
            self.stem.trainable = False
        for i, blocks in enumerate(self.stages):
            if self.freeze_at >= i + 2:
                for blk in blocks:
                    blk.trainable = False

    def build(self, input_shape):
        self.stem.build((None, None, None, input_shape[-1]))
        for i, blocks in enumerate(self.stages):
            for blk in blocks:
                blk.build((None, None, None, blk.in_channels))
        self.built = True

    def call(self, x, training=None):
        x = self.stem(ops.cast(x, self.compute_dtype), training=training)
        out = {}
        last = FEATURE_KEYS.index(self.out_features[-1])
        for i, blocks in enumerate(self.stages[: last + 1]):
            for blk in blocks:
                x = blk(x, training=training)
            if FEATURE_KEYS[i] in self.out_features:
                out[FEATURE_KEYS[i]] = x
        return out

    def get_config(self):
        return {**super().get_config(), "depths": self.depths, "stem_type": self.stem_type,
                "stem_channels": self.stem_channels, "width_per_group": self.width_per_group,
                "stride_in_1x1": self.stride_in_1x1, "norm": self.norm, "freeze_at": self.freeze_at,
                "out_features": self.out_features}


# Architectures as data. R101c = R101 with the DeepLab deep stem (MaskFormer Sec. 4:
# "ResNet-101c ... replaces the first 7x7 convolution by 3 consecutive 3x3 convolutions";
# detectron2 DeepLab ``STEM_TYPE: deeplab``, ``STEM_OUT_CHANNELS: 128``). r50c likewise.
RESNET_VARIANTS = {
    "r50": {"depths": (3, 4, 6, 3), "stem_type": "basic", "stem_channels": 64},
    "r101": {"depths": (3, 4, 23, 3), "stem_type": "basic", "stem_channels": 64},
    "r50c": {"depths": (3, 4, 6, 3), "stem_type": "deeplab", "stem_channels": 128},
    "r101c": {"depths": (3, 4, 23, 3), "stem_type": "deeplab", "stem_channels": 128},
}


def build_backbone(name, /, **overrides):
    """A :class:`ResNet` for a :data:`RESNET_VARIANTS` name, with keyword overrides.

    Example: ``build_backbone("r50", norm="bn", name="backbone")``.
    Raises: KeyError naming the known variants.
    """
    if name not in RESNET_VARIANTS:
        raise KeyError(f"unknown ResNet backbone {name!r}; known: {', '.join(RESNET_VARIANTS)}")
    return ResNet(**{**RESNET_VARIANTS[name], **overrides})
