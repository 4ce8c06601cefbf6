"""Decoding and validation of (image, label) files with PIL.

* :func:`check_samples` runs the cheap checks eagerly (files exist, PIL headers readable,
  label map single-channel and the same size as its image).
* :func:`load_sample` fully decodes one pair, applies the label mapping (``label_map``
  then ``reduce_zero_label``, mmseg ``LoadAnnotations`` semantics) and checks every label
  value is in ``[0, K)`` or the ignore index. It runs inside ``tf.numpy_function`` in the
  pipeline, so its :class:`DatasetError` text (with the path) is in the TF error.

EXIF orientation is not applied (the pixel grid must stay aligned with the label map).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from kseg.data.registry import DatasetError, DatasetInfo
from kseg.utils.progress import track

log = logging.getLogger(__name__)

_LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")


class LabelMapper:
    """Raw label values -> training label values, with validation.

    Applies ``label_map`` (raw -> new; other values unchanged), then ``reduce_zero_label``
    (0 -> ignore, v -> v - 1, ignore stays ignore), like mmseg ``LoadAnnotations``.
    Result values must be in ``[0, num_classes)`` or ``ignore_index``.
    """

    def __init__(self, num_classes: int, label_map: Optional[Dict[int, int]] = None,
                 reduce_zero_label: bool = False, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()}
        self.reduce_zero_label = bool(reduce_zero_label)
        self.ignore_index = int(ignore_index)
        self.dtype = np.uint8 if self.num_classes <= 255 and ignore_index <= 255 else np.int32
        self.lut = self._map(np.arange(256, dtype=np.int64))  # int64 [256]
        self.lut_valid = self._valid(self.lut)
        self.lut_cast = np.where(self.lut_valid, self.lut, self.ignore_index).astype(self.dtype)

    def _map(self, values: np.ndarray) -> np.ndarray:
        out = values.astype(np.int64).copy()
        for old, new in self.label_map.items():
            out[values == old] = new
        if self.reduce_zero_label:
            zero, ign = out == 0, out == self.ignore_index
            out = out - 1
            out[zero | ign] = self.ignore_index
        return out

    def _valid(self, mapped: np.ndarray) -> np.ndarray:
        return ((mapped >= 0) & (mapped < self.num_classes)) | (mapped == self.ignore_index)

    def __call__(self, raw: np.ndarray, path: str = "<label>") -> np.ndarray:
        """Maps a raw label array [H, W]; returns uint8 (int32 if K > 255) [H, W].

        Raises:
          DatasetError: values outside [0, K) that are not the ignore index (after mapping);
            the message gives the mapped and raw offending values.
        """
        if raw.dtype == np.uint8:
            counts = np.bincount(raw.ravel(), minlength=256)
            bad_raw = np.nonzero((counts > 0) & ~self.lut_valid)[0]
            if len(bad_raw):
                self._raise(path, bad_raw, self.lut[bad_raw])
            return self.lut_cast[raw]
        raw = raw.astype(np.int64)
        values, inverse = np.unique(raw, return_inverse=True)
        mapped = self._map(values)
        bad = ~self._valid(mapped)
        if bad.any():
            self._raise(path, values[bad], mapped[bad])
        return mapped[inverse].reshape(raw.shape).astype(self.dtype)

    def _raise(self, path, raw_values, mapped_values):
        def fmt(v):
            v = [int(x) for x in v]
            return str(v[:20]) + (f" ... ({len(v)} values)" if len(v) > 20 else "")

        how = []
        if self.label_map:
            how.append(f"label_map {self.label_map}")
        if self.reduce_zero_label:
            how.append("reduce_zero_label")
        raise DatasetError(
            f"label map {path} has values {fmt(mapped_values)}"
            + (f" (raw values {fmt(raw_values)}, after {' and '.join(how)})" if how else "")
            + f" outside [0, {self.num_classes}) that are not the ignore index "
            f"{self.ignore_index}. Fix: map them to a class or to {self.ignore_index} "
            "(the folder spec's label_map), check reduce_zero_label and the class list, "
            "or set data.skip_bad_samples=true to skip this sample"
        )


def mapper_for(info: DatasetInfo) -> LabelMapper:
    return LabelMapper(info.num_classes, info.label_map, info.reduce_zero_label, info.ignore_index)


def read_split_list(list_file: str, available_hint: str = "") -> list:
    """Non-empty, stripped lines of a split list file.

    Raises:
      DatasetError: the list is missing or empty (names the file).
    """
    if not os.path.isfile(list_file):
        raise DatasetError(f"split list not found: {list_file}. {available_hint}Fix: create "
                           "it (one file name per line) or choose an existing split")
    with open(list_file) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DatasetError(f"split list {list_file} is empty. Fix: list one file name per line")
    return lines


def _check_one(img_path: str, lbl_path: str, list_file: str) -> Optional[str]:
    """Returns None if the pair passes the cheap checks, else the problem text."""
    for kind, path in (("image", img_path), ("label map", lbl_path)):
        if not os.path.isfile(path):
            return (f"{kind} listed in {list_file} is missing: {path}. Fix: restore the file "
                    "or remove its entry from the split list")
    sizes = {}
    for kind, path in (("image", img_path), ("label map", lbl_path)):
        try:
            with Image.open(path) as im:
                sizes[kind] = im.size
                mode = im.mode
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
            return (f"{kind} {path} is unreadable or corrupt ({type(e).__name__}: {e}). "
                    "Fix: re-download or re-export the file")
        if kind == "label map" and mode not in _LABEL_MODES:
            return (f"label map {path} has PIL mode {mode}; expected a single-channel "
                    "class-index image (mode L, P or I). Fix: convert colour labels to "
                    "class indices (one value per pixel)")
    if sizes["image"] != sizes["label map"]:
        (iw, ih), (lw, lh) = sizes["image"], sizes["label map"]
        return (f"label map {lbl_path} is {lw}x{lh} (WxH) but its image {img_path} is "
                f"{iw}x{ih}. Fix: the label map must have its image's size (re-export it)")
    return None


def check_samples(info: DatasetInfo, skip_bad_samples: bool = False) -> None:
    """Eager cheap checks of every sample: existence, PIL header, label mode, sizes.

    With ``skip_bad_samples`` a bad pair is removed from ``info.samples``, logged with
    ``logging.warning`` and appended to ``info.bad_samples``; otherwise the first problem
    raises. Corruption past the header is found when the sample is decoded.

    Raises:
      DatasetError: a bad sample (without skip), or no samples left.
    """
    list_file = info.list_file or info.root
    pairs = list(info.samples)
    checking = f"checking {info.name}/{info.split}"
    if len(pairs) > 64:
        with ThreadPoolExecutor(8) as pool:
            problems = list(track(pool.map(lambda p: _check_one(p[0], p[1], list_file), pairs),
                                  checking, total=len(pairs), unit="samples"))
    else:
        problems = [_check_one(i, l, list_file) for i, l in pairs]
    good = []
    for pair, problem in zip(pairs, problems):
        if problem is None:
            good.append(pair)
            continue
        if not skip_bad_samples:
            raise DatasetError(problem + " (dataset " + f"'{info.name}' split '{info.split}')")
        log.warning("kseg.data: skipping bad sample of %s/%s: %s", info.name, info.split, problem)
        info.bad_samples.append((pair[0], problem))
    if info.bad_samples:
        log.warning("kseg.data: %s/%s: skipped %d of %d samples (see warnings above; "
                    "info.bad_samples lists them)", info.name, info.split,
                    len(info.bad_samples), len(pairs))
    if not good:
        raise DatasetError(f"dataset '{info.name}' split '{info.split}' ({list_file}) has no "
                           "usable samples. Fix: check the dataset folder")
    info.samples[:] = good


def load_image(path: str) -> np.ndarray:
    """Decodes an image file to uint8 [H, W, 3] RGB.

    Raises:
      DatasetError: missing, unreadable, corrupt or truncated file (names the path).
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image is missing: {path}. Fix: restore it or remove it from "
                           "the split list") from None
    except Exception as e:
        raise DatasetError(f"image {path} is unreadable, corrupt or truncated "
                           f"({type(e).__name__}: {e}). Fix: re-download or re-export it, or "
                           "set data.skip_bad_samples=true to skip it") from e


