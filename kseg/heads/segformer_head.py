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
        self.batch_norm = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="batch_norm")
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
        x = self.dropout(x, training=training)
        return ops.cast(self.classifier(x), "float32")

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "decoder_dim": self.decoder_dim,
            "dropout": self.dropout_rate,
            "in_channels": self.in_channels,
        }
