"""Learning-rate schedules: linear warmup followed by poly decay (mmseg semantics)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kseg")
class WarmupPolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Poly decay with a linear warmup multiplied in, as mmcv's ``PolyLrUpdaterHook``.

    ``poly(t) = (lr - min_lr) * (1 - t / max_steps) ** power + min_lr``;
    during warmup (t < warmup_steps) the rate is ``poly(t) * (1 - k)`` with
    ``k = (1 - t / warmup_steps) * (1 - warmup_ratio)``, i.e. it starts at
    ``lr * warmup_ratio`` and reaches the poly curve at ``warmup_steps``.
    SegFormer uses power 1.0 (paper Sec. 4.1); ``power=0`` gives a constant rate.

    Args:
      lr: peak learning rate (float). max_steps: total optimizer steps (int > 0).
      warmup_steps: linear warmup length in steps. warmup_ratio: start factor.
    Call: step (int or scalar tensor) -> float32 scalar.
    """

    def __init__(self, lr, max_steps, warmup_steps=0, warmup_ratio=1e-6, power=1.0, min_lr=0.0):
        if max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {max_steps}")
        self.lr, self.max_steps, self.warmup_steps = float(lr), int(max_steps), int(warmup_steps)
        self.warmup_ratio, self.power, self.min_lr = float(warmup_ratio), float(power), float(min_lr)

    def __call__(self, step):
        t = ops.cast(step, "float32")
        progress = ops.minimum(t / self.max_steps, 1.0)
        lr = (self.lr - self.min_lr) * ops.power(1.0 - progress, self.power) + self.min_lr
        if self.warmup_steps > 0:
            k = (1.0 - ops.minimum(t / self.warmup_steps, 1.0)) * (1.0 - self.warmup_ratio)
            lr = lr * (1.0 - k)
        return lr

    def get_config(self):
        return {
            "lr": self.lr,
            "max_steps": self.max_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_ratio": self.warmup_ratio,
            "power": self.power,
            "min_lr": self.min_lr,
        }


def build_schedule(schedule_cfg, lr, max_steps):
    """A :class:`WarmupPolyDecay` from a ``kseg.config.ScheduleConfig``."""
    if schedule_cfg.name not in ("poly", "constant"):
        raise ValueError(f"schedule.name must be poly or constant, got {schedule_cfg.name!r}")
    power = 0.0 if schedule_cfg.name == "constant" else schedule_cfg.power
    return WarmupPolyDecay(
        lr, max_steps, schedule_cfg.warmup_steps, schedule_cfg.warmup_ratio, power, schedule_cfg.min_lr
    )
