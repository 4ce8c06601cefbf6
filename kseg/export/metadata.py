"""The sidecar JSON of an exported model: class names, palette, input and output layout.

An edge app needs, besides the weights, the class names and colours and the input
size/dtype. The standard TFLite runtime has no place for them that every app can read
without extra libraries, so the export writes a small JSON beside the artifact:
``MODEL.tflite`` -> ``MODEL.json``; ``DIR/`` (SavedModel) -> ``DIR/assets.extra/kseg.json``
(TF Serving's folder for files that are not part of the graph). Normalisation is inside
the models, so no mean/std appear: apps feed raw RGB pixels.

Example (abridged)::

    {"format": "kseg-export", "version": 1, "variant": "segformer_mit_b0",
     "num_classes": 11, "classes": ["sky", ...], "palette": [[128, 128, 128], ...],
     "ignore_index": 255,
     "input": {"name": "images", "shape": [1, 512, 512, 3], "dtype": "uint8",
               "color": "RGB", "range": [0, 255], "resize": "bilinear, whole image"},
     "outputs": {"labels": {...}, "logits": {..., "stride": 4}},
     "quantize": "int8", "threads": 2, "verification": {...}}
"""

from __future__ import annotations

import json
import logging
import os
from typing import Optional, Sequence

import numpy as np

FORMAT = "kseg-export"
VERSION = 1
log = logging.getLogger(__name__)


def sidecar_path(artifact: str) -> str:
    """Where the metadata of ``artifact`` lives: ``x.tflite`` -> ``x.json``; a SavedModel
    folder -> ``folder/assets.extra/kseg.json``."""
    if artifact.endswith(".tflite"):
        return artifact[: -len(".tflite")] + ".json"
    return os.path.join(artifact, "assets.extra", "kseg.json")


def class_metadata(recipe, model=None) -> tuple:
    """(class names [K], uint8 palette [K, 3]) of the exported model.

    A model made from pretrained weights (``kseg.from_pretrained``, a recipe's
    ``model.pretrained`` without a training checkpoint) carries its classes and palette in
    ``model.pretrained_info``: they are used when their count is the model's, no dataset
    needed. Otherwise the classes of ``recipe.data``'s dataset: its val split when it is on
    disk, else (exporting on a machine without the data) the built-in tables of CamVid /
    ADE20K, then ``"class_0".."class_{K-1}"`` with a generated palette, and a warning.

    Raises:
      ValueError: the dataset has a class count other than ``recipe.model.num_classes``.
    """
    from kseg.data import palettes

    info = getattr(model, "pretrained_info", None) or {}
    if info.get("classes") and len(info["classes"]) == int(getattr(model, "num_classes", -1)):
        return list(info["classes"]), np.asarray(info["palette"], np.uint8)
    k = int(recipe.model.num_classes)
    data = recipe.data
    names = palette = None
    try:
        from kseg.data import get_dataset

        info = get_dataset(data.dataset, root=data.root, split=data.val_split,
                           reduce_zero_label=data.reduce_zero_label,
                           folder_spec=data.folder_spec, check=False)
        names, palette = list(info.classes), np.asarray(info.palette, np.uint8)
    except Exception as e:  # dataset not on this machine: use the built-in tables
        tables = {"camvid": ("CAMVID_CLASSES", "CAMVID_PALETTE"),
                  "ade20k": ("ADE20K_CLASSES", "ADE20K_PALETTE")}
        cls_attr, pal_attr = tables.get(data.dataset, (None, None))
        if cls_attr and hasattr(palettes, cls_attr):
            names = list(getattr(palettes, cls_attr))
            palette = np.asarray(getattr(palettes, pal_attr, palettes.make_palette(len(names))),
                                 np.uint8)
        log.warning("kseg.export: dataset %r not readable (%s); class names from %s",
                    data.dataset, e, "kseg.data.palettes" if names else "generic names")
    if names is None:
        names, palette = [f"class_{i}" for i in range(k)], palettes.make_palette(k)
    if len(names) != k:
        raise ValueError(
            f"dataset {data.dataset!r} has {len(names)} classes but model.num_classes is {k}; "
            "fix the recipe's model.num_classes"
        )
    return names, palette


def build_metadata(recipe, variant: str, num_classes: int, classes: Sequence[str], palette,
                   input_spec: dict, outputs: dict, **extra) -> dict:
    """The metadata dict (JSON-serialisable): model, classes, palette, input/outputs, extras.

    Args:
      recipe: the ``kseg.config.Recipe`` exported (its source path is recorded), or None.
      variant, num_classes: the model's variant id and K.
      classes: K names. palette: [K, 3] ints in [0, 255].
      input_spec: e.g. ``{"name": "images", "shape": [1, 512, 512, 3], "dtype": "uint8"}``.
      outputs: name -> description dict (shape, dtype, meaning).
      **extra: added at the top level (``quantize``, ``threads``, ``checkpoint``, ...).

    Raises:
      ValueError: ``classes`` or ``palette`` do not have K entries.
    """
    from kseg import __version__

    palette = np.asarray(palette).astype(int).reshape(-1, 3)
    if len(classes) != num_classes or len(palette) != num_classes:
        raise ValueError(f"metadata needs {num_classes} class names and palette rows, got "
                         f"{len(classes)} and {len(palette)}")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "kseg_version": __version__,
        "variant": variant,
        "recipe": getattr(recipe, "source", None),
        "num_classes": int(num_classes),
        "classes": [str(c) for c in classes],
        "palette": palette.tolist(),
        "ignore_index": 255,
        "input": {"color": "RGB", "range": [0, 255],
                  "normalization": "inside the model (feed raw pixels)", **input_spec},
        "outputs": outputs,
    }
    meta.update(extra)
    return meta


def write_metadata(meta: dict, artifact: str) -> str:
    """Writes ``meta`` as the sidecar of ``artifact`` (see :func:`sidecar_path`); returns the path."""
    path = sidecar_path(artifact)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return path


def read_metadata(artifact: str) -> Optional[dict]:
    """The sidecar of ``artifact``, or None when there is none."""
    path = sidecar_path(artifact)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
