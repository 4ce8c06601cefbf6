"""AdamW with parameter groups: a learning-rate multiplier on the decode head and no
weight decay on norms and biases (SegFormer's mmseg config: ``paramwise_cfg`` with
``head lr_mult=10``; norms/biases without decay as in its ``custom_keys``).

The groups live in a :class:`GroupedOptimizer` (a ``keras.optimizers.MultiOptimizer``)
that fixes two things Keras 3.15 gets wrong for us:

- ``global_clipnorm`` on a MultiOptimizer is ignored (its ``apply`` bypasses clipping),
  and set on each sub-optimizer it would clip each group by its own norm. Here the norm
  is taken over the gradients of *all* groups (``optim.clip_grad_norm``, as PyTorch's
  ``clip_grad_norm_(model.parameters())``).
- Under tf.distribute Keras clips (and checks loss-scale finiteness on) each replica's
  partial gradient before the all-reduce. Here gradients are summed over replicas first
  (once: the sub-optimizers then skip their own all-reduce), so clipping sees the global
  gradient and N replicas give the single-device update.
"""

import keras
import tensorflow as tf

from kseg.training.schedules import build_schedule

# Variable names (Keras ``variable.name``) that never get weight decay: biases,
# LayerNorm/BatchNorm scales and offsets, and position/class embeddings and tokens.
NO_DECAY_NAMES = ["bias", "gamma", "beta", "pos_embed", "cls_token", "dist_token", "query_embed"]


def _adamw(optim_cfg, learning_rate):
    opt = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=optim_cfg.weight_decay,
        beta_1=optim_cfg.beta_1,
        beta_2=optim_cfg.beta_2,
        epsilon=optim_cfg.epsilon,
        global_clipnorm=None,
    )
    if optim_cfg.no_decay_on_norm_bias:
        opt.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return opt


def _sgd(optim_cfg, learning_rate):
    """SGD with momentum (SETR / Segmenter papers). Keras applies ``weight_decay``
    decoupled (``w -= lr * wd * w``), not PyTorch's L2-in-the-gradient; the papers use 0."""
    opt = keras.optimizers.SGD(learning_rate=learning_rate, momentum=optim_cfg.momentum,
                               weight_decay=optim_cfg.weight_decay or None, global_clipnorm=None)
    if optim_cfg.weight_decay and optim_cfg.no_decay_on_norm_bias:
        opt.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return opt


OPTIMIZERS = {"adamw": _adamw, "sgd": _sgd}


def _no_all_reduce(grads_and_vars):
    return list(grads_and_vars)


@keras.saving.register_keras_serializable(package="kseg")
class GroupedOptimizer(keras.optimizers.MultiOptimizer):
    """A MultiOptimizer whose gradients are all-reduced once and clipped by one global norm.

    Args:
      optimizer_map: ``keras.optimizers.OptimizerMap`` (default optimizer + regex groups).
      global_clipnorm: clip the gradients of all groups together to this global L2 norm
        (None: no clipping).
      grads_prereduced: True when the caller (kseg's train step) already summed the
        gradients over replicas; set by :func:`kseg.training.train_step.install_train_step`.
    """

    def __init__(self, optimizer_map, global_clipnorm=None, loss_scale_factor=None, name=None):
        super().__init__(optimizer_map, loss_scale_factor=loss_scale_factor, name=name)
        self.clip_norm = None if not global_clipnorm else float(global_clipnorm)
        self.grads_prereduced = False
        self._patch_sub_optimizers()

    def _patch_sub_optimizers(self):
        # Sub-optimizers receive gradients already summed over replicas (see apply).
        for opt in self._inner_optimizers:
            object.__setattr__(opt, "_all_reduce_sum_gradients", _no_all_reduce)

    def build(self, var_list):
        super().build(var_list)
        self._patch_sub_optimizers()

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        ctx = tf.distribute.get_replica_context()
        if (not self.grads_prereduced and ctx is not None
                and tf.distribute.get_strategy().num_replicas_in_sync > 1):
            grads = all_reduce_gradients(grads)
        if self.clip_norm:
            grads = clip_by_global_norm(grads, self.clip_norm)
        super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "global_clipnorm": self.clip_norm}


def all_reduce_gradients(grads):
    """Sums a list of per-replica gradients (None entries kept) over all replicas."""
    ctx = tf.distribute.get_replica_context()
    present = [i for i, g in enumerate(grads) if g is not None]
    if ctx is None or not present:
        return list(grads)
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    out = list(grads)
    for i, g in zip(present, reduced):
        out[i] = g
    return out


def global_norm(grads):
    """L2 norm over every gradient of the list (float32; None entries skipped)."""
    squares = [tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads if g is not None]
    return tf.sqrt(tf.add_n(squares)) if squares else tf.constant(0.0)


def clip_by_global_norm(grads, clip_norm):
    """Scales all gradients by ``min(1, clip_norm / global_norm)`` (None entries kept)."""
    norm = global_norm(grads)
    scale = tf.minimum(1.0, clip_norm / tf.maximum(norm, 1e-12))
    return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]


def build_optimizer(optim_cfg, schedule_cfg, max_steps, head_path_pattern=None):
    """Builds the optimizer of a recipe.

    Args:
      optim_cfg: ``kseg.config.OptimConfig`` (name "adamw" or "sgd", lr, weight_decay,
        momentum (sgd), head_lr_mult).
      schedule_cfg: ``kseg.config.ScheduleConfig``; max_steps: schedule length in steps.
      head_path_pattern: regex fully matching the ``variable.path`` of head variables
        (e.g. ``"segformer/decode_head/.*"``); with ``head_lr_mult != 1`` those variables
        get a second optimizer of the same kind whose rate is ``head_lr_mult`` times larger.
    Returns: a :class:`GroupedOptimizer` (one optimizer per group; ``optim.clip_grad_norm``
      clips over all groups together).
    Raises: ValueError for an unknown ``optim.name``.
    """
    if optim_cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name: {optim_cfg.name!r} is not one of {sorted(OPTIMIZERS)}")
    make = OPTIMIZERS[optim_cfg.name]
    base = make(optim_cfg, build_schedule(schedule_cfg, optim_cfg.lr, max_steps))
    groups = {}
    if head_path_pattern is not None and optim_cfg.head_lr_mult != 1.0:
        groups[head_path_pattern] = make(
            optim_cfg, build_schedule(schedule_cfg, optim_cfg.lr * optim_cfg.head_lr_mult, max_steps))
    return GroupedOptimizer(keras.optimizers.OptimizerMap(base, groups),
                            global_clipnorm=optim_cfg.clip_grad_norm)


def optimizer_learning_rates(optimizer):
    """Current learning rate of each sub-optimizer, as Python floats (for logging)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    subs = getattr(optimizer, "optimizers", None) or [optimizer]
    rates = []
    for opt in subs:
        lr = opt.learning_rate
        rates.append(float(keras.ops.convert_to_numpy(lr)))
    return rates
