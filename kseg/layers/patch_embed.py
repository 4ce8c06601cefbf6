"""Overlapping patch embedding (SegFormer Sec. 3.1, "Overlapped Patch Merging")."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class OverlapPatchEmbed(keras.layers.Layer):
    """Strided convolution with symmetric zero padding ``patch_size // 2``, then LayerNorm.

    Stage 1 uses K=7, S=4, P=3; stages 2-4 K=3, S=2, P=1 (SegFormer Sec. 3.1). The
    padding is symmetric as in the PyTorch reference (Keras "same" pads asymmetrically),
    so the output grid is ceil(H / S) x ceil(W / S) and aligned with the reference.
    Names follow the HF checkpoint (``patch_embeddings.{i}.proj``, ``.layer_norm``).

    Input: (B, H, W, C_in). Output: (B, ceil(H/S), ceil(W/S), dim).
    """

    def __init__(self, dim, patch_size, stride, norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.patch_size, self.stride, self.norm_epsilon = dim, patch_size, stride, norm_epsilon
        self.proj = keras.layers.Conv2D(dim, patch_size, strides=stride, name="proj")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=norm_epsilon, name="layer_norm")

    def build(self, input_shape):
        self.proj.build(input_shape)
        self.layer_norm.build((None, None, None, self.dim))
        self.built = True

    def call(self, x):
        p = self.patch_size // 2
        x = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        return self.layer_norm(self.proj(x))

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "patch_size": self.patch_size,
            "stride": self.stride,
            "norm_epsilon": self.norm_epsilon,
        }
