"""ADE20K / SceneParse150 in the official ``ADEChallengeData2016`` layout.

``images/{training,validation}/*.jpg`` with ``annotations/{training,validation}/*.png``
of the same stem. 150 classes; raw 0 is "other" so ``reduce_zero_label`` defaults to True
(0 -> 255, v -> v - 1), as in mmseg ``ADE20KDataset``. Samples are the sorted images of the
split folder (mmseg scans the folder; there is no list file).
"""

from __future__ import annotations

import os
from typing import Optional

from kseg.data.palettes import ADE20K_CLASSES, ADE20K_PALETTE
from kseg.data.registry import IGNORE_INDEX, DatasetError, DatasetInfo, find_data_root, register_dataset

ADE_DIR_NAMES = ("ADEChallengeData2016", os.path.join("ade", "ADEChallengeData2016"),
                 os.path.join("ade20k", "ADEChallengeData2016"), "ade20k")
_SPLITS = {"train": "training", "training": "training", "val": "validation",
           "validation": "validation"}


@register_dataset("ade20k")
def build_ade20k(root: Optional[str], split: str, reduce_zero_label: Optional[bool],
                 folder_spec: Optional[str] = None) -> DatasetInfo:
    """ADE20K 150-class :class:`DatasetInfo` (20210 training, 2000 validation images)."""
    root = find_data_root(ADE_DIR_NAMES, root)
    if not os.path.isdir(os.path.join(root, "images")) and os.path.isdir(
            os.path.join(root, "ADEChallengeData2016", "images")):
        root = os.path.join(root, "ADEChallengeData2016")
    if split not in _SPLITS:
        raise DatasetError(f"ade20k has no split '{split}'. Valid splits: "
                           f"{', '.join(_SPLITS)}. Fix: set data.train_split / data.val_split")
    sub = _SPLITS[split]
    img_dir = os.path.join(root, "images", sub)
    ann_dir = os.path.join(root, "annotations", sub)
    for d in (img_dir, ann_dir):
        if not os.path.isdir(d):
            raise DatasetError(f"ade20k folder missing: {d}. Fix: unpack ADEChallengeData2016.zip "
                               "so that images/ and annotations/ sit in the dataset root "
                               f"({root})")
    names = sorted(n for n in os.listdir(img_dir) if n.lower().endswith(".jpg"))
    if not names:
        raise DatasetError(f"ade20k split '{split}': no .jpg images in {img_dir}. Fix: check "
                           "the unpacked dataset")
    samples = [(os.path.join(img_dir, n), os.path.join(ann_dir, os.path.splitext(n)[0] + ".png"))
               for n in names]
    return DatasetInfo(
        name="ade20k", root=root, split=split, classes=ADE20K_CLASSES, palette=ADE20K_PALETTE,
        samples=samples, ignore_index=IGNORE_INDEX,
        reduce_zero_label=True if reduce_zero_label is None else bool(reduce_zero_label),
        list_file=img_dir)
