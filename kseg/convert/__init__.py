"""Checkpoint converters: foreign key layouts -> kseg variables (renames plus transposes).

- :func:`load_hf_segformer`: Hugging Face SegFormer / MiT checkpoints (original Hub
  layout and transformers 5.x layout) into ``segformer_mit_b*`` models.
- :mod:`kseg.convert.common`: reading state dicts (safetensors / torch pickles / dicts),
  layout transposes, shape-checked assignment and the :class:`LoadReport`.

Command line: ``python tools/convert_weights.py SRC DST.weights.h5 --variant V``.
"""

from kseg.convert.common import LoadReport, read_state_dict
from kseg.convert.hf_segformer import describe_checkpoint, load_hf_segformer

__all__ = ["LoadReport", "describe_checkpoint", "load_hf_segformer", "read_state_dict"]

# ViT / DeiT (timm, Hugging Face, Google .npz) into kseg ViT encoders (Segmenter, SETR).
from kseg.convert.vit import load_vit  # noqa: E402

__all__ += ["load_vit"]
