"""Checkpoint converters: foreign key layouts -> kseg variables (renames plus transposes).

- :func:`load_hf_segformer`: Hugging Face SegFormer / MiT checkpoints (original Hub
  layout and transformers 5.x layout) into ``segformer_mit_b*`` models.
- :func:`load_vit`: ViT / DeiT encoders (timm, Hugging Face, Google ``.npz``, mmseg).
- :func:`load_segmenter`: Segmenter checkpoints (authors' rstrudel/segmenter layout,
  MMSegmentation 1.x) or a bare ViT into the encoder.
- :func:`load_setr`: SETR checkpoints (authors' fudan-zvg/SETR layout, MMSegmentation 1.x)
  or a bare ViT into the encoder.
- :mod:`kseg.convert.common`: reading state dicts (safetensors / torch pickles / dicts),
  layout transposes, shape-checked assignment and the :class:`LoadReport`.

Command line (SegFormer, Segmenter, SETR, SegViT): ``python tools/convert_weights.py SRC
DST.weights.h5 --variant V``.
"""

from kseg.convert.common import LoadReport, read_state_dict
from kseg.convert.hf_segformer import describe_checkpoint, load_hf_segformer

__all__ = ["LoadReport", "describe_checkpoint", "load_hf_segformer", "read_state_dict"]

# ViT / DeiT (timm, Hugging Face, Google .npz, mmseg) into kseg ViT encoders (Segmenter, SETR).
from kseg.convert.vit import load_vit  # noqa: E402

__all__ += ["load_vit"]

# Segmenter and SETR (authors' and MMSegmentation layouts).
from kseg.convert.segmenter import load_segmenter  # noqa: E402
from kseg.convert.setr import load_setr  # noqa: E402

__all__ += ["load_segmenter", "load_setr"]

# SegViT (authors' layout), MaskFormer (transformers, detectron2), Swin and ResNet backbones.
from kseg.convert.d2_maskformer import load_d2_maskformer  # noqa: E402
from kseg.convert.hf_maskformer import load_hf_maskformer  # noqa: E402
from kseg.convert.resnet import load_resnet  # noqa: E402
from kseg.convert.segvit import load_segvit  # noqa: E402
from kseg.convert.swin import load_swin  # noqa: E402

__all__ += ["load_d2_maskformer", "load_hf_maskformer", "load_resnet", "load_segvit", "load_swin"]
