"""Reusable Keras layers shared by the kseg backbones and heads."""

from kseg.layers.attention import EfficientSelfAttention, scaled_dot_product_attention
from kseg.layers.drop_path import DropPath
from kseg.layers.mix_ffn import MixFFN
from kseg.layers.patch_embed import OverlapPatchEmbed
from kseg.layers.attention import merge_heads, split_heads
from kseg.layers.pos_embed import interpolation_matrix, resample_grid, resample_pos_embed
from kseg.layers.vit_block import ViTAttention, ViTBlock, ViTMlp
