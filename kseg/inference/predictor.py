"""Whole-image, sliding-window and multi-scale + flip inference at the original image size.

Follows mmseg's ``EncoderDecoder.whole_inference`` / ``slide_inference`` / ``aug_test``
(with the test pipeline's ``Resize(scale, keep_ratio=True)`` in front):

1. optional resize of the image to fit inside ``scale`` = (long, short), keeping the
   aspect ratio: factor = min(long / max(H, W), short / min(H, W)), new size =
   int(size * factor + 0.5) (mmcv ``rescale_size``), bilinear (half-pixel, no antialias);
2. ``whole``: one forward pass, logits resized to the resized image size;
   ``slide``: windows of ``crop_size`` every ``stride``, the last one aligned to the
   border, each window's logits resized to the window size and summed into the
   image, then divided by the number of windows covering each pixel (logits averaged);
3. logits resized bilinearly (align_corners=False) to the original (H, W);
4. ``ms_flip``: steps 1-3 at every ratio of ``ms_ratios`` (and on the flipped image),
   softmax probabilities averaged.

Labels (:func:`predict_labels`) are the argmax of those logits (of the mean
probabilities for ``ms_flip``), smallest class index on ties. For ``whole`` and
``slide`` the last resize and the argmax go through
:func:`kseg.inference.label_map.resized_argmax`, which gives the same labels without
the full-size K-channel tensor where the logits allow.

Batching: the windows of ``slide`` (all of one size) go through the model
``window_batch`` at a time, and ``ms_flip`` runs each image with its flipped copy in
one batch. The sums are taken in mmseg's order; a batched forward pass can differ
from one-at-a-time passes by float rounding (matrix-product blocking), ~1e-6 of the
logits (``window_batch=1`` reproduces the one-at-a-time logits).

Everything is TF ops on dynamic shapes: all modes run eagerly and inside
``tf.function`` with unknown H, W (slide uses ``tf.while_loop`` over the windows).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence

import tensorflow as tf

from kseg.data.transforms import rescale_size
from kseg.inference.label_map import resized_argmax

MODES = ("whole", "slide", "ms_flip")
WINDOW_BATCH = 4  # slide windows per forward pass


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


def slide_covers_image(height: int, width: int, scale: Sequence[int] | None,
                       crop_size: Sequence[int], ratio: float = 1.0) -> bool:
    """True when one slide window covers the whole (resized) image: slide equals whole.

    ``height``, ``width``: the original image size (ints); ``scale``, ``ratio``: the
    keep-ratio resize applied before inference (mmcv ``rescale_size``).
    """
    if scale is not None:
        long_max, short_max = (max(int(s * ratio) for s in scale), min(int(s * ratio) for s in scale))
        factor = min(long_max / max(height, width), short_max / min(height, width))
        height, width = int(height * factor + 0.5), int(width * factor + 0.5)
    elif ratio != 1.0:
        height, width = round(height * ratio), round(width * ratio)
    return height <= int(crop_size[0]) and width <= int(crop_size[1])


def warn_if_slide_is_whole(height, width, mode, scale, crop_size, ms_inner_mode="whole", ms_ratios=(1.0,),
                           stacklevel=2):
    """Warns (``UserWarning``) when ``slide`` inference would run one window over the
    whole image, i.e. compute exactly ``whole``. Returns True if it warned."""
    ratios = ms_ratios if mode == "ms_flip" else (1.0,)
    if (mode if mode != "ms_flip" else ms_inner_mode) != "slide":
        return False
    if all(slide_covers_image(int(height), int(width), scale, crop_size, float(r)) for r in ratios):
        where = f" (after the keep-ratio resize to scale {tuple(scale)})" if scale is not None else ""
        warnings.warn(
            f"slide inference: the {crop_size[0]}x{crop_size[1]} window covers the whole "
            f"{height}x{width} image{where}, so slide computes exactly whole; use mode "
            "'whole', or an eval crop_size smaller than the image", UserWarning, stacklevel=stacklevel + 1)
        return True
    return False


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


def _model_logits(model, images, logits_fn):
    """Model logits float32 [B, h, w, K] at the model's own stride."""
    return tf.cast(logits_fn(model(images, training=False)), tf.float32)


