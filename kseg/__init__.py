"""kseg: transformer semantic segmentation in TensorFlow / Keras 3."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ INFO lines at start-up (CPU features, ...); its warnings and errors stay.
# Set before TensorFlow loads; a user's own TF_CPP_MIN_LOG_LEVEL wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from kseg import models  # noqa: E402
from kseg.config import load_recipe  # noqa: E402
from kseg.models import build_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build_model", "load_recipe", "models", "__version__"]
