"""Colour label maps, blend them over images, and save PNGs (numpy + pillow).

Convention: ``ignore_index`` (255) pixels are black in a colour map and left unblended
(the original image shows through) in an overlay.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
from PIL import Image

from kseg.data.palettes import colorize


def _palette(palette) -> np.ndarray:
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must be [K, 3] RGB, got shape {palette.shape}")
    return palette.astype(np.uint8)


def _to_uint8_image(image) -> np.ndarray:
    """[H, W, 3] uint8 from uint8, or from float in [0, 255] (clipped, rounded)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def overlay(image, labels, palette, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """Blends a label colour map over an image.

    ``out = round((1 - alpha) * image + alpha * colour)``; ``ignore_index`` pixels keep
    the image.

    Args:
      image: [H, W, 3] RGB, uint8 or float in [0, 255].
      labels: int [H, W].
      palette: uint8 [K, 3].
      alpha: weight of the colour, in [0, 1].

    Returns:
      uint8 [H, W, 3].

    Raises:
      ValueError: shapes differ, alpha outside [0, 1], or a label out of the palette.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = _to_uint8_image(image)
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} sizes differ")
    colours = colorize(labels, palette, ignore_index).astype(np.float32)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    blend = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    ignored = labels == ignore_index
    blend[ignored] = image[ignored]
    return blend


def side_by_side(
    image, pred, gt, palette, alpha: float = 0.5, ignore_index: int = 255
) -> np.ndarray:
    """One strip ``image | prediction overlay | ground-truth overlay``: uint8 [H, 3W, 3]
    (add a batch axis for ``tf.summary.image``)."""
    image = _to_uint8_image(image)
    return np.concatenate(
        [
            image,
            overlay(image, pred, palette, alpha, ignore_index),
            overlay(image, gt, palette, alpha, ignore_index),
        ],
        axis=1,
    )


def save_png(array, path: str, palette: Optional[np.ndarray] = None) -> None:
    """Saves an array as PNG, creating folders.

    - uint8 [H, W, 3]: RGB.
    - int [H, W] label map with ``palette`` [K, 3]: mode "P" (indices kept, viewable in
      colour; index 255 = black); without palette: mode "L" (grey values = indices).

    Raises:
      ValueError: other shapes, or label values outside [0, 255].
    """
    array = np.asarray(array)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if array.ndim == 3 and array.shape[-1] == 3:
        Image.fromarray(_to_uint8_image(array)).save(path)
        return
    if array.ndim != 2:
        raise ValueError(f"save_png takes [H, W, 3] RGB or [H, W] labels, got {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"label values must be in [0, 255] for a PNG, got {array.min()}..{array.max()}"
        )
    img = Image.fromarray(array.astype(np.uint8))  # mode "L"
    if palette is not None:
        pal = np.zeros((256, 3), np.uint8)
        p = _palette(palette)[:255]
        pal[: len(p)] = p
        img.putpalette(pal.flatten().tolist())  # "L" -> "P", indices unchanged
    img.save(path)
