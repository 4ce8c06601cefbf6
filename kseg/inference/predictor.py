"""Whole-image and sliding-window inference at the original image size.

Follows mmseg's ``EncoderDecoder.whole_inference`` / ``slide_inference`` (with the test
pipeline's ``Resize(scale, keep_ratio=True)`` in front):

1. optional resize of the image to fit inside ``scale`` = (long, short), keeping the
   aspect ratio: factor = min(long / max(H, W), short / min(H, W)), new size =
   int(size * factor + 0.5) (mmcv ``rescale_size``), bilinear (half-pixel, no antialias);
2. ``whole``: one forward pass, logits resized to the resized image size;
   ``slide``: windows of ``crop_size`` every ``stride``, the last one aligned to the
   border, each window's logits resized to the window size and summed into the
   image, then divided by the number of windows covering each pixel (logits averaged);
3. logits resized bilinearly (align_corners=False) to the original (H, W).

Everything is TF ops on dynamic shapes: both modes run eagerly and inside
``tf.function`` with unknown H, W (slide uses a ``tf.while_loop`` over the windows).
The result is logits, not probabilities; softmax does not change the argmax.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import tensorflow as tf

from kseg.data.transforms import rescale_size

MODES = ("whole", "slide", "ms_flip")


def slide_grid(height, width, crop_size: Sequence[int], stride: Sequence[int]):
    """Number of windows (h_grids, w_grids) of mmseg ``slide_inference``.

    ``grids = max(size - crop + stride - 1, 0) // stride + 1`` per axis; works on ints
    and on int32 tensors.
    """
    (ch, cw), (sh, sw) = crop_size, stride
    if isinstance(height, int) and isinstance(width, int):
        return max(height - ch + sh - 1, 0) // sh + 1, max(width - cw + sw - 1, 0) // sw + 1
    return (
        tf.maximum(height - ch + sh - 1, 0) // sh + 1,
        tf.maximum(width - cw + sw - 1, 0) // sw + 1,
    )


def _default_logits_fn(model) -> Callable:
    def fn(outputs):
        if isinstance(outputs, dict):
            if hasattr(model, "semantic_logits"):
                return model.semantic_logits(outputs)
            raise ValueError(
                "the model returns a dict and has no semantic_logits(); pass "
                "logits_fn=lambda outputs: <[B, h, w, K] logits>"
            )
        return outputs

    return fn


def _forward(model, images, size, logits_fn):
    """Model logits float32 [B, size[0], size[1], K] (resized bilinearly)."""
    logits = tf.cast(logits_fn(model(images, training=False)), tf.float32)
    return tf.image.resize(logits, size, method="bilinear")


def _slide(model, images, crop_size, stride, logits_fn):
    """mmseg ``slide_inference`` on float32 [B, H, W, 3]: averaged logits [B, H, W, K]."""
    ch, cw = int(crop_size[0]), int(crop_size[1])
    sh, sw = int(stride[0]), int(stride[1])
    if min(ch, cw, sh, sw) <= 0:
        raise ValueError(f"crop_size {crop_size} and stride {stride} must be positive")
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    h_grids, w_grids = slide_grid(h, w, (ch, cw), (sh, sw))

    def window(i):
        y2 = tf.minimum((i // w_grids) * sh + ch, h)
        x2 = tf.minimum((i % w_grids) * sw + cw, w)
        y1, x1 = tf.maximum(y2 - ch, 0), tf.maximum(x2 - cw, 0)
        crop = images[:, y1:y2, x1:x2, :]
        logits = _forward(model, crop, tf.stack([y2 - y1, x2 - x1]), logits_fn)
        pad = tf.stack([[0, 0], [y1, h - y2], [x1, w - x2], [0, 0]])
        ones = tf.ones(tf.stack([1, y2 - y1, x2 - x1, 1]), tf.float32)
        return tf.pad(logits, pad), tf.pad(ones, pad)

    # The first window fixes the number of classes K; the loop adds the others.
    preds, count = window(tf.constant(0))
    static = images.shape[:3].concatenate(preds.shape[-1:])
    preds = tf.ensure_shape(preds, static)

    def body(i, preds, count):
        p, c = window(i)
        return i + 1, tf.ensure_shape(preds + p, static), count + c

    _, preds, count = tf.while_loop(
        lambda i, *_: i < h_grids * w_grids,
        body,
        (tf.constant(1), preds, count),
        shape_invariants=(tf.TensorShape([]), static, tf.TensorShape([1, None, None, 1])),
        parallel_iterations=1,  # one window in flight: bounded memory
    )
    return preds / count


def _single_scale(model, images, mode, scale, crop_size, stride, logits_fn, ratio=None):
    """whole / slide logits [B, H, W, K] at the original size of float32 ``images``.

    ``ratio`` (ms_flip) multiplies ``scale`` as mmseg's ``img_ratios`` do; without a
    ``scale`` it multiplies the original size.
    """
    ori_size = tf.shape(images)[1:3]
    resized = scale is not None or ratio is not None
    if scale is not None:
        new_h, new_w = rescale_size(ori_size[0], ori_size[1], scale, 1.0 if ratio is None else ratio)
        images = tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear")
    elif ratio is not None:
        new_size = tf.cast(tf.round(tf.cast(ori_size, tf.float32) * ratio), tf.int32)
        images = tf.image.resize(images, tf.maximum(new_size, 1), method="bilinear")
    if mode == "whole":
        logits = _forward(model, images, tf.shape(images)[1:3], logits_fn)
    else:
        logits = _slide(model, images, crop_size, stride, logits_fn)
    if resized:  # mmseg: logits at the resized size, then to ori_shape
        logits = tf.image.resize(logits, ori_size, method="bilinear")
    return logits


def _multi_scale_flip(model, images, inner_mode, scale, crop_size, stride, logits_fn, ratios, flip):
    """mmseg ``aug_test``: softmax probabilities averaged over ratios (and flips)."""
    if inner_mode not in ("whole", "slide"):
        raise ValueError(f"ms_inner_mode must be whole or slide, got {inner_mode!r}")
    total, count = None, 0
    for ratio in ratios:
        for flipped in ((False, True) if flip else (False,)):
            x = images[:, :, ::-1, :] if flipped else images
            probs = tf.nn.softmax(
                _single_scale(model, x, inner_mode, scale, crop_size, stride, logits_fn, float(ratio)))
            probs = probs[:, :, ::-1, :] if flipped else probs
            total = probs if total is None else total + probs
            count += 1
    return total / count


def predict_logits(
    model,
    images,
    mode: str = "whole",
    scale: Optional[Sequence[int]] = None,
    crop_size: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    num_classes: Optional[int] = None,
    logits_fn: Optional[Callable] = None,
    ms_ratios: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    ms_flip: bool = True,
    ms_inner_mode: str = "whole",
) -> tf.Tensor:
    """Per-pixel logits at the original image size (mmseg whole / slide inference).

    Args:
      model: Keras model, ``model(images, training=False)`` -> logits [B, h, w, K] at
        any stride (or a dict, see ``logits_fn``).
      images: [B, H, W, 3] RGB in [0, 255], any dtype (cast to float32), or [H, W, 3].
      mode: ``"whole"`` (one pass), ``"slide"`` (windows, overlapping logits averaged) or
        ``"ms_flip"`` (mmseg ``aug_test``: ``ms_inner_mode`` inference at every ratio of
        ``ms_ratios`` (scaling ``scale``, or the original size when ``scale`` is None),
        also on the horizontally flipped image when ``ms_flip``; the softmax probabilities
        are averaged at the original size). Segmenter/SETR/MaskFormer report
        ratios 0.5-1.75 with flip.
      scale: (long, short) edge bound of the keep-ratio resize before inference; None
        keeps the original size.
      crop_size: slide window (H, W) in pixels (of the resized image).
      stride: slide step (H, W) in pixels.
      num_classes: optional K, checked against the model output's last dimension.
      logits_fn: maps the model output to logits [B, h, w, K]. Default: identity for a
        tensor; ``model.semantic_logits(outputs)`` for a dict (mask classification).

    Returns:
      float32 [B, H, W, K] at the original H, W ([H, W, K] for a single [H, W, 3] image):
      logits (not softmax) for whole/slide, mean softmax probabilities for ms_flip.

    Raises:
      ValueError: unknown ``mode``, non-positive crop/stride, or a dict output without a
        way to turn it into logits.
      tf.errors.InvalidArgumentError: K differs from ``num_classes``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; valid: {', '.join(MODES)}")
    logits_fn = logits_fn or _default_logits_fn(model)
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
    images = tf.cast(images, tf.float32)
    if mode == "ms_flip":
        logits = _multi_scale_flip(model, images, ms_inner_mode, scale, crop_size, stride, logits_fn,
                                   ms_ratios, ms_flip)
    else:
        logits = _single_scale(model, images, mode, scale, crop_size, stride, logits_fn)
    if num_classes is not None:
        tf.debugging.assert_equal(
            tf.shape(logits)[-1],
            int(num_classes),
            message=f"the model's number of classes differs from num_classes={num_classes}",
        )
    return logits[0] if single else logits


def predict_labels(model, images, **kwargs) -> tf.Tensor:
    """``argmax`` of :func:`predict_logits` (same arguments): int32 [B, H, W] (or [H, W])."""
    return tf.argmax(predict_logits(model, images, **kwargs), axis=-1, output_type=tf.int32)
