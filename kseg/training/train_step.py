"""kseg's training step: gradient accumulation over micro-batches, one all-reduce, one
global clip, one optimizer update.

``train.accumulate_steps = k`` splits each replica's batch into k micro-batches that run
forward and backward one after another (only one micro-batch's activations are alive at a
time), sums their gradients and applies one update. ``train.global_batch_size`` stays the
batch of one optimizer step: ``global = replicas x k x micro``. For models whose loss is a
mean over pixels and that have no BatchNorm in training mode (e.g. Segmenter, SETR with
its BN heads frozen) this is the same update as the plain batch up to float rounding;
BatchNorm layers see micro-batch statistics and set criteria normalise by each
micro-batch's mask count, as in every framework's accumulation.

Why not ``keras.optimizers.Optimizer(gradient_accumulation_steps=k)``: Keras 3.15's
``MultiOptimizer.apply`` (kseg's parameter groups) bypasses it, it accumulates each
replica's *un-reduced* gradient, its update runs inside a ``cond`` branch that needs a
``merge_call`` under MirroredStrategy on CPU/multi-worker, and every micro-step costs one
``fit`` step (the schedule and logging would count micro-steps).

The gradients are summed over replicas here, explicitly and once, before the optimizer
sees them, so ``LossScaleOptimizer``'s finiteness check and the global-norm clip in
:class:`kseg.training.optimizer.GroupedOptimizer` act on the global gradient.
"""

import keras
import tensorflow as tf
from keras.src import tree
from keras.src.losses import loss as loss_module
from keras.src.trainers.data_adapters import data_adapter_utils

from kseg.training.optimizer import GroupedOptimizer, all_reduce_gradients


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def make_train_step(model, accumulate_steps=1):
    """Returns ``train_step(data) -> logs`` for ``model`` (compiled) as Keras' TF trainer
    calls it (inside ``strategy.run``)."""
    k = int(accumulate_steps)
    if k < 1:
        raise ValueError(f"train.accumulate_steps must be >= 1, got {k}")

    def train_step(data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        optimizer = model.optimizer
        variables = list(model.trainable_weights)
        first = next(t for t in tree.flatten(x) if t is not None)
        micro = tf.shape(first)[0] // k
        total = [None] * len(variables)
        logs = None
        deps = []
        for i in range(k):
            def part(t, i=i):
                if t is None or k == 1:
                    return t
                with tf.control_dependencies(deps):  # micro-batches run one after another
                    return tf.identity(t[i * micro:(i + 1) * micro])

            xs, ys, ws = tree.map_structure(part, x), tree.map_structure(part, y), (
                None if sample_weight is None else tree.map_structure(part, sample_weight))
            with tf.GradientTape() as tape:
                y_pred = model(xs, training=True)
                loss = model._compute_loss(x=xs, y=ys, y_pred=y_pred, sample_weight=ws, training=True)
                model._loss_tracker.update_state(
                    loss_module.unscale_loss_for_distribution(loss),
                    sample_weight=tf.shape(next(t for t in tree.flatten(xs) if t is not None))[0])
                scaled = optimizer.scale_loss(loss / k if k > 1 else loss)
            grads = tape.gradient(scaled, variables)
            total = [g if t is None else (t if g is None else t + g) for t, g in zip(total, grads)]
            deps = [g for g in total if g is not None]
            logs = model.compute_metrics(xs, ys, y_pred, sample_weight=ws)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            total = all_reduce_gradients(total)
        optimizer.apply(total, variables)
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 reduces step outputs over workers with reduce("MEAN", v, axis=0),
            # which fails on scalars: hand it rank-1 values (keras-team/keras#20585).
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    return train_step


def install_train_step(model, accumulate_steps=1):
    """Makes ``model.fit`` use :func:`make_train_step` (call after ``compile``).

    The model's :class:`GroupedOptimizer` is told that gradients arrive summed over
    replicas. Returns the model.
    """
    inner = _inner(model.optimizer)
    if isinstance(inner, GroupedOptimizer):
        inner.grads_prereduced = True
    elif tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise ValueError("install_train_step needs kseg's GroupedOptimizer under a multi-replica "
                         "strategy (it sums gradients over replicas itself)")
    model.train_step = make_train_step(model, accumulate_steps)
    model.train_function = None  # rebuild with the new step
    return model
