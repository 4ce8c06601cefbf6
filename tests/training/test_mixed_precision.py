"""Every family trains a few steps under mixed_float16 (dynamic loss scaling) and
mixed_bfloat16 with finite losses and finite gradients; the fp32 islands hold."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.config import OptimConfig, ScheduleConfig
from kseg.training.optimizer import GroupedOptimizer
from kseg.training.precision import set_precision
from kseg.training.train_step import install_train_step
from tests.training import families


@pytest.fixture
def policy():
    def use(name):
        set_precision(name)

    yield use
    keras.mixed_precision.set_dtype_policy("float32")


def _data(n=2, size=(64, 64), k=families.NUM_CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, *size, 3)).astype("float32")
    labels = rng.integers(0, k, (n, *size)).astype("int32")
    labels[:, :4] = 255
    return images, labels


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("family", list(families.FAMILIES))
def test_family_trains_finite_under_mixed_precision(family, precision, policy):
    policy(precision)
    keras.utils.set_random_seed(0)
    model = families.build(family)
    assert model.compute_dtype == precision.split("_")[1]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    model.compile(optim=OptimConfig(lr=1e-3, head_lr_mult=10.0), schedule=ScheduleConfig(warmup_steps=0),
                  max_steps=10)
    install_train_step(model)
    images, labels = _data()
    steps = 6
    history = model.fit(images, labels, batch_size=2, epochs=steps, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])), history.history["loss"]
    applied = int(model.optimizer.iterations)
    if precision == "mixed_float16":  # dynamic loss scaling around the parameter groups
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(model.optimizer.inner_optimizer, GroupedOptimizer)
        # A step whose scaled float16 gradient overflows is skipped and halves the scale
        # (2**15 at the start); the others are applied.
        skipped = steps - applied
        assert float(model.optimizer.dynamic_scale) == 2.0 ** (15 - skipped)
        assert applied >= 1
    else:
        assert applied == steps

    # Gradients of the float32 loss (unscaled) are finite, and the outputs the loss sees
    # are float32 whatever the policy.
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        loss = model.compute_loss(x=images, y=labels, y_pred=outputs)
    grads = tape.gradient(loss, model.trainable_variables)
    assert loss.dtype == tf.float32 and np.isfinite(float(loss))
    present = [tf.convert_to_tensor(g) for g in grads if g is not None]
    assert len(present) >= 0.9 * len(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in present)
    for t in tf.nest.flatten(outputs):
        assert t.dtype == tf.float32
    for w in model.weights:
        assert np.all(np.isfinite(np.asarray(w))), w.path


def test_unknown_precision_names_valid_values(policy):
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        set_precision("float16")
