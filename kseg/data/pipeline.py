"""``build_dataset``: a ``DataConfig`` and a split -> a batched ``tf.data.Dataset``.

Training (mmseg semantics): list files -> shuffle -> repeat -> decode (PIL in
``tf.numpy_function``; label mapping, void -> 255) -> random resize -> random crop
(cat_max_ratio) -> flip -> photometric distortion -> pad -> batch(drop_remainder) ->
prefetch. Randomness is stateless, seeded per element by (seed, element index), so the
batches depend only on ``seed`` and not on parallelism. With ``data.cache`` the decoded
images are cached in memory (before augmentation) and the decoded elements are shuffled
with ``data.shuffle_buffer``; otherwise the file list is fully reshuffled every epoch.

Evaluation: decode whole images in split order, no augmentation, ``.batch(batch_size)``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from kseg.data.io import BadSampleTracker, load_sample, mapper_for
from kseg.data.registry import DatasetError, DatasetInfo, get_dataset
from kseg.data.transforms import train_transform

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


class _PyCallGuard:
    """Lets the interpreter exit while a pipeline with in-flight PIL decodes is alive.

    A tf.data iterator still referenced at interpreter exit (a module-level ``it =
    iter(ds)``, a traceback holding a ``fit`` frame) is destroyed during finalisation;
    if one of its threads is then inside or entering the Python decode function, the
    destructor waits forever. At ``atexit`` time (before finalisation) this guard makes
    new decode calls fail fast and waits (at most ``timeout`` s) until none is running
    and none started for ``quiet`` s, so the iterator buffers fill and its threads park.
    """

    def __init__(self, timeout: float = 5.0, quiet: float = 0.2):
        self.closing = False
        self.active = 0
        self.last = 0.0
        self.lock = threading.Lock()
        self.timeout, self.quiet = timeout, quiet

    def enter(self) -> bool:
        with self.lock:
            self.last = time.monotonic()
            if self.closing:
                return False
            self.active += 1
            return True

    def exit(self) -> None:
        with self.lock:
            self.active -= 1
            self.last = time.monotonic()

    def drain(self) -> None:
        with self.lock:
            self.closing = True
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with self.lock:
                idle = self.active == 0 and time.monotonic() - self.last > self.quiet
            if idle:
                return
            time.sleep(0.02)


_GUARD = _PyCallGuard()
atexit.register(_GUARD.drain)


def _decode_fn(info: DatasetInfo, skip_bad_samples: bool):
    """Returns ``decode(image_path, label_path) -> (image uint8 [H,W,3], label [H,W], ok)``."""
    mapper = mapper_for(info)
    tracker = BadSampleTracker(info) if skip_bad_samples else None
    label_dtype = tf.as_dtype(mapper.dtype)

    def py_decode(img_path, lbl_path):
        if not _GUARD.enter():
            raise RuntimeError("kseg.data: the interpreter is exiting; input pipeline stopped")
        try:
            img_path, lbl_path = img_path.decode(), lbl_path.decode()
            try:
                image, label = load_sample(img_path, lbl_path, mapper)
            except DatasetError as e:
                if tracker is None:
                    raise
                tracker.record(img_path, str(e))  # logs it; raises if every sample is bad
                return (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), mapper.dtype),
                        np.array(False))
            return image, label, np.array(True)
        finally:
            _GUARD.exit()

    def decode(img_path, lbl_path):
        image, label, ok = tf.numpy_function(
            py_decode, [img_path, lbl_path], [tf.uint8, label_dtype, tf.bool],
            name="kseg_decode")
        image.set_shape([None, None, 3])
        label.set_shape([None, None])
        ok.set_shape([])
        return image, label, ok

    return decode


def _decoded(ds: tf.data.Dataset, info: DatasetInfo, skip: bool, with_paths: bool = False):
    """(img_path, lbl_path) -> (image, label[, img_path]), bad samples filtered if skip."""
    decode = _decode_fn(info, skip)

    def fn(img_path, lbl_path):
        image, label, ok = decode(img_path, lbl_path)
        return (image, label, ok, img_path) if with_paths else (image, label, ok)

    ds = ds.map(fn, num_parallel_calls=AUTOTUNE, deterministic=True)
    if skip:
        ds = ds.filter(lambda *e: e[2])
    if with_paths:
        return ds.map(lambda image, label, ok, path: (image, label, path))
    return ds.map(lambda image, label, ok: (image, label))


def build_dataset(data_cfg, split: str = "train", training: bool = True,
                  batch_size: Optional[int] = None, seed: int = 0, with_paths: bool = False,
                  info: Optional[DatasetInfo] = None) -> tf.data.Dataset:
    """Builds the input pipeline of one split.

    Args:
      data_cfg: :class:`kseg.config.DataConfig`.
      split: split name; recipes pass ``data_cfg.train_split`` / ``data_cfg.val_split``.
      training: True -> infinite, shuffled, augmented batches of fixed size; False -> whole
        images in split order.
      batch_size: default 8 for training, 1 for evaluation (>1 at evaluation only works when
        all image sizes agree).
      seed: seeds shuffling and augmentation (same seed -> identical batches).
      with_paths: evaluation only: elements also carry the image path (string [B]).
      info: a :class:`DatasetInfo` from :func:`get_dataset` to use (e.g. to read
        ``info.bad_samples`` afterwards); None builds it from ``data_cfg``.

    Returns:
      training: ``(images float32 [B, crop_h, crop_w, 3] RGB in [0, 255],
      labels int32 [B, crop_h, crop_w])`` with 255 = ignore, ``drop_remainder=True``.
      evaluation: ``(image float32 [B, H, W, 3], label int32 [B, H, W][, path string [B]])``.

    Raises:
      DatasetError: eagerly, for a missing folder / list / file, unreadable header or size
        mismatch. While iterating, a corrupt file or out-of-range label values raise a TF
        error (``InvalidArgumentError``) whose message holds the DatasetError text and the
        path. With ``data_cfg.skip_bad_samples`` bad samples are logged
        (``logging.warning``), recorded in ``info.bad_samples`` and skipped instead.
    """
    if info is None:
        info = get_dataset(data_cfg.dataset, root=data_cfg.root, split=split,
                           reduce_zero_label=data_cfg.reduce_zero_label,
                           folder_spec=data_cfg.folder_spec,
                           skip_bad_samples=data_cfg.skip_bad_samples)
    if batch_size is None:
        batch_size = 8 if training else 1
    if int(batch_size) < 1:
        raise ValueError(f"build_dataset: batch_size must be >= 1, got {batch_size}")
    skip = bool(data_cfg.skip_bad_samples)
    n = len(info.samples)
    log.info("kseg.data: %s/%s: %d samples, %d classes, root %s", info.name, split, n,
             info.num_classes, info.root)
    paths = tf.data.Dataset.from_tensor_slices(
        ([s[0] for s in info.samples], [s[1] for s in info.samples]))

    if not training:
        ds = _decoded(paths, info, skip, with_paths)
        if data_cfg.cache:
            ds = ds.cache()

        def to_float(image, label, *path):
            return (tf.cast(image, tf.float32), tf.cast(label, tf.int32)) + tuple(path)

        ds = ds.map(to_float, num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.batch(int(batch_size)).prefetch(AUTOTUNE)

    if with_paths:
        raise ValueError("build_dataset: with_paths is for evaluation (training=False) only")
    crop_h, crop_w = int(data_cfg.crop_size[0]), int(data_cfg.crop_size[1])
    if data_cfg.cache:
        ds = _decoded(paths, info, skip).cache()
        ds = ds.shuffle(max(1, min(int(data_cfg.shuffle_buffer), n)), seed=seed,
                        reshuffle_each_iteration=True).repeat()
    else:
        ds = paths.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = _decoded(ds, info, skip)

    kwargs = dict(scale=tuple(data_cfg.scale), ratio_range=tuple(data_cfg.ratio_range),
                  crop_size=(crop_h, crop_w), cat_max_ratio=float(data_cfg.cat_max_ratio),
                  flip_prob=float(data_cfg.flip_prob), photometric=bool(data_cfg.photometric),
                  num_classes=info.num_classes, ignore_index=info.ignore_index)

    def augment(index, element):
        image, label = element
        elem_seed = tf.stack([tf.constant(int(seed), tf.int64), index])
        return train_transform(image, label, elem_seed, **kwargs)

    ds = ds.enumerate().map(augment, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(int(batch_size), drop_remainder=True).prefetch(AUTOTUNE)
