"""Datasets, pure-TF transforms and tf.data pipelines for semantic segmentation.

    from kseg.data import get_dataset, build_dataset
    info = get_dataset("camvid", split="train")     # classes, palette, samples, ...
    ds = build_dataset(recipe.data, split="train", training=True, batch_size=8, seed=0)

Labels are int32 with 255 = ignore_index; images float32 RGB in [0, 255], NHWC.
"""

from kseg.data import ade20k as _ade20k  # noqa: F401  (registers "ade20k")
from kseg.data import camvid as _camvid  # noqa: F401  (registers "camvid")
from kseg.data import cityscapes as _cityscapes  # noqa: F401  (registers "cityscapes")
from kseg.data import coco_stuff as _coco_stuff  # noqa: F401  (registers "coco_stuff10k")
from kseg.data import folder as _folder  # noqa: F401  (registers "folder")
from kseg.data import pascal_context as _pascal_context  # noqa: F401  (pascal_context*)
from kseg.data.io import LabelMapper, load_image, load_raw_label, load_sample
from kseg.data.palettes import colorize, make_palette
from kseg.data.pipeline import build_dataset
from kseg.data.registry import (
    IGNORE_INDEX,
    DatasetError,
    DatasetInfo,
    find_data_root,
    get_dataset,
    list_datasets,
    register_dataset,
)

__all__ = [
    "IGNORE_INDEX", "DatasetError", "DatasetInfo", "LabelMapper", "build_dataset", "colorize",
    "find_data_root", "get_dataset", "list_datasets", "load_image", "load_raw_label",
    "load_sample", "make_palette", "register_dataset",
]
