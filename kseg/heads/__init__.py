"""Decode heads. Per-pixel heads return float32 logits at their native stride."""

from kseg.heads.segformer_head import SegFormerHead
