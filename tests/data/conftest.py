"""Fixtures for kseg.data tests: tiny on-disk datasets built in tmp_path."""

import os
import types

import numpy as np
import pytest
import yaml
from PIL import Image


def write_image(path, h=24, w=32, seed=0, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


def write_label(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L").save(path)


def stripes(h, w, values):
    """Label [h, w] with vertical stripes of the given values."""
    cols = np.array_split(np.arange(w), len(values))
    out = np.zeros((h, w), np.uint8)
    for v, c in zip(values, cols):
        out[:, c] = v
    return out


@pytest.fixture
def helpers():
    """write_image(path, h, w, seed, fmt), write_label(path, array), stripes(h, w, values)."""
    return types.SimpleNamespace(write_image=write_image, write_label=write_label,
                                 stripes=stripes)


@pytest.fixture
def folder_dataset(tmp_path):
    """Factory: builds a folder dataset (spec + images + labels) and returns the spec path.

    ``labels`` maps sample name -> label array (H, W); images get the same size unless
    ``image_sizes`` overrides (name -> (h, w)).
    """

    def make(labels=None, splits=None, classes=("a", "b", "c"), image_sizes=None,
             label_map=None, extra_spec=None, root_name="ds"):
        root = tmp_path / root_name
        labels = labels if labels is not None else {
            f"s{i}": stripes(24, 32, [0, 1, 2, 3][: 2 + i % 2]) for i in range(4)}
        for i, (name, lab) in enumerate(labels.items()):
            h, w = (image_sizes or {}).get(name, lab.shape)
            write_image(str(root / "img" / f"{name}.png"), h, w, seed=i)
            write_label(str(root / "ann" / f"{name}.png"), lab)
        spec = {"name": "tiny", "image_dir": "img", "label_dir": "ann",
                "image_suffix": ".png", "label_suffix": ".png", "classes": list(classes)}
        if splits:
            spec["splits"] = {}
            for split, names in splits.items():
                (root / f"{split}.txt").write_text("".join(n + "\n" for n in names))
                spec["splits"][split] = f"{split}.txt"
        if label_map:
            spec["label_map"] = label_map
        spec.update(extra_spec or {})
        path = root / "dataset.yaml"
        path.write_text(yaml.safe_dump(spec))
        return str(path)

    return make
