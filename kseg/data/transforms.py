"""Training transforms in pure TF with stateless randomness (mmseg pipeline semantics).

Order (mmseg ``train_pipeline``): ``Resize(img_scale=scale, ratio_range, keep_ratio=True)``
-> ``RandomCrop(crop_size, cat_max_ratio)`` -> ``RandomFlip(prob)`` ->
``PhotoMetricDistortion`` -> ``Pad(crop_size, pad_val=0, seg_pad_val=255)``.

Resize and crop are fused: the crop window is chosen in the coordinates of the resized
image, and only that window is resampled (``tf.image.crop_and_resize`` on an
edge-padded source reproduces ``tf.image.resize`` bilinear with half-pixel centres
exactly; labels use nearest-neighbour index gathers). The cost is proportional to the
crop, not to the resized image, which keeps the pipeline cheap on few CPU cores.

Every function takes a ``seed``: int32/int64 [2] for ``tf.random.stateless_*``; the same
seed gives the same output. Images are float32 [H, W, 3] RGB in [0, 255]; labels int32
[H, W] with ``ignore_index`` for unlabelled pixels.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import tensorflow as tf

CAT_MAX_TRIES = 10  # mmseg RandomCrop retries


def rescale_size(height, width, scale: Sequence[int], ratio=1.0):
    """Output size of mmcv ``imrescale``: fit inside (long, short) = scale * ratio, keep aspect.

    ``scale`` is mmseg's ``img_scale`` (either order: the larger value bounds the long
    edge, the smaller the short edge); mmseg truncates ``int(scale * ratio)`` first.

    Returns:
      (new_height, new_width) int32 scalar tensors, each >= 1.
    """
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    ratio = tf.cast(ratio, tf.float32)
    s0 = tf.floor(float(scale[0]) * ratio)
    s1 = tf.floor(float(scale[1]) * ratio)
    long_max, short_max = tf.maximum(s0, s1), tf.minimum(s0, s1)
    factor = tf.minimum(long_max / tf.maximum(h, w), short_max / tf.minimum(h, w))
    nh = tf.maximum(tf.cast(tf.floor(h * factor + 0.5), tf.int32), 1)
    nw = tf.maximum(tf.cast(tf.floor(w * factor + 0.5), tf.int32), 1)
    return nh, nw


def _nearest_index(start, size, in_size, out_size):
    """Source indices of output rows [start, start + size) of a nearest resize in -> out."""
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    i = tf.cast(tf.range(start, start + size), tf.float32)
    # tf.image.resize(method="nearest") with half-pixel centres.
    return tf.minimum(tf.cast(tf.floor((i + 0.5) * scale), tf.int32), in_size - 1)


def resized_label_crop(label, new_hw, offset, crop_hw):
    """Crop ``[oy:oy+ch, ox:ox+cw]`` of ``label`` nearest-resized to ``new_hw``.

    Args:
      label: [H, W] any integer dtype.
      new_hw, offset, crop_hw: (h, w) int32 pairs, in resized-image coordinates.
    Returns:
      [ch, cw] with label's dtype.
    """
    h, w = tf.shape(label)[0], tf.shape(label)[1]
    rows = _nearest_index(offset[0], crop_hw[0], h, new_hw[0])
    cols = _nearest_index(offset[1], crop_hw[1], w, new_hw[1])
    return tf.gather(tf.gather(label, rows, axis=0), cols, axis=1)


def resized_image_crop(image, new_hw, offset, crop_hw):
    """Crop ``[oy:oy+ch, ox:ox+cw]`` of ``image`` bilinearly resized to ``new_hw``.

    Equals ``tf.image.resize(image, new_hw, "bilinear")[oy:oy+ch, ox:ox+cw]`` (half-pixel
    centres, no antialias — like cv2/mmcv ``INTER_LINEAR``) without computing the full
    resized image.

    Args:
      image: [H, W, C] uint8 or float.
      new_hw, offset, crop_hw: (h, w) int32 pairs, in resized-image coordinates.
    Returns:
      float32 [ch, cw, C].
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    # Edge-replicate one pixel so the sample positions (>= -0.5, <= size - 0.5) stay
    # inside the source: crop_and_resize extrapolates with 0, tf.image.resize clamps.
    padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    boxes = []
    for axis in range(2):
        size_in = tf.cast([h, w][axis], tf.float32)
        step = size_in / tf.cast(new_hw[axis], tf.float32)
        first = (tf.cast(offset[axis], tf.float32) + 0.5) * step - 0.5 + 1.0
        last = first + tf.cast(crop_hw[axis] - 1, tf.float32) * step
        boxes.append((first / (size_in + 1.0), last / (size_in + 1.0)))  # padded size - 1
    box = tf.stack([boxes[0][0], boxes[1][0], boxes[0][1], boxes[1][1]])[None]
    out = tf.image.crop_and_resize(
        padded[None], box, tf.zeros([1], tf.int32), tf.stack([crop_hw[0], crop_hw[1]]),
        method="bilinear")
    return out[0]


