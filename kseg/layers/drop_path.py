"""Stochastic depth (Huang et al. 2016), per sample, as in timm's ``DropPath``."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class DropPath(keras.layers.Layer):
    """Zeroes the whole residual branch of a random subset of samples while training.

    Input and output: any shape with the batch first, (B, ...). Surviving samples are
    scaled by 1 / (1 - rate) so the expectation is unchanged. Identity at inference.

    Args:
      rate: probability in [0, 1) of dropping a sample's branch.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
