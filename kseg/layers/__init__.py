"""Reusable Keras layers shared by the kseg backbones and heads."""

from kseg.layers.attention import EfficientSelfAttention, scaled_dot_product_attention
from kseg.layers.drop_path import DropPath
from kseg.layers.mix_ffn import MixFFN
from kseg.layers.patch_embed import OverlapPatchEmbed