def resize_keep_ratio(image, label, scale: Sequence[int]):
    """mmseg ``Resize(img_scale=scale, keep_ratio=True)`` at ratio 1: image bilinear, label nearest.

    Returns:
      image float32 [h, w, 3], label [h, w] (label's dtype), with (h, w) from
      :func:`rescale_size`.
    """
    nh, nw = rescale_size(tf.shape(image)[0], tf.shape(image)[1], scale)
    zero = tf.constant([0, 0], tf.int32)
    size = tf.stack([nh, nw])
    return (resized_image_crop(image, size, zero, size),
            resized_label_crop(label, size, zero, size))


def _uniform(seed, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)


def random_resize_crop(image, label, seed, *, scale: Sequence[int],
                       ratio_range: Sequence[float], crop_size: Sequence[int],
                       cat_max_ratio: float, num_classes: int, ignore_index: int = 255):
    """mmseg ``Resize(scale, ratio_range, keep_ratio=True)`` then ``RandomCrop``.

    The image is resized to fit inside ``scale * r`` (r ~ U(ratio_range), aspect kept);
    a ``crop_size`` window (smaller where the resized image is smaller) is drawn up to 10
    times until the most frequent non-ignore class covers less than ``cat_max_ratio`` of
    the labelled pixels and more than one class is present; else the last draw is kept.

    Args:
      image: [H, W, 3] uint8 or float; label: [H, W] integer.
      seed: [2] stateless seed.
      crop_size: (crop_h, crop_w).
    Returns:
      image float32 [h, w, 3], label int32 [h, w], with h <= crop_h, w <= crop_w (pad later).
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    lo, hi = float(ratio_range[0]), float(ratio_range[1])
    ratio = lo + (hi - lo) * _uniform(seeds[0])
    nh, nw = rescale_size(h, w, scale, ratio)
    ch, cw = tf.minimum(int(crop_size[0]), nh), tf.minimum(int(crop_size[1]), nw)
    new_hw, crop_hw = tf.stack([nh, nw]), tf.stack([ch, cw])
    margins = tf.cast(tf.stack([nh - ch, nw - cw]) + 1, tf.float32)
    # mmseg: offset = randint(0, margin + 1) per try.
    offsets = tf.minimum(
        tf.cast(tf.floor(_uniform(seeds[1], [CAT_MAX_TRIES, 2]) * margins), tf.int32),
        tf.cast(margins, tf.int32) - 1)
    label = tf.cast(label, tf.int32)

    if cat_max_ratio < 1.0:
        def acceptable(off):
            crop = resized_label_crop(label, new_hw, off, crop_hw)
            binned = tf.where(crop == ignore_index, num_classes, crop)
            counts = tf.math.bincount(tf.reshape(binned, [-1]), minlength=num_classes + 1,
                                      maxlength=num_classes + 1)[:num_classes]
            n_cls = tf.math.count_nonzero(counts)
            return tf.logical_and(
                n_cls > 1, tf.cast(tf.reduce_max(counts), tf.float32)
                < cat_max_ratio * tf.cast(tf.reduce_sum(counts), tf.float32))

        def cond(i, done):
            return tf.logical_and(i < CAT_MAX_TRIES, tf.logical_not(done))

        def body(i, done):
            return i + 1, acceptable(offsets[i])

        i, _ = tf.while_loop(cond, body, (tf.constant(0), tf.constant(False)))
        offset = offsets[i - 1]
    else:
        offset = offsets[0]
    return (resized_image_crop(image, new_hw, offset, crop_hw),
            resized_label_crop(label, new_hw, offset, crop_hw))


def random_flip(image, label, seed, prob: float = 0.5):
    """mmseg ``RandomFlip(prob, direction="horizontal")``: flips image and label together."""
    flip = _uniform(seed) < prob
    return tf.cond(flip, lambda: (tf.reverse(image, [1]), tf.reverse(label, [1])),
                   lambda: (image, label))


def photometric_distortion(image, seed, brightness_delta: float = 32.0,
                           contrast_range: Tuple[float, float] = (0.5, 1.5),
                           saturation_range: Tuple[float, float] = (0.5, 1.5),
                           hue_delta: int = 18):
    """mmseg ``PhotoMetricDistortion`` on float32 [H, W, 3] RGB in [0, 255].

    Each step applies with probability 0.5: brightness + U(-32, 32); contrast x U(0.5, 1.5)
    (before or after the HSV steps, at random); saturation x U(0.5, 1.5); hue shift by
    randint(-18, 18) OpenCV hue units (uint8 hue has 180 units per turn, so +-36 degrees).
    Values are clipped to [0, 255] after each step. Unlike mmseg there is no rounding to
    uint8 between steps.
    """
    u = _uniform(seed, [9])
    coin = u[:5] < 0.5  # brightness, contrast, contrast_first, saturation, hue
    beta = tf.where(coin[0], (2.0 * u[5] - 1.0) * brightness_delta, 0.0)
    alpha = contrast_range[0] + (contrast_range[1] - contrast_range[0]) * u[6]
    alpha_first = tf.where(coin[1] & coin[2], alpha, 1.0)
    alpha_last = tf.where(coin[1] & ~coin[2], alpha, 1.0)
    sat = saturation_range[0] + (saturation_range[1] - saturation_range[0]) * u[7]
    sat = tf.where(coin[3], sat, 1.0)
    hue = tf.floor(-float(hue_delta) + 2.0 * hue_delta * u[8])  # randint(-18, 18)
    hue = tf.where(coin[4], hue / 180.0, 0.0)

    image = tf.clip_by_value(image + beta, 0.0, 255.0)
    image = tf.clip_by_value(image * alpha_first, 0.0, 255.0)

    def hsv_ops(img):
        hsv = tf.image.rgb_to_hsv(img / 255.0)
        hh = tf.math.floormod(hsv[..., 0] + hue, 1.0)
        ss = tf.clip_by_value(hsv[..., 1] * sat, 0.0, 1.0)
        rgb = tf.image.hsv_to_rgb(tf.stack([hh, ss, hsv[..., 2]], axis=-1))
        return tf.clip_by_value(rgb * 255.0, 0.0, 255.0)

    image = tf.cond(coin[3] | coin[4], lambda: hsv_ops(image), lambda: image)
    return tf.clip_by_value(image * alpha_last, 0.0, 255.0)


def pad_to(image, label, crop_size: Sequence[int], ignore_index: int = 255):
    """mmseg ``Pad(size=crop_size, pad_val=0, seg_pad_val=255)``: pads bottom and right.

    Returns:
      image [crop_h, crop_w, 3] (pad 0), label [crop_h, crop_w] (pad ignore_index), with
      static shapes. Inputs larger than crop_size are an error (crop first).
    """
    ch, cw = int(crop_size[0]), int(crop_size[1])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    ph, pw = tf.maximum(ch - h, 0), tf.maximum(cw - w, 0)
    image = tf.pad(image, [[0, ph], [0, pw], [0, 0]], constant_values=0)
    label = tf.pad(label, [[0, ph], [0, pw]], constant_values=ignore_index)
    image = tf.ensure_shape(image, [ch, cw, 3])
    label = tf.ensure_shape(label, [ch, cw])
    return image, label


def train_transform(image, label, seed, *, scale: Sequence[int], ratio_range: Sequence[float],
                    crop_size: Sequence[int], cat_max_ratio: float, flip_prob: float,
                    photometric: bool, num_classes: int, ignore_index: int = 255):
    """The whole mmseg training pipeline for one sample.

    Args:
      image: uint8 or float [H, W, 3] RGB; label: integer [H, W] (ignore_index unlabelled).
      seed: int [2] stateless seed (derive it per element, e.g. (seed, element index)).
    Returns:
      image float32 [crop_h, crop_w, 3] in [0, 255], label int32 [crop_h, crop_w].
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    image, label = random_resize_crop(
        image, label, seeds[0], scale=scale, ratio_range=ratio_range, crop_size=crop_size,
        cat_max_ratio=cat_max_ratio, num_classes=num_classes, ignore_index=ignore_index)
    if flip_prob > 0:
        image, label = random_flip(image, label, seeds[1], flip_prob)
    if photometric:
        image = photometric_distortion(image, seeds[2])
    return pad_to(image, label, crop_size, ignore_index)

