"""Shared fixtures of the export tests: a tiny CamVid root and a random-weight B0 checkpoint."""

import os

import numpy as np
import pytest


@pytest.fixture(scope="session")
def camvid_tiny(tmp_path_factory):
    """A CamVid root (links to the real files) with 3-image val_tiny and 4-image train_tiny."""
    from kseg.data import find_data_root

    try:
        real = find_data_root("camvid")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"CamVid not available: {e}")
    root = tmp_path_factory.mktemp("camvid")
    for name in os.listdir(real):
        os.symlink(os.path.join(real, name), root / name)
    for split, n in (("val", 3), ("train", 4)):
        with open(os.path.join(real, f"{split}.txt")) as f:
            (root / f"{split}_tiny.txt").write_text("".join(f.readlines()[:n]))
    # The tiny splits read their images from val/ and train/: link them under the new names.
    os.symlink(os.path.join(real, "val"), root / "val_tiny")
    os.symlink(os.path.join(real, "valannot"), root / "val_tinyannot")
    os.symlink(os.path.join(real, "train"), root / "train_tiny")
    os.symlink(os.path.join(real, "trainannot"), root / "train_tinyannot")
    return str(root)


@pytest.fixture(scope="session")
def b0_camvid(tmp_path_factory):
    """(model, checkpoint path): SegFormer-B0 with 11 classes and random weights, whose
    classifier is scaled up so that the predicted labels vary over the image."""
    import kseg

    model = kseg.build_model("segformer_mit_b0", num_classes=11, drop_path_rate=0.0, dropout=0.0)
    rng = np.random.default_rng(0)
    clf = model.decode_head.classifier
    clf.kernel.assign(rng.normal(0, 1.0, clf.kernel.shape).astype("float32"))
    path = str(tmp_path_factory.mktemp("ckpt") / "b0.weights.h5")
    model.save_weights(path)
    return model, path
