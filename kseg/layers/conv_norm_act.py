"""Convolution + normalisation (+ activation) in detectron2's ``Conv2d(norm=...)`` layout.

detectron2 attaches the norm to the convolution (``res2.0.conv1.weight`` and
``res2.0.conv1.norm.{weight,bias,running_mean,running_var}``), so this layer owns its
``kernel`` directly and a child ``norm``: Keras paths ``.../conv1/kernel`` and
``.../conv1/norm/gamma`` mirror the checkpoint keys.

Padding is explicit and symmetric (PyTorch ``padding=k // 2``), not Keras ``"same"``
(which pads stride-2 convolutions asymmetrically and would shift every feature by half a
pixel against PyTorch weights). Output size: floor((H + 2p - k) / s) + 1, i.e. ceil(H / s)
for odd k with p = k // 2.
"""

import keras
from keras import ops

NORMS = ("bn", "frozen_bn", "gn", None)


@keras.saving.register_keras_serializable(package="kseg")
class FrozenBatchNormalization(keras.layers.BatchNormalization):
    """BatchNorm with fixed statistics and affine parameters (detectron2 ``FrozenBatchNorm2d``).

    Always runs in inference mode, and stays non-trainable even when a parent sets
    ``trainable = True`` (which would otherwise un-freeze every sub-layer).
    (B, H, W, C) -> same.
    """

    def __init__(self, **kwargs):
        kwargs.pop("trainable", None)
        super().__init__(**kwargs)
        keras.layers.Layer.trainable.fset(self, False)

    @property
    def trainable(self):
        return False

    @trainable.setter
    def trainable(self, value):
        pass  # frozen by definition

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


@keras.saving.register_keras_serializable(package="kseg")
class ConvNormAct(keras.layers.Layer):
    """``act(norm(conv(x)))``. (B, H, W, C_in) -> (B, H', W', filters).

    Args:
      filters, kernel_size, strides: the convolution (square kernel).
      padding: symmetric zero padding; ``None`` = ``kernel_size // 2``.
      norm: ``"bn"`` (BatchNormalization, PyTorch epsilon 1e-5 / momentum 0.1),
        ``"frozen_bn"`` (:class:`FrozenBatchNormalization`: never updated, detectron2
        ``FrozenBatchNorm2d``), ``"gn"`` (GroupNorm,
        ``groups`` groups) or ``None`` (no norm; the conv then has a bias).
      activation: ``None`` or any Keras activation name (``"relu"``).
      use_bias: defaults to ``norm is None``.
    Raises: ValueError for an unknown ``norm``.
    """

    def __init__(self, filters, kernel_size=3, strides=1, padding=None, norm="bn", activation=None,
                 use_bias=None, groups=32, norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.padding = self.kernel_size // 2 if padding is None else int(padding)
        self.norm_type, self.activation_name, self.groups = norm, activation, groups
        self.use_bias = norm is None if use_bias is None else bool(use_bias)
        self.norm_epsilon = norm_epsilon
        self.activation = keras.activations.get(activation) if activation else None
        if norm == "bn":
            self.norm = keras.layers.BatchNormalization(epsilon=norm_epsilon, momentum=0.9, name="norm")
        elif norm == "frozen_bn":
            self.norm = FrozenBatchNormalization(epsilon=norm_epsilon, momentum=0.9, name="norm")
        elif norm == "gn":
            self.norm = keras.layers.GroupNormalization(groups, epsilon=norm_epsilon, name="norm")
        else:
            self.norm = None

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(shape=(k, k, input_shape[-1], self.filters),
                                      initializer=keras.initializers.HeNormal(), name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias") if self.use_bias else None
        if self.norm is not None:
            self.norm.build((None, None, None, self.filters))
        self.built = True

    def call(self, x, training=None):
        if self.padding:
            p = self.padding
            x = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        x = ops.conv(x, ops.cast(self.kernel, x.dtype), strides=self.strides, padding="valid")
        if self.bias is not None:
            x = x + ops.cast(self.bias, x.dtype)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return self.activation(x) if self.activation is not None else x

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding, "norm": self.norm_type,
                "activation": self.activation_name, "use_bias": self.use_bias, "groups": self.groups,
                "norm_epsilon": self.norm_epsilon}
