"""``train.precision``: float32, mixed_float16 or mixed_bfloat16 (Keras dtype policies).

Under a mixed policy layers compute in float16/bfloat16 with float32 variables. The
numerically sensitive parts stay float32 (DESIGN "Conventions"): attention softmax
(``kseg.layers.attention``, window attention, the SegViT/MaskFormer heads), LayerNorm
and BatchNorm statistics (Keras computes them in float32 for half inputs), the heads'
output logits, losses (they cast logits to float32) and matcher costs.

``mixed_float16`` trains with dynamic loss scaling: ``Model.compile`` wraps the optimizer
in ``keras.optimizers.LossScaleOptimizer`` (scale 2**15, halved on a non-finite gradient,
doubled after 2000 finite steps; a step with a non-finite gradient is skipped). kseg's
train step sums gradients over replicas before that optimizer checks them, so every
replica takes the same decision. ``mixed_bfloat16`` has float32's exponent range and
needs no scaling; it is the fast policy on CPUs with AMX/AVX512-BF16 and on TPUs.
"""

import keras

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def set_precision(name: str) -> str:
    """Sets the global Keras dtype policy (before models are built); returns its name.

    Raises: ValueError naming the valid values for an unknown ``train.precision``.
    """
    if name not in PRECISIONS:
        raise ValueError(f"train.precision={name!r} is not supported; valid: {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_dtype_policy(name)
    return name


def uses_loss_scaling(optimizer) -> bool:
    """True when ``optimizer`` is (wrapped in) a dynamic LossScaleOptimizer."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
