"""AdamW with parameter groups: a learning-rate multiplier on the decode head and no
weight decay on norms and biases (SegFormer's mmseg config: ``paramwise_cfg`` with
``head lr_mult=10``; norms/biases without decay as in its ``custom_keys``)."""

import keras

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


def build_optimizer(optim_cfg, schedule_cfg, max_steps, head_path_pattern=None):
    """Builds the optimizer of a recipe.

    Args:
      optim_cfg: ``kseg.config.OptimConfig`` (name "adamw", lr, weight_decay, head_lr_mult).
      schedule_cfg: ``kseg.config.ScheduleConfig``; max_steps: schedule length in steps.
      head_path_pattern: regex fully matching the ``variable.path`` of head variables
        (e.g. ``"segformer/decode_head/.*"``); with ``head_lr_mult != 1`` those variables
        get a second AdamW whose rate is ``head_lr_mult`` times larger, through
        ``keras.optimizers.MultiOptimizer``.
    Returns: a Keras optimizer.
    Raises: ValueError for an unknown ``optim.name``.
    """
    if optim_cfg.name != "adamw":
        raise ValueError(f"optim.name: only 'adamw' is supported, got {optim_cfg.name!r}")
    base = _adamw(optim_cfg, build_schedule(schedule_cfg, optim_cfg.lr, max_steps))
    if head_path_pattern is None or optim_cfg.head_lr_mult == 1.0:
        opt = base
    else:
        head = _adamw(optim_cfg, build_schedule(schedule_cfg, optim_cfg.lr * optim_cfg.head_lr_mult, max_steps))
        opt = keras.optimizers.MultiOptimizer(
            keras.optimizers.OptimizerMap(base, {head_path_pattern: head})
        )
    if optim_cfg.clip_grad_norm:
        opt.global_clipnorm = optim_cfg.clip_grad_norm
    return opt


def optimizer_learning_rates(optimizer):
    """Current learning rate of each sub-optimizer, as Python floats (for logging)."""
    subs = getattr(optimizer, "optimizers", None) or [optimizer]
    rates = []
    for opt in subs:
        lr = opt.learning_rate
        rates.append(float(keras.ops.convert_to_numpy(lr)))
    return rates
