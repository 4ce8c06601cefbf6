"""kseg: transformer semantic segmentation in TensorFlow / Keras 3."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from kseg import models  # noqa: E402
from kseg.config import load_recipe  # noqa: E402
from kseg.models import build_model  # noqa: E402

__version__ = "0.1.0"
__all__ = ["build_model", "load_recipe", "models", "__version__"]
