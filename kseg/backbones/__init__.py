"""Encoders. Each returns a dict of NHWC feature maps keyed by stage."""

from kseg.backbones.mit import MIT_VARIANTS, MiT, MiTBlock
from kseg.backbones.vit import VIT_VARIANTS, ViT, ViTPatchEmbed
from kseg.backbones.resnet import RESNET_VARIANTS, ResNet
from kseg.backbones.swin import SWIN_VARIANTS, SwinTransformer