def load_raw_label(path: str) -> np.ndarray:
    """Decodes a single-channel label map to its raw integer values [H, W].

    Raises:
      DatasetError: missing, unreadable, corrupt, truncated or multi-channel file.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in _LABEL_MODES:
                raise DatasetError(
                    f"label map {path} has PIL mode {im.mode}; expected a single-channel "
                    "class-index image (mode L, P or I). Fix: convert colour labels to class "
                    "indices")
            arr = np.asarray(im)
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"label map is missing: {path}. Fix: restore it or remove its "
                           "image from the split list") from None
    except Exception as e:
        raise DatasetError(f"label map {path} is unreadable, corrupt or truncated "
                           f"({type(e).__name__}: {e}). Fix: re-download or re-export it, or "
                           "set data.skip_bad_samples=true to skip it") from e
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def load_sample(img_path: str, lbl_path: str, mapper: LabelMapper) -> Tuple[np.ndarray, np.ndarray]:
    """Decodes and validates one pair.

    Returns:
      image uint8 [H, W, 3] RGB, label uint8 [H, W] (int32 if K > 255) with values in
      [0, K) or the ignore index.

    Raises:
      DatasetError: unreadable/corrupt file, size mismatch (both sizes given), label values
        out of range (the offending values given).
    """
    image = load_image(img_path)
    raw = load_raw_label(lbl_path)
    if raw.shape[:2] != image.shape[:2]:
        raise DatasetError(
            f"label map {lbl_path} is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image "
            f"{img_path} is {image.shape[1]}x{image.shape[0]}. Fix: the label map must have "
            "its image's size")
    return image, mapper(raw, lbl_path)


class BadSampleTracker:
    """Records samples skipped at decode time (thread-safe) into ``info.bad_samples``.

    Each bad file is logged once with ``logging.warning`` together with the running count.
    Raises when every sample of the split is bad (a training loop would otherwise spin).
    """

    def __init__(self, info: DatasetInfo):
        self.info = info
        self.total = len(info.samples) + len(info.bad_samples)
        self._seen = {p for p, _ in info.bad_samples}
        self._lock = threading.Lock()

    def record(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self._seen:
                return
            self._seen.add(path)
            self.info.bad_samples.append((path, reason))
            count = len(self.info.bad_samples)
        log.warning("kseg.data: skipping bad sample (%d of %d skipped in %s/%s): %s",
                    count, self.total, self.info.name, self.info.split, reason)
        if count >= self.total:
            raise DatasetError(f"every sample of dataset '{self.info.name}' split "
                               f"'{self.info.split}' is bad (last: {reason})")

    @property
    def paths(self) -> List[str]:
        return [p for p, _ in self.info.bad_samples]
