"""Optimisers, schedules and the training loop pieces."""

from kseg.training.optimizer import build_optimizer
from kseg.training.schedules import WarmupPolyDecay, build_schedule
