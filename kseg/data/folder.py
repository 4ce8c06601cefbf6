"""A generic folder dataset described by a small YAML spec (``data.folder_spec``).

Example ``dataset.yaml`` (paths are relative to the spec's folder; ``data.root``, when set,
replaces ``root``)::

    name: my_roads                # optional, default: the spec file's stem
    root: .                       # optional
    image_dir: images/{split}     # {split} is replaced by the split name
    label_dir: labels/{split}
    image_suffix: .jpg            # default .jpg
    label_suffix: .png            # default .png
    splits:                       # optional: split -> list file (relative to root); each
      train: splits/train.txt     # line names an image relative to image_dir, with or
      val: splits/val.txt         # without image_suffix. Absent: every image under
                                  # image_dir (recursive, sorted) — mmseg CustomDataset.
    classes: [background, road, car]
    palette: [[0, 0, 0], [128, 64, 128], [64, 0, 128]]   # optional, default make_palette
    label_map: {11: 255}          # optional raw value -> value (before reduce_zero_label)
    reduce_zero_label: false      # optional

Label maps are single-channel PNGs of class indices; label ``a/b.jpg`` -> ``a/b.png``
under ``label_dir``.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import yaml

from kseg.data.io import read_split_list
from kseg.data.palettes import make_palette
from kseg.data.registry import IGNORE_INDEX, DatasetError, DatasetInfo, register_dataset

SPEC_KEYS = ("name", "root", "image_dir", "label_dir", "image_suffix", "label_suffix",
             "splits", "classes", "palette", "label_map", "reduce_zero_label")


def load_folder_spec(path: str) -> dict:
    """Reads and validates a folder-dataset YAML spec; returns it with defaults filled.

    Raises:
      DatasetError: missing file, invalid YAML, unknown key (valid keys listed), missing
        ``image_dir``/``label_dir``/``classes``, palette of the wrong length or range,
        non-integer label_map.
    """
    if not path:
        raise DatasetError("dataset 'folder' needs a YAML spec. Fix: set data.folder_spec to "
                           "your dataset.yaml (see kseg/data/folder.py for its keys)")
    if not os.path.isfile(path):
        raise DatasetError(f"folder dataset spec not found: {path}. Fix: set data.folder_spec "
                           "to an existing dataset.yaml")
    try:
        with open(path) as f:
            spec = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise DatasetError(f"folder dataset spec {path} is not valid YAML: {e}") from e
    if not isinstance(spec, dict):
        raise DatasetError(f"folder dataset spec {path} must be a mapping of keys")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise DatasetError(f"folder dataset spec {path}: unknown key(s) {unknown}. Valid keys: "
                           + ", ".join(SPEC_KEYS))
    for key in ("image_dir", "label_dir", "classes"):
        if not spec.get(key):
            raise DatasetError(f"folder dataset spec {path}: '{key}' is required")
    classes = spec["classes"]
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"folder dataset spec {path}: 'classes' must be a list of names")
    palette = spec.get("palette")
    if palette is None:
        palette = make_palette(len(classes))
    else:
        arr = np.asarray(palette)
        if arr.shape != (len(classes), 3) or not np.issubdtype(arr.dtype, np.integer) or \
                arr.min() < 0 or arr.max() > 255:
            raise DatasetError(f"folder dataset spec {path}: 'palette' must be {len(classes)} "
                               f"[R, G, B] triples of integers 0..255 (one per class), got shape "
                               f"{arr.shape}")
        palette = arr.astype(np.uint8)
    label_map = spec.get("label_map") or {}
    if not isinstance(label_map, dict) or not all(
            isinstance(k, int) and isinstance(v, int) for k, v in label_map.items()):
        raise DatasetError(f"folder dataset spec {path}: 'label_map' must map integer raw "
                           f"values to integer labels, e.g. {{11: 255}}; got {label_map!r}")
    splits = spec.get("splits")
    if splits is not None and not isinstance(splits, dict):
        raise DatasetError(f"folder dataset spec {path}: 'splits' must map split names to "
                           "list files, e.g. {train: train.txt}")
    return {
        "name": str(spec.get("name") or os.path.splitext(os.path.basename(path))[0]),
        "root": os.path.join(os.path.dirname(os.path.abspath(path)), str(spec.get("root") or ".")),
        "image_dir": str(spec["image_dir"]), "label_dir": str(spec["label_dir"]),
        "image_suffix": str(spec.get("image_suffix") or ".jpg"),
        "label_suffix": str(spec.get("label_suffix") or ".png"),
        "splits": splits, "classes": tuple(classes), "palette": palette,
        "label_map": label_map, "reduce_zero_label": bool(spec.get("reduce_zero_label", False)),
    }


def _scan(img_dir: str, suffix: str) -> list:
    out = []
    for dirpath, _, files in os.walk(img_dir):
        for f in files:
            if f.endswith(suffix):
                out.append(os.path.relpath(os.path.join(dirpath, f), img_dir))
    return sorted(out)


@register_dataset("folder")
def build_folder(root: Optional[str], split: str, reduce_zero_label: Optional[bool],
                 folder_spec: Optional[str] = None) -> DatasetInfo:
    """:class:`DatasetInfo` of a folder dataset described by ``folder_spec``."""
    spec = load_folder_spec(folder_spec)
    if root is not None:
        if not os.path.isdir(root):
            raise DatasetError(f"dataset folder not found: {root} (given as data.root for the "
                               f"folder dataset of {folder_spec}). Fix: point data.root at it")
        base = os.path.abspath(root)
    else:
        base = os.path.abspath(spec["root"])
        if not os.path.isdir(base):
            raise DatasetError(f"dataset folder not found: {base} (root of {folder_spec}). "
                               "Fix: correct 'root' in the spec or set data.root")
    img_dir = os.path.join(base, spec["image_dir"].replace("{split}", split))
    lbl_dir = os.path.join(base, spec["label_dir"].replace("{split}", split))
    isuf, lsuf = spec["image_suffix"], spec["label_suffix"]
    if spec["splits"] is not None:
        if split not in spec["splits"]:
            raise DatasetError(f"folder dataset {folder_spec} has no split '{split}'. Splits: "
                               f"{', '.join(map(str, spec['splits']))}. Fix: add it under "
                               "'splits' or set data.train_split / data.val_split")
        list_file = os.path.join(base, str(spec["splits"][split]))
        names = [ln.split()[0] for ln in read_split_list(list_file)]
        names = [n if n.endswith(isuf) else n + isuf for n in names]
    else:
        list_file = img_dir
        if not os.path.isdir(img_dir):
            raise DatasetError(f"image folder not found: {img_dir} (image_dir of {folder_spec}, "
                               f"split '{split}'). Fix: correct image_dir or the split name")
        names = _scan(img_dir, isuf)
        if not names:
            raise DatasetError(f"no '*{isuf}' images under {img_dir} (folder dataset "
                               f"{folder_spec}). Fix: check image_dir and image_suffix")
    samples = [(os.path.join(img_dir, n), os.path.join(lbl_dir, n[: -len(isuf)] + lsuf))
               for n in names]
    rzl = spec["reduce_zero_label"] if reduce_zero_label is None else bool(reduce_zero_label)
    return DatasetInfo(
        name=spec["name"], root=base, split=split, classes=spec["classes"],
        palette=spec["palette"], samples=samples, ignore_index=IGNORE_INDEX,
        label_map=spec["label_map"], reduce_zero_label=rzl, list_file=list_file)
