"""SETR decoders (Zheng et al. 2021, Sec. 3.3): Naive, PUP, MLA, and the auxiliary heads.

The paper's Figure 1 (layer details) is missing from the seed text; widths, kernel sizes,
norms and the upsampling placement follow the authors' code (fudan-zvg/SETR,
``vit_up_head.py``, ``vit_mla.py``, ``vit_mla_head.py``, ``vit_mla_auxi_head.py``):

- :class:`SETRUpHead` (``VisionTransformerUpHead``): LayerNorm (eps 1e-6) on the tapped
  tokens, then
  * Naive / Naive-style auxiliary heads (``num_convs=2``): conv_0 (1x1 or 3x3, 256) + BN +
    ReLU + conv_1 1x1 -> K, at stride 16;
  * PUP (``num_convs=4``): four [3x3 conv 256 + BN + ReLU] with a bilinear x2 after each
    of the first three, then conv_4 1x1 -> K, at stride 2.
- :class:`SETRMLANeck` (``Conv_MLA``): per tap LayerNorm, 1x1 conv (256, no bias) + BN +
  ReLU; top-down sums deep -> shallow; 3x3 conv (256, no bias) + BN + ReLU per stream.
- :class:`SETRMLAHead` (``VIT_MLAHead``): per stream two 3x3 convs (128, no bias) + BN +
  ReLU, bilinear x4 (align_corners=True as the reference), concat (512) and a 3x3
  classifier -> K at stride 4.
- :class:`SETRMLAAuxHead` (``VIT_MLA_AUXIHead``, in_channels 256): one 1x1 conv (no bias)
  -> K on a neck stream, at stride 16.

Every head returns float32 logits at its last native stride: the reference's final
bilinear resize to the image (after the last 1x1/3x3 classifier) is what kseg's losses and
inference do anyway. Where the reference upsamples *before* a 1x1 classifier (PUP
auxiliary heads: x4 then 1x1), the two commute and the upsampling is left to the loss,
which differs from the reference only by resampling once instead of twice.
"""

import keras
import tensorflow as tf
from keras import ops


def _bn(name):
    # SyncBN as in the paper: statistics over the global batch under tf.distribute
    # (PyTorch momentum 0.1 = Keras 0.9, eps 1e-5).
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True, name=name)


def _resize(x, factor, align_corners=False):
    size = tf.shape(x)[1:3] * factor
    if align_corners:
        y = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=True, half_pixel_centers=False)
    else:
        y = tf.image.resize(x, size, method="bilinear")
    return tf.cast(y, x.dtype)


