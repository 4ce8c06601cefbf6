"""Cityscapes (fine annotations) in the mmseg layout, 19 training classes.

``leftImg8bit/{train,val,test}/<city>/<stem>_leftImg8bit.png`` with
``gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png``. The ``*_labelTrainIds.png`` maps
are not in the official download: ``tools/prepare_cityscapes.py ROOT`` writes them from the
official ``*_gtFine_labelIds.png`` with :data:`CITYSCAPES_LABELS` (the cityscapesScripts
``helpers/labels.py`` id -> trainId table; ids ignored in evaluation -> 255), as mmseg's
converter does. Values are then 0..18 or 255, so ``reduce_zero_label`` defaults to False
(mmseg ``CityscapesDataset``). Samples are the sorted images found under the split folder
(mmseg scans it; there is no list file). The test split's public labels are all 255.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from kseg.data.palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from kseg.data.registry import IGNORE_INDEX, DatasetError, DatasetInfo, find_data_root, register_dataset

CITYSCAPES_DIR_NAMES = ("cityscapes", "Cityscapes")
CITYSCAPES_SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_ID_SUFFIX = "_gtFine_labelIds.png"  # official label maps (ids 0..33)

# (name, id, trainId) of cityscapesScripts helpers/labels.py; trainId 255 = ignored.
# "license plate" (id -1) is never written into the id maps and is left out.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12),
    ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15), ("caravan", 29, 255),
    ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
)
CITYSCAPES_ID_TO_TRAINID = {label_id: train_id for _, label_id, train_id in CITYSCAPES_LABELS}


def id_to_train_id_lut() -> np.ndarray:
    """uint8 [256] lookup table: official label id -> trainId (255 for every other value)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
        lut[label_id] = train_id
    return lut


def _resolve_root(root: Optional[str]) -> str:
    root = find_data_root(CITYSCAPES_DIR_NAMES, root)
    if not os.path.isdir(os.path.join(root, "leftImg8bit")):
        for name in CITYSCAPES_DIR_NAMES:  # data.root given as the parent folder
            if os.path.isdir(os.path.join(root, name, "leftImg8bit")):
                return os.path.join(root, name)
    return root


@register_dataset("cityscapes")
def build_cityscapes(root: Optional[str], split: str, reduce_zero_label: Optional[bool],
                     folder_spec: Optional[str] = None) -> DatasetInfo:
    """Cityscapes 19-class :class:`DatasetInfo` (2975 train, 500 val, 1525 test images)."""
    root = _resolve_root(root)
    if split not in CITYSCAPES_SPLITS:
        raise DatasetError(f"cityscapes has no split '{split}'. Valid splits: "
                           f"{', '.join(CITYSCAPES_SPLITS)}. Fix: set data.train_split / "
                           "data.val_split")
    img_dir = os.path.join(root, "leftImg8bit", split)
    ann_dir = os.path.join(root, "gtFine", split)
    for d, archive in ((img_dir, "leftImg8bit_trainvaltest.zip"),
                       (ann_dir, "gtFine_trainvaltest.zip")):
        if not os.path.isdir(d):
            raise DatasetError(f"cityscapes folder missing: {d}. Fix: unpack {archive} so that "
                               f"leftImg8bit/ and gtFine/ sit in the dataset root ({root})")
    samples = []
    for dirpath, dirnames, filenames in os.walk(img_dir):
        dirnames.sort()
        rel = os.path.relpath(dirpath, img_dir)
        for name in filenames:
            if name.endswith(IMAGE_SUFFIX):
                stem = name[: -len(IMAGE_SUFFIX)]
                samples.append((os.path.join(dirpath, name),
                                os.path.normpath(os.path.join(ann_dir, rel, stem + LABEL_SUFFIX))))
    samples.sort()
    if not samples:
        raise DatasetError(f"cityscapes split '{split}': no *{IMAGE_SUFFIX} images under "
                           f"{img_dir}. Fix: check the unpacked leftImg8bit_trainvaltest.zip")
    if not any(os.path.isfile(lbl) for _, lbl in samples):
        first = samples[0][1]
        official = first[: -len(LABEL_SUFFIX)] + LABEL_ID_SUFFIX
        if os.path.isfile(official):
            fix = (f"the official *{LABEL_ID_SUFFIX} maps are there but not the training-id "
                   f"maps. Fix: run `python tools/prepare_cityscapes.py {root}`")
        else:
            fix = ("Fix: unpack gtFine_trainvaltest.zip into the dataset root, then run "
                   f"`python tools/prepare_cityscapes.py {root}`")
        raise DatasetError(f"cityscapes split '{split}': no *{LABEL_SUFFIX} label maps under "
                           f"{ann_dir} (e.g. {first} is missing); {fix}")
    return DatasetInfo(
        name="cityscapes", root=root, split=split, classes=CITYSCAPES_CLASSES,
        palette=CITYSCAPES_PALETTE, samples=samples, ignore_index=IGNORE_INDEX,
        reduce_zero_label=bool(reduce_zero_label), list_file=img_dir)
