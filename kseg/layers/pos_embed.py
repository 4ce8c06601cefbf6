"""Resampling of learned 2-D position-embedding grids to another token grid.

ViT position embeddings are learned for one grid (e.g. 24x24 for 384 px at patch 16).
Segmentation runs at other, often non-square sizes, so the grid is resampled to the
input's token grid at run time (Segmenter Sec. 3.1 / SETR Sec. 3.1: "2-D interpolation").

The resampling is written as two small interpolation matrices, ``R_h (out_h, in_h)`` and
``R_w (out_w, in_w)``, so that ``out = R_h @ grid @ R_w^T`` per channel. The matrices are
built with TF ops from the *dynamic* output size (no Python arithmetic on symbolic shapes)
and reproduce PyTorch's ``F.interpolate(..., align_corners=False)`` exactly:

- ``"bicubic"``: Keys cubic convolution with a = -0.75 and border replication, PyTorch's
  kernel (used by Hugging Face ``interpolate_pos_encoding`` and by timm). ``tf.image.resize``
  uses a = -0.5, so it would not match converted models.
- ``"bilinear"``: half-pixel bilinear (identical to ``tf.image.resize(..., "bilinear")``),
  the mode the Segmenter paper names.

No anti-aliasing is applied when shrinking (timm's ``antialias=True`` differs there).
The same code resamples checkpoints when loading (see ``kseg.convert.vit``), so run time
and load time agree.
"""

import numpy as np
import tensorflow as tf

INTERPOLATIONS = ("bicubic", "bilinear")
_CUBIC_A = -0.75


def _cubic_near(x):  # |x| <= 1
    a = _CUBIC_A
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0


def _cubic_far(x):  # 1 < |x| < 2
    a = _CUBIC_A
    return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a


def interpolation_matrix(in_size, out_size, method="bicubic"):
    """(out_size, in_size) float32 matrix resampling a length-``in_size`` axis.

    Args:
      in_size: Python int (the stored grid). out_size: int or scalar int tensor (dynamic).
      method: ``"bicubic"`` or ``"bilinear"`` (PyTorch semantics, align_corners=False).
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"pos-embed interpolation must be one of {INTERPOLATIONS}, got {method!r}")
    out_size = tf.cast(out_size, tf.int32)
    scale = float(in_size) / tf.cast(out_size, tf.float32)
    src = (tf.cast(tf.range(out_size), tf.float32) + 0.5) * scale - 0.5
    if method == "bilinear":
        src = tf.maximum(src, 0.0)
    base = tf.floor(src)
    t = (src - base)[:, None]
    base = tf.cast(base, tf.int32)
    if method == "bilinear":
        offsets, weights = (0, 1), (1.0 - t, t)
    else:
        offsets = (-1, 0, 1, 2)
        weights = (_cubic_far(t + 1.0), _cubic_near(t), _cubic_near(1.0 - t), _cubic_far(2.0 - t))
    matrix = 0.0
    for off, w in zip(offsets, weights):
        idx = tf.clip_by_value(base + off, 0, in_size - 1)
        matrix = matrix + w * tf.one_hot(idx, in_size, dtype=tf.float32)
    return matrix


def resample_grid(grid, out_h, out_w, method="bicubic"):
    """Resamples a (h, w, C) grid to (out_h, out_w, C), float32.

    ``h``/``w`` must be static; ``out_h``/``out_w`` may be tensors.
    """
    grid = tf.convert_to_tensor(grid, tf.float32)
    in_h, in_w = int(grid.shape[0]), int(grid.shape[1])
    rows = interpolation_matrix(in_h, out_h, method)
    cols = interpolation_matrix(in_w, out_w, method)
    x = tf.tensordot(rows, grid, axes=1)  # (out_h, in_w, C)
    return tf.einsum("pw,owc->opc", cols, x)


def resample_pos_embed(pos_embed, new_grid, old_grid=None, num_prefix_tokens=1, method="bicubic"):
    """Numpy helper for checkpoints: (1, prefix + h*w, C) -> (1, prefix + H*W, C).

    Args:
      pos_embed: array with ``num_prefix_tokens`` leading (class/distillation) positions
        followed by a row-major ``old_grid`` grid. old_grid: (h, w); default square.
      new_grid: (H, W). Returns: float32 numpy array; prefix positions are kept as is.
    """
    pos_embed = np.asarray(pos_embed, np.float32)
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    if old_grid is None:
        side = int(round(patches.shape[0] ** 0.5))
        if side * side != patches.shape[0]:
            raise ValueError(
                f"position embedding with {patches.shape[0]} patch positions is not a square grid; pass old_grid"
            )
        old_grid = (side, side)
    old_grid, new_grid = tuple(int(v) for v in old_grid), tuple(int(v) for v in new_grid)
    if old_grid == new_grid:
        return pos_embed
    grid = patches.reshape(old_grid + (patches.shape[-1],))
    out = resample_grid(grid, new_grid[0], new_grid[1], method).numpy().reshape(1, -1, patches.shape[-1])
    return np.concatenate([prefix, out], axis=1)
