"""Checkpoint converters: foreign key layouts -> kseg variables (renames plus transposes).

A converter is a family's key map, registered with the family (:mod:`kseg.convert.loader`):

============  =========================================================================
family        module (layouts)
============  =========================================================================
segformer     :mod:`~kseg.convert.hf_segformer` (Hugging Face SegFormer / MiT, both layouts)
segmenter     :mod:`~kseg.convert.segmenter` (rstrudel/segmenter, MMSegmentation)
setr          :mod:`~kseg.convert.setr` (fudan-zvg/SETR, MMSegmentation)
segvit        :mod:`~kseg.convert.segvit` (zbwxp/SegVit)
maskformer    :mod:`~kseg.convert.maskformer` (transformers, detectron2; Swin / ResNet)
============  =========================================================================

Backbone key maps shared by them: :mod:`~kseg.convert.vit` (timm / HF / Google ``.npz`` /
mmseg ViT and DeiT), :mod:`~kseg.convert.swin`, :mod:`~kseg.convert.resnet`. One loader
(:func:`~kseg.convert.loader.apply_binding`) does the checks, the assignment and the
:class:`LoadReport`; :func:`load` reads, binds and loads for any registered family;
:mod:`kseg.convert.io` reads every container (safetensors, PyTorch pickles, ``.npz``,
detectron2 ``.pkl``, sharded folders).

Command line: ``python tools/convert_weights.py SRC DST.weights.h5 --variant V``; in Python,
``kseg.from_pretrained(name_or_path)``.
"""

from kseg.convert import hf_segformer, maskformer, segmenter, segvit, setr  # noqa: F401  (register)
from kseg.convert.common import LoadReport, ShapeMismatchError
from kseg.convert.d2_maskformer import load_d2_maskformer
from kseg.convert.hf_maskformer import load_hf_maskformer
from kseg.convert.hf_segformer import describe_checkpoint, load_hf_segformer
from kseg.convert.io import read_state_dict
from kseg.convert.loader import (
    Binding,
    Converter,
    apply_binding,
    converter_for,
    detect_family,
    get_converter,
    list_converters,
    load,
    register_converter,
)
from kseg.convert.resnet import load_resnet
from kseg.convert.segmenter import load_segmenter
from kseg.convert.segvit import load_segvit
from kseg.convert.setr import load_setr
from kseg.convert.swin import load_swin
from kseg.convert.vit import load_vit

__all__ = [
    "Binding", "Converter", "LoadReport", "ShapeMismatchError", "apply_binding", "converter_for",
    "describe_checkpoint", "detect_family", "get_converter", "list_converters", "load", "load_d2_maskformer",
    "load_hf_maskformer", "load_hf_segformer", "load_resnet", "load_segmenter", "load_segvit", "load_setr",
    "load_swin", "load_vit", "read_state_dict", "register_converter",
]
