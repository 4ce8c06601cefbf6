"""COCO-Stuff 10k in the layout written by mmseg's ``coco_stuff10k.py`` converter.

``images/{train2014,test2014}/<stem>.jpg`` with
``annotations/{train2014,test2014}/<stem>_labelTrainIds.png`` and the split lists of the
original download, ``imageLists/{train,test}.txt`` (one stem per line; 9000 train,
1000 test). There is no validation split: ``val`` is an alias of ``test``, the split papers
evaluate on. When ``imageLists/`` is absent (converter run with ``-o`` elsewhere) the
sorted ``.jpg`` files of the split folder are used, as mmseg does.

171 classes (mmseg ``COCOStuffDataset``). The converter maps the .mat ids to 0 = unlabeled
and 1..171 = classes, so ``reduce_zero_label`` defaults to True (0 -> 255, v -> v - 1), as
in mmseg's ``coco-stuff10k`` dataset config.
"""

from __future__ import annotations

import os
from typing import Optional

from kseg.data.io import read_split_list
from kseg.data.palettes import COCO_STUFF_CLASSES, COCO_STUFF_PALETTE
from kseg.data.registry import IGNORE_INDEX, DatasetError, DatasetInfo, find_data_root, register_dataset

COCO_STUFF10K_DIR_NAMES = ("coco_stuff10k", "cocostuff10k", "coco_stuff_10k",
                           os.path.join("coco_stuff", "coco_stuff10k"), "coco_stuff")
LABEL_SUFFIX = "_labelTrainIds.png"
# split name -> (folder under images/ and annotations/, list name under imageLists/)
_SPLITS = {"train": ("train2014", "train"), "test": ("test2014", "test"),
           "val": ("test2014", "test")}


def _resolve_root(root: Optional[str]) -> str:
    root = find_data_root(COCO_STUFF10K_DIR_NAMES, root)
    if not os.path.isdir(os.path.join(root, "images")):
        for name in COCO_STUFF10K_DIR_NAMES:  # data.root given as the parent folder
            if os.path.isdir(os.path.join(root, name, "images")):
                return os.path.join(root, name)
    return root


@register_dataset("coco_stuff10k")
def build_coco_stuff10k(root: Optional[str], split: str, reduce_zero_label: Optional[bool],
                        folder_spec: Optional[str] = None) -> DatasetInfo:
    """COCO-Stuff 10k 171-class :class:`DatasetInfo` (9000 train, 1000 test images)."""
    root = _resolve_root(root)
    if split not in _SPLITS:
        raise DatasetError(f"coco_stuff10k has no split '{split}'. Valid splits: "
                           f"{', '.join(_SPLITS)} (val is test). Fix: set data.train_split / "
                           "data.val_split")
    sub, list_name = _SPLITS[split]
    img_dir = os.path.join(root, "images", sub)
    ann_dir = os.path.join(root, "annotations", sub)
    for d in (img_dir, ann_dir):
        if not os.path.isdir(d):
            raise DatasetError(
                f"coco_stuff10k folder missing: {d}. Fix: unpack cocostuff-10k-v1.1.zip into "
                f"the dataset root ({root}) and run mmseg's "
                f"tools/dataset_converters/coco_stuff10k.py {root}, which writes "
                "images/{train2014,test2014}/ and annotations/{train2014,test2014}/")
    list_file = os.path.join(root, "imageLists", f"{list_name}.txt")
    if os.path.isfile(list_file):
        stems = [os.path.splitext(os.path.basename(line.split()[0]))[0]
                 for line in read_split_list(list_file)]
        source = list_file
    else:
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(img_dir)
                       if n.lower().endswith(".jpg"))
        source = img_dir
        if not stems:
            raise DatasetError(f"coco_stuff10k split '{split}': no .jpg images in {img_dir} "
                               f"and no split list {list_file}. Fix: check the converted dataset")
    samples = [(os.path.join(img_dir, s + ".jpg"), os.path.join(ann_dir, s + LABEL_SUFFIX))
               for s in stems]
    return DatasetInfo(
        name="coco_stuff10k", root=root, split=split, classes=COCO_STUFF_CLASSES,
        palette=COCO_STUFF_PALETTE, samples=samples, ignore_index=IGNORE_INDEX,
        reduce_zero_label=True if reduce_zero_label is None else bool(reduce_zero_label),
        list_file=source)
