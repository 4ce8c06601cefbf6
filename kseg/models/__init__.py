"""Model families and the variant registry."""

from kseg.models.registry import (
    build_from_recipe,
    build_model,
    list_variants,
    load_checkpoint,
    register_variant,
    variant_spec,
)
from kseg.models.segmentor import Segmentor
from kseg.models.mask_classification import MaskClassificationSegmentor
from kseg.models.segformer import SegFormer
from kseg.models.segmenter import Segmenter
from kseg.models.setr import SETR
from kseg.models.maskformer import MaskFormer
from kseg.models.segvit import SegViT

# Registers the optimizer and schedule classes a compiled ``.keras`` file refers to, so it
# loads in a fresh process.
from kseg.training import optimizer as _optimizer, schedules as _schedules  # noqa: E402,F401
