"""The All-MLP decoder of SegFormer (Xie et al. 2021, Sec. 3.2, Eq. 4)."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class SegFormerHead(keras.layers.Layer):
    """Per-stage Linear to C, bilinear upsampling to stride 4, concat, fuse, classify.

    The fuse layer is a bias-free 1x1 convolution + BatchNorm + ReLU and dropout 0.1
    precedes the classifier, as in the authors' code (the paper says "Linear"; this
    matches its 0.4 M / 3.3 M decoder parameter counts). Features are concatenated in
    the order stage4, stage3, stage2, stage1 like the reference, so converted weights
    line up. Names follow the HF checkpoint (``decode_head.linear_c.{i}.proj``,
    ``linear_fuse``, ``batch_norm``, ``classifier``).

    Input: the MiT feature dict (``stage1`` .. ``stage4``, strides 4..32).
    Output: logits (B, H/4, W/4, num_classes) float32.
    """

    def __init__(self, num_classes, decoder_dim=256, dropout=0.1, in_channels=(32, 64, 160, 256), **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.decoder_dim, self.dropout_rate = num_classes, decoder_dim, dropout
        self.in_channels = list(in_channels)
        self.linear_c = [keras.layers.Dense(decoder_dim, name=f"linear_c_{i}") for i in range(len(in_channels))]
        self.linear_fuse = keras.layers.Conv2D(decoder_dim, 1, use_bias=False, name="linear_fuse")
        # SyncBN as the authors trained: statistics over the global batch under tf.distribute.
        self.batch_norm = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True,
                                                          name="batch_norm")
        self.dropout = keras.layers.Dropout(dropout)
        # Logits leave the head in float32 whatever the policy (DESIGN: heads output float32).
        self.classifier = keras.layers.Conv2D(num_classes, 1, name="classifier", dtype=self.dtype_policy)

    def build(self, input_shape):
        for layer, c in zip(self.linear_c, self.in_channels):
            layer.build((None, None, None, c))
        self.linear_fuse.build((None, None, None, self.decoder_dim * len(self.in_channels)))
        self.batch_norm.build((None, None, None, self.decoder_dim))
        self.classifier.build((None, None, None, self.decoder_dim))
        self.built = True

    def call(self, features, training=None):
        # Eq. 4 is linear up to the BatchNorm: Linear_i, bilinear upsampling, concat and the
        # 1x1 fuse commute, so fuse(concat_i(up(W_i F_i + b_i))) = sum_i up(F_i (W_i U_i) +
        # b_i U_i), where U_i is the fuse kernel's slice for stage i. Folding U_i into W_i
        # applies it at each stage's own resolution instead of on 4C channels at stride 4:
        # same variables and outputs (to float rounding); the 4C->C fuse conv at stride 4
        # disappears (B0 at 512: 4.1 instead of 8.4 GMACs; B2: 23.7 instead of 62.4).
        n, c = len(self.in_channels), self.decoder_dim
        fuse = ops.reshape(ops.cast(self.linear_fuse.kernel, self.compute_dtype), (n * c, c))
        maps = [features[f"stage{i + 1}"] for i in range(n)]
        size = tf.shape(maps[0])[1:3]
        x = None
        for i, (layer, f) in enumerate(zip(self.linear_c, maps)):
            u = fuse[(n - 1 - i) * c:(n - i) * c]  # concat order is stage4 .. stage1
            kernel = ops.matmul(ops.cast(layer.kernel, self.compute_dtype), u)
            bias = ops.matmul(ops.cast(layer.bias, self.compute_dtype)[None, :], u)[0]
            y = ops.matmul(f, kernel) + bias
            if i > 0:
                y = tf.cast(tf.image.resize(y, size, method="bilinear"), y.dtype)
            x = y if x is None else x + y
        x = ops.relu(self.batch_norm(x, training=training))
        x = self.dropout(x, training=training)
        return ops.cast(self.classifier(x), "float32")

    def reference_call(self, features, training=None):
        """Eq. 4 as written (project, upsample, concat, fuse); for tests of :meth:`call`."""
        maps = [features[f"stage{i + 1}"] for i in range(len(self.in_channels))]
        size = tf.shape(maps[0])[1:3]
        projected = []
        for i, (layer, x) in enumerate(zip(self.linear_c, maps)):
            x = layer(x)
            if i > 0:
                x = tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)
            projected.append(x)
        x = self.linear_fuse(ops.concatenate(projected[::-1], axis=-1))
        x = ops.relu(self.batch_norm(x, training=training))
        return ops.cast(self.classifier(self.dropout(x, training=training)), "float32")

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "decoder_dim": self.decoder_dim,
            "dropout": self.dropout_rate,
            "in_channels": self.in_channels,
        }