def _forward(model, images, size, logits_fn):
    """Model logits float32 [B, size[0], size[1], K] (resized bilinearly)."""
    return tf.image.resize(_model_logits(model, images, logits_fn), size, method="bilinear")


def _slide(model, images, crop_size, stride, logits_fn, window_batch=WINDOW_BATCH):
    """mmseg ``slide_inference`` on float32 [B, H, W, 3]: averaged logits [B, H, W, K].

    Windows are taken in mmseg's order (rows of windows, left to right) and go through
    the model ``window_batch`` at a time (all have the size min(crop, image)); each
    window's logits are added into the image in that order, then divided by the number
    of windows covering each pixel.
    """
    ch, cw = int(crop_size[0]), int(crop_size[1])
    sh, sw = int(stride[0]), int(stride[1])
    if min(ch, cw, sh, sw) <= 0:
        raise ValueError(f"crop_size {crop_size} and stride {stride} must be positive")
    window_batch = max(int(window_batch), 1)
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    h_grids, w_grids = slide_grid(h, w, (ch, cw), (sh, sw))
    n = h_grids * w_grids
    k = tf.range(n)
    y2 = tf.minimum((k // w_grids) * sh + ch, h)
    x2 = tf.minimum((k % w_grids) * sw + cw, w)
    y1, x1 = tf.maximum(y2 - ch, 0), tf.maximum(x2 - cw, 0)
    wh, ww = tf.minimum(ch, h), tf.minimum(cw, w)

    def crops(first):
        """Windows first .. first + window_batch - 1 (fewer at the end): [nb * B, wh, ww, 3]."""
        ids = tf.range(first, tf.minimum(first + window_batch, n))
        windows = tf.map_fn(
            lambda i: tf.slice(images, tf.stack([0, y1[i], x1[i], 0]), tf.stack([b, wh, ww, 3])),
            ids, fn_output_signature=tf.TensorSpec([None, None, None, 3], tf.float32))
        return ids, tf.reshape(windows, tf.stack([-1, wh, ww, 3]))

    def add(total, ids, logits):
        """Adds each window's logits [nb * B, wh, ww, C] into total [B, H, W, C], in order."""
        nb = tf.shape(total)[0]

        def body(j, total):
            i = ids[j]
            begin = tf.stack([0, y1[i], x1[i], 0])
            end = tf.stack([nb, y1[i] + wh, x1[i] + ww, tf.shape(total)[3]])
            region = tf.strided_slice(total, begin, end) + logits[j * nb:(j + 1) * nb]
            return j + 1, tf.raw_ops.TensorStridedSliceUpdate(
                input=total, begin=begin, end=end, strides=tf.ones([4], tf.int32), value=region)

        return tf.while_loop(lambda j, _: j < tf.size(ids), body, (tf.constant(0), total),
                             parallel_iterations=1)[1]

    # The first batch of windows fixes the number of classes K; the loop adds the others.
    ids, batch = crops(0)
    logits = _forward(model, batch, tf.stack([wh, ww]), logits_fn)
    static = images.shape[:3].concatenate(logits.shape[-1:])
    preds = add(tf.zeros(tf.concat([shape[:3], tf.shape(logits)[3:]], 0)), ids, logits)
    preds = tf.ensure_shape(preds, static)

    def body(first, preds):
        ids, batch = crops(first)
        logits = _forward(model, batch, tf.stack([wh, ww]), logits_fn)
        return first + window_batch, tf.ensure_shape(add(preds, ids, logits), static)

    _, preds = tf.while_loop(
        lambda first, _: first < n, body, (tf.constant(window_batch), preds),
        shape_invariants=(tf.TensorShape([]), static),
        parallel_iterations=1,  # one batch of windows in flight: bounded memory
    )
    count = add(tf.zeros(tf.stack([1, h, w, 1])), k, tf.ones(tf.stack([n, wh, ww, 1])))
    return preds / count


def _resize_input(images, scale, ratio):
    """Images resized for inference (keep-ratio ``scale`` and/or ``ratio``), and whether
    they were."""
    ori_size = tf.shape(images)[1:3]
    if scale is not None:
        new_h, new_w = rescale_size(ori_size[0], ori_size[1], scale, 1.0 if ratio is None else ratio)
        return tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear"), True
    if ratio is not None:
        new_size = tf.cast(tf.round(tf.cast(ori_size, tf.float32) * ratio), tf.int32)
        return tf.image.resize(images, tf.maximum(new_size, 1), method="bilinear"), True
    return images, False


def _single_scale(model, images, mode, scale, crop_size, stride, logits_fn, ratio=None,
                  window_batch=WINDOW_BATCH, labels=False):
    """whole / slide logits [B, H, W, K] at the original size of float32 ``images``, or
    with ``labels`` their argmax int32 [B, H, W] (without the full-size logits where
    possible).

    ``ratio`` (ms_flip) multiplies ``scale`` as mmseg's ``img_ratios`` do; without a
    ``scale`` it multiplies the original size.
    """
    ori_size = tf.shape(images)[1:3]
    images, resized = _resize_input(images, scale, ratio)
    size = tf.shape(images)[1:3]
    if mode == "whole":
        logits = _model_logits(model, images, logits_fn)
        if not labels:
            logits = tf.image.resize(logits, size, method="bilinear")
            # mmseg: logits at the resized size, then to ori_shape
            return tf.image.resize(logits, ori_size, method="bilinear") if resized else logits
        if not resized:
            return resized_argmax(logits, ori_size)
        # Two resizes (to the resized image, then to the original size); the first is
        # the identity when both sizes agree, and then skipped.
        return tf.cond(
            tf.reduce_all(tf.equal(size, ori_size)),
            lambda: resized_argmax(logits, ori_size),
            lambda: resized_argmax(tf.image.resize(logits, size, method="bilinear"), ori_size))
    logits = _slide(model, images, crop_size, stride, logits_fn, window_batch)
    if labels:
        if resized:
            return resized_argmax(logits, ori_size)
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.image.resize(logits, ori_size, method="bilinear") if resized else logits


def _multi_scale_flip(model, images, inner_mode, scale, crop_size, stride, logits_fn, ratios, flip,
                      window_batch=WINDOW_BATCH):
    """mmseg ``aug_test``: softmax probabilities averaged over ratios (and flips).

    Each ratio runs the image and its flipped copy as one batch; the probabilities are
    summed in mmseg's order (ratio by ratio, unflipped then flipped).
    """
    if inner_mode not in ("whole", "slide"):
        raise ValueError(f"ms_inner_mode must be whole or slide, got {inner_mode!r}")
    b = tf.shape(images)[0]
    total, count = None, 0
    for ratio in ratios:
        x = tf.concat([images, images[:, :, ::-1, :]], axis=0) if flip else images
        probs = tf.nn.softmax(
            _single_scale(model, x, inner_mode, scale, crop_size, stride, logits_fn, float(ratio), window_batch))
        parts = (probs[:b], probs[b:, :, ::-1, :]) if flip else (probs,)
        for p in parts:
            total = p if total is None else total + p
            count += 1
    return total / count


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"unknown inference mode {mode!r}; valid: {', '.join(MODES)}")


def _as_batch(images):
    """(float32 [B, H, W, 3], whether a single [H, W, 3] image was given)."""
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[tf.newaxis]
    return tf.cast(images, tf.float32), single


def _check_classes(tensor, num_classes):
    if num_classes is not None:
        tf.debugging.assert_equal(
            tf.shape(tensor)[-1],
            int(num_classes),
            message=f"the model's number of classes differs from num_classes={num_classes}",
        )


def _warn_slide(images, mode, scale, crop_size, ms_inner_mode, ms_ratios):
    if images.shape[1] is not None and images.shape[2] is not None:
        warn_if_slide_is_whole(images.shape[1], images.shape[2], mode, scale, crop_size, ms_inner_mode,
                               ms_ratios, stacklevel=4)


def predict_logits(
    model,
    images,
    mode: str = "whole",
    scale: Sequence[int] | None = None,
    crop_size: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    num_classes: int | None = None,
    logits_fn: Callable | None = None,
    ms_ratios: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    ms_flip: bool = True,
    ms_inner_mode: str = "whole",
    window_batch: int = WINDOW_BATCH,
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
      window_batch: slide windows per forward pass (see the module docstring).

    Returns:
      float32 [B, H, W, K] at the original H, W ([H, W, K] for a single [H, W, 3] image):
      logits (not softmax) for whole/slide, mean softmax probabilities for ms_flip.

    Raises:
      ValueError: unknown ``mode``, non-positive crop/stride, or a dict output without a
        way to turn it into logits.
      tf.errors.InvalidArgumentError: K differs from ``num_classes``.

    Warns:
      UserWarning: ``slide`` whose window covers the whole image (it then equals
        ``whole``), when the image size is known at call time.
    """
    _check_mode(mode)
    logits_fn = logits_fn or _default_logits_fn(model)
    images, single = _as_batch(images)
    _warn_slide(images, mode, scale, crop_size, ms_inner_mode, ms_ratios)
    if mode == "ms_flip":
        logits = _multi_scale_flip(model, images, ms_inner_mode, scale, crop_size, stride, logits_fn,
                                   ms_ratios, ms_flip, window_batch)
    else:
        logits = _single_scale(model, images, mode, scale, crop_size, stride, logits_fn,
                               window_batch=window_batch)
    _check_classes(logits, num_classes)
    return logits[0] if single else logits


def predict_labels(model, images, return_probs: bool = False, **kwargs):
    """Class labels at the original image size, in one call: whole, slide or ms_flip.

    Args:
      model, images: as :func:`predict_logits` ([B, H, W, 3] or one [H, W, 3] image, RGB in
        [0, 255]).
      return_probs: also return the softmax probabilities at the original size (for
        ``ms_flip``: the averaged ones).
      **kwargs: the settings of :func:`predict_logits` (``mode``, ``scale``, ``crop_size``,
        ``stride``, ``ms_ratios``, ``ms_flip``, ``ms_inner_mode``, ``num_classes``,
        ``logits_fn``, ``window_batch``).

    Returns:
      labels int32 [B, H, W] ([H, W] for one image): the argmax of :func:`predict_logits`
      (smallest class index on ties); with ``return_probs`` a tuple (labels, probabilities
      float32 [B, H, W, K]). Without ``return_probs``, ``whole`` and ``slide`` do not build
      the full-size K-channel logits where the low-resolution ones decide the label
      (:func:`kseg.inference.label_map.resized_argmax`); the labels are the same.

    Raises / Warns: as :func:`predict_logits`.
    """
    mode = kwargs.get("mode", "whole")
    if return_probs or mode == "ms_flip":
        out = predict_logits(model, images, **kwargs)
        labels = tf.argmax(out, axis=-1, output_type=tf.int32)
        if not return_probs:
            return labels
        return labels, (out if mode == "ms_flip" else tf.nn.softmax(out, axis=-1))
    _check_mode(mode)
    settings = {"scale": None, "crop_size": (512, 512), "stride": (341, 341), "window_batch": WINDOW_BATCH}
    unknown = set(kwargs) - set(settings) - {"mode", "num_classes", "logits_fn", "ms_ratios", "ms_flip",
                                             "ms_inner_mode"}
    if unknown:
        raise TypeError(f"predict_labels got unexpected settings {sorted(unknown)}")
    settings.update((k, v) for k, v in kwargs.items() if k in settings)
    logits_fn = kwargs.get("logits_fn") or _default_logits_fn(model)
    images, single = _as_batch(images)
    _warn_slide(images, mode, settings["scale"], settings["crop_size"], "whole", (1.0,))
    if kwargs.get("num_classes") is not None:
        # The check needs K: from one forward pass on a small image when the labels
        # path never materialises logits. Rare (tests, CLI checks); cheap.
        _check_classes(_model_logits(model, images[:1, :32, :32], logits_fn), kwargs["num_classes"])
    labels = _single_scale(model, images, mode, settings["scale"], settings["crop_size"], settings["stride"],
                           logits_fn, window_batch=settings["window_batch"], labels=True)
    return labels[0] if single else labels


# model -> {settings: tf.function}: compiled predict_labels, reused across calls.
_COMPILED = weakref.WeakKeyDictionary()


def compiled_predict_labels(model, return_probs: bool = False, **settings) -> Callable:
    """A ``tf.function`` of :func:`predict_labels` for ``model`` and ``settings``, traced
    once for any batch and image size: ``fn(images float32 [B, H, W, 3])`` -> labels (or
    (labels, probabilities)). Cached per model (weakly) and settings; a ``logits_fn``
    setting is keyed by identity."""
    key = (bool(return_probs), *sorted((k, id(v) if callable(v) else v) for k, v in settings.items()))
    cache = _COMPILED.setdefault(model, {})
    if key not in cache:
        model_ref = weakref.ref(model)  # a strong one would keep the cache entry alive

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def fn(images):
            return predict_labels(model_ref(), images, return_probs=return_probs, **settings)

        cache[key] = fn
    return cache[key]


def predict_images(model, images, return_probs: bool = False, **settings):
    """Labels (and probabilities) at input size for numpy images, in one call.

    The notebook and application path: ``images`` is one RGB image [H, W, 3], a batch
    [B, H, W, 3] (uint8 or float in [0, 255]), or a list of images of different sizes.
    Runs :func:`predict_labels` compiled once per model and settings (any image size
    reuses the one graph; :func:`compiled_predict_labels`).

    Args:
      model: a kseg model (or any model :func:`predict_logits` accepts).
      images: see above.
      return_probs: also return the softmax probabilities (ms_flip: their mean).
      **settings: ``mode`` ("whole" | "slide" | "ms_flip"), ``scale``, ``crop_size``,
        ``stride``, ``ms_ratios``, ``ms_flip``, ``ms_inner_mode``, ``window_batch``,
        ``logits_fn`` (see :func:`predict_logits`).

    Returns:
      numpy int32 labels shaped like the images without the channel axis ([H, W] or
      [B, H, W]; a list for a list), or (labels, float32 probabilities [..., K]) with
      ``return_probs``.

    Warns:
      UserWarning: ``slide`` whose window covers the whole image (then equal to whole).
    """
    if isinstance(images, (list, tuple)):
        outs = [predict_images(model, image, return_probs, **settings) for image in images]
        return ([o[0] for o in outs], [o[1] for o in outs]) if return_probs else outs
    array = tf.convert_to_tensor(images)
    if array.shape.rank not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"images must be [H, W, 3] or [B, H, W, 3] RGB, got shape {tuple(array.shape)}")
    batch, single = _as_batch(array)
    _check_mode(settings.get("mode", "whole"))
    warn_if_slide_is_whole(batch.shape[1], batch.shape[2], settings.get("mode", "whole"), settings.get("scale"),
                           settings.get("crop_size", (512, 512)), settings.get("ms_inner_mode", "whole"),
                           settings.get("ms_ratios", (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)), stacklevel=2)
    out = compiled_predict_labels(model, return_probs, **settings)(batch)
    out = tuple(t.numpy() for t in out) if return_probs else (out.numpy(),)
    if single:
        out = tuple(t[0] for t in out)
    return out if return_probs else out[0]
