"""Mix-FFN: the position-encoding-free feed-forward block of SegFormer (Sec. 3.1, Eq. 3)."""

import keras


@keras.saving.register_keras_serializable(package="kseg")
class MixFFN(keras.layers.Layer):
    """``dense2(GELU(DWConv3x3(dense1(x))))`` (SegFormer Eq. 3, without the residual).

    The zero-padded 3x3 depth-wise convolution leaks location information, replacing
    position embeddings. GELU is the exact (erf) form, as in the authors' code.
    Names follow the HF checkpoint (``mlp.dense1``, ``mlp.dwconv.dwconv``, ``mlp.dense2``).

    Input: (B, H, W, C). Output: (B, H, W, C).
    """

    def __init__(self, dim, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden_dim = dim, hidden_dim
        self.dense1 = keras.layers.Dense(hidden_dim, name="dense1")
        self.dwconv = keras.layers.DepthwiseConv2D(3, padding="same", name="dwconv")
        self.dense2 = keras.layers.Dense(dim, name="dense2")

    def build(self, input_shape):
        self.dense1.build(input_shape)
        self.dwconv.build((None, None, None, self.hidden_dim))
        self.dense2.build((None, None, None, self.hidden_dim))
        self.built = True

    def call(self, x):
        x = self.dwconv(self.dense1(x))
        return self.dense2(keras.activations.gelu(x, approximate=False))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden_dim": self.hidden_dim}
