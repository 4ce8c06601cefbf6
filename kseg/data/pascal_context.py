"""PASCAL Context (VOC2010 images, Detail-API labels) in the mmseg layout.

``<root>/JPEGImages/<stem>.jpg`` with ``<root>/SegmentationClassContext/<stem>.png`` and the
split lists ``<root>/ImageSets/SegmentationContext/{train,val}.txt`` (one stem per line;
4998 train, 5105 val), where ``<root>`` is ``VOCdevkit/VOC2010``. The label maps are those
written by mmseg's ``tools/dataset_converters/pascal_context.py``: 0 = background (every
class outside the 59 most frequent), 1..59 = the 59 classes in alphabetical order.

Two registered settings:

* ``pascal_context`` (alias ``pascal_context_59``): 59 classes, background ignored
  (``reduce_zero_label`` True: 0 -> 255, v -> v - 1), as mmseg ``PascalContextDataset59``.
* ``pascal_context_60``: 60 classes with background as class 0 (``reduce_zero_label``
  False), as mmseg ``PascalContextDataset``. SETR (Table 4, "60 classes incl.
  background"), Segmenter (Table 9, official code ``n_cls=60``) and SegViT (mIoU60) report
  this setting, so their Pascal Context recipes use ``pascal_context_60``.
"""

from __future__ import annotations

import glob
import os
from typing import Optional

from kseg.data.io import read_split_list
from kseg.data.palettes import (
    PASCAL_CONTEXT_59_CLASSES,
    PASCAL_CONTEXT_59_PALETTE,
    PASCAL_CONTEXT_60_CLASSES,
    PASCAL_CONTEXT_60_PALETTE,
)
from kseg.data.registry import IGNORE_INDEX, DatasetError, DatasetInfo, find_data_root, register_dataset

PASCAL_CONTEXT_DIR_NAMES = (
    os.path.join("VOCdevkit", "VOC2010"),
    os.path.join("pascal_context", "VOCdevkit", "VOC2010"),
    os.path.join("pascal_context", "VOC2010"),
    "VOC2010", "pascal_context",
)
IMAGE_DIR = "JPEGImages"
LABEL_DIR = "SegmentationClassContext"
LIST_DIR = os.path.join("ImageSets", "SegmentationContext")
_NESTED = (os.path.join("VOCdevkit", "VOC2010"), "VOC2010")


def _resolve_root(root: Optional[str]) -> str:
    root = find_data_root(PASCAL_CONTEXT_DIR_NAMES, root)
    if not os.path.isdir(os.path.join(root, IMAGE_DIR)):
        for sub in _NESTED:  # data.root given as a parent folder
            if os.path.isdir(os.path.join(root, sub, IMAGE_DIR)):
                return os.path.join(root, sub)
    return root


def _build(name: str, root: Optional[str], split: str, reduce_zero_label: Optional[bool],
           classes, palette, default_reduce: bool) -> DatasetInfo:
    root = _resolve_root(root)
    for sub in (IMAGE_DIR, LABEL_DIR, LIST_DIR):
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            fix = ("run mmseg's tools/dataset_converters/pascal_context.py (Detail API, "
                   "trainval_merged.json) to write SegmentationClassContext/ and "
                   "ImageSets/SegmentationContext/" if sub != IMAGE_DIR else
                   "unpack VOCtrainval_03-May-2010.tar so that JPEGImages/ is in the root")
            raise DatasetError(f"{name} folder missing: {d}. Fix: {fix} (dataset root {root}, "
                               "i.e. VOCdevkit/VOC2010)")
    list_dir = os.path.join(root, LIST_DIR)
    list_file = os.path.join(list_dir, f"{split}.txt")
    splits = sorted(os.path.splitext(os.path.basename(p))[0]
                    for p in glob.glob(os.path.join(list_dir, "*.txt")))
    if not os.path.isfile(list_file):
        raise DatasetError(f"{name} has no split '{split}': split list not found: {list_file}. "
                           f"Splits found in {list_dir}: {', '.join(splits) or 'none'}. Fix: set "
                           "data.train_split / data.val_split to one of them")
    stems = read_split_list(list_file)
    samples = []
    for line in stems:
        stem = os.path.splitext(os.path.basename(line.split()[0]))[0]
        samples.append((os.path.join(root, IMAGE_DIR, stem + ".jpg"),
                        os.path.join(root, LABEL_DIR, stem + ".png")))
    return DatasetInfo(
        name=name, root=root, split=split, classes=classes, palette=palette, samples=samples,
        ignore_index=IGNORE_INDEX,
        reduce_zero_label=default_reduce if reduce_zero_label is None else bool(reduce_zero_label),
        list_file=list_file)


@register_dataset("pascal_context")
@register_dataset("pascal_context_59")
def build_pascal_context_59(root: Optional[str], split: str, reduce_zero_label: Optional[bool],
                            folder_spec: Optional[str] = None) -> DatasetInfo:
    """PASCAL Context 59 classes, background ignored (mmseg ``PascalContextDataset59``)."""
    return _build("pascal_context", root, split, reduce_zero_label,
                  PASCAL_CONTEXT_59_CLASSES, PASCAL_CONTEXT_59_PALETTE, default_reduce=True)


@register_dataset("pascal_context_60")
def build_pascal_context_60(root: Optional[str], split: str, reduce_zero_label: Optional[bool],
                            folder_spec: Optional[str] = None) -> DatasetInfo:
    """PASCAL Context 60 classes incl. background (mmseg ``PascalContextDataset``)."""
    return _build("pascal_context_60", root, split, reduce_zero_label,
                  PASCAL_CONTEXT_60_CLASSES, PASCAL_CONTEXT_60_PALETTE, default_reduce=False)
