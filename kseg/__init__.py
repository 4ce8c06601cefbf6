"""kseg: transformer semantic segmentation in TensorFlow / Keras 3."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ INFO lines at start-up (CPU features, ...); its warnings and errors stay.
# Set before TensorFlow loads; a user's own TF_CPP_MIN_LOG_LEVEL wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from kseg import models
from kseg.config import load_recipe
from kseg.models import build_model

__version__ = "0.1.0"
__all__ = ["__version__", "build_model", "from_pretrained", "load_recipe", "models"]


def from_pretrained(name_or_path, num_classes=None, **kwargs):
    """A kseg model with pretrained weights: a preset, Hub id, URL or local checkpoint
    (:func:`kseg.pretrained.from_pretrained`, which documents every argument)."""
    from kseg.pretrained import from_pretrained as load

    return load(name_or_path, num_classes=num_classes, **kwargs)
