"""Decode heads. Per-pixel heads return float32 logits at their native stride."""

from kseg.heads.segformer_head import SegFormerHead
from kseg.heads.segmenter_head import MaskTransformerHead, SegmenterLinearHead
from kseg.heads.setr_heads import SETRMLAAuxHead, SETRMLAHead, SETRMLANeck, SETRUpHead
