"""Pixel statistics that pretrained weights were trained with (RGB, pixel units 0..255).

Normalisation belongs to the weights (timm's ``_cfg(mean=, std=)``): ImageNet statistics
for MiT, Swin, ResNet and DeiT checkpoints; 127.5 / 127.5 ("inception", i.e. [-1, 1]) for
Google's ViT / AugReg checkpoints. Models normalise inside their graph with these
(``kseg.models.Segmentor.normalize``), or with a checkpoint's own ``mean``/``std``.
"""

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
INCEPTION_MEAN = (127.5, 127.5, 127.5)
INCEPTION_STD = (127.5, 127.5, 127.5)

NORMALIZATIONS = {
    "inception": (INCEPTION_MEAN, INCEPTION_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