@keras.saving.register_keras_serializable(package="kseg")
class SETRUpHead(keras.layers.Layer):
    """Naive (num_convs=2) and PUP (num_convs=4) heads, also the 2-layer auxiliary heads.

    Input: (B, h, w, in_dim) raw ViT block output. Output: float32 (B, h', w', K) with
    h' = h (num_convs=2) or 8h (num_convs=4: three x2 upsamplings; the reference's fourth
    x2 after the classifier is left to the loss/inference resize).

    Args:
      num_classes, in_dim; channels: 256 (reference); num_convs: 2 or 4;
      first_kernel: kernel of conv_0 for num_convs=2 (1 for Naive heads, 3 for the PUP
      model's auxiliary heads, reference ``conv3x3_conv1x1``).
    """

    def __init__(self, num_classes, in_dim, channels=256, num_convs=2, first_kernel=1, **kwargs):
        super().__init__(**kwargs)
        if num_convs not in (2, 4):
            raise ValueError(f"num_convs must be 2 (Naive) or 4 (PUP), got {num_convs}")
        self.num_classes, self.in_dim, self.channels = num_classes, in_dim, channels
        self.num_convs, self.first_kernel = num_convs, first_kernel
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")
        kernels = [first_kernel] if num_convs == 2 else [3, 3, 3, 3]
        self.convs = [keras.layers.Conv2D(channels, k, padding="same", name=f"conv_{i}") for i, k in enumerate(kernels)]
        self.bns = [_bn(f"syncbn_fc_{i}") for i in range(len(kernels))]
        self.cls = keras.layers.Conv2D(num_classes, 1, name=f"conv_{len(kernels)}", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.norm.build((None, None, None, self.in_dim))
        c = self.in_dim
        for conv, bn in zip(self.convs, self.bns):
            conv.build((None, None, None, c))
            bn.build((None, None, None, self.channels))
            c = self.channels
        self.cls.build((None, None, None, self.channels))
        self.built = True

    def call(self, x, training=None):
        x = self.norm(x)
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = ops.relu(bn(conv(x), training=training))
            if self.num_convs == 4 and i < 3:
                x = _resize(x, 2)
        return ops.cast(self.cls(x), "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "in_dim": self.in_dim,
                "channels": self.channels, "num_convs": self.num_convs, "first_kernel": self.first_kernel}


@keras.saving.register_keras_serializable(package="kseg")
class SETRMLANeck(keras.layers.Layer):
    """Multi-level aggregation neck. Input: list of 4 (B, h, w, in_dim) taps, shallow first.
    Output: list of 4 (B, h, w, channels) streams (p2..p5, shallow first)."""

    def __init__(self, in_dim, channels=256, num_levels=4, **kwargs):
        super().__init__(**kwargs)
        self.in_dim, self.channels, self.num_levels = in_dim, channels, num_levels
        self.norms = [keras.layers.LayerNormalization(epsilon=1e-6, name=f"norm_{i}") for i in range(num_levels)]
        lv = range(2, 2 + num_levels)
        self.reduce = [keras.layers.Conv2D(channels, 1, use_bias=False, name=f"mla_p{k}_1x1") for k in lv]
        self.reduce_bn = [_bn(f"mla_p{k}_1x1_bn") for k in lv]
        self.smooth = [keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"mla_p{k}") for k in lv]
        self.smooth_bn = [_bn(f"mla_p{k}_bn") for k in lv]

    def build(self, input_shape):
        for i in range(self.num_levels):
            self.norms[i].build((None, None, None, self.in_dim))
            self.reduce[i].build((None, None, None, self.in_dim))
            self.smooth[i].build((None, None, None, self.channels))
            self.reduce_bn[i].build((None, None, None, self.channels))
            self.smooth_bn[i].build((None, None, None, self.channels))
        self.built = True

    def call(self, taps, training=None):
        reduced = [ops.relu(self.reduce_bn[i](self.reduce[i](self.norms[i](t)), training=training))
                   for i, t in enumerate(taps)]
        summed = [None] * self.num_levels
        acc = None
        for i in reversed(range(self.num_levels)):  # top-down: deepest first
            acc = reduced[i] if acc is None else acc + reduced[i]
            summed[i] = acc
        return [ops.relu(self.smooth_bn[i](self.smooth[i](s), training=training)) for i, s in enumerate(summed)]

    def get_config(self):
        return {**super().get_config(), "in_dim": self.in_dim, "channels": self.channels,
                "num_levels": self.num_levels}


@keras.saving.register_keras_serializable(package="kseg")
class SETRMLAHead(keras.layers.Layer):
    """Input: the neck's streams (B, h, w, in_channels) x 4. Output: float32 (B, 4h, 4w, K)."""

    def __init__(self, num_classes, in_channels=256, channels=128, num_levels=4, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.in_channels, self.channels, self.num_levels = num_classes, in_channels, channels, num_levels
        self.convs, self.bns = [], []
        for k in range(2, 2 + num_levels):
            self.convs.append([keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"head{k}_{j}")
                               for j in range(2)])
            self.bns.append([_bn(f"head{k}_bn_{j}") for j in range(2)])
        self.cls = keras.layers.Conv2D(num_classes, 3, padding="same", name="cls", dtype=self.dtype_policy)

    def build(self, input_shape):
        for convs, bns in zip(self.convs, self.bns):
            convs[0].build((None, None, None, self.in_channels))
            convs[1].build((None, None, None, self.channels))
            for bn in bns:
                bn.build((None, None, None, self.channels))
        self.cls.build((None, None, None, self.channels * self.num_levels))
        self.built = True

    def call(self, streams, training=None):
        outs = []
        for x, convs, bns in zip(streams, self.convs, self.bns):
            for conv, bn in zip(convs, bns):
                x = ops.relu(bn(conv(x), training=training))
            outs.append(_resize(x, 4, align_corners=True))
        return ops.cast(self.cls(ops.concatenate(outs, axis=-1)), "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "in_channels": self.in_channels,
                "channels": self.channels, "num_levels": self.num_levels}


@keras.saving.register_keras_serializable(package="kseg")
class SETRMLAAuxHead(keras.layers.Layer):
    """``aux``: 1x1 conv (no bias) on one MLA stream. (B, h, w, in_channels) -> float32 (B, h, w, K)."""

    def __init__(self, num_classes, in_channels=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.aux = keras.layers.Conv2D(num_classes, 1, use_bias=False, name="aux", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.aux.build((None, None, None, self.in_channels))
        self.built = True

    def call(self, x, training=None):
        return ops.cast(self.aux(x), "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "in_channels": self.in_channels}
