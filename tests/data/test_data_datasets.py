"""Registry, root resolution and the camvid / ade20k / folder datasets."""

import os

import numpy as np
import pytest

from kseg.config import DataConfig
from kseg.data import (
    DatasetError,
    build_dataset,
    find_data_root,
    get_dataset,
    list_datasets,
    load_sample,
)
from kseg.data.io import mapper_for
from kseg.data.palettes import ADE20K_CLASSES, ADE20K_PALETTE, CAMVID_PALETTE


def _camvid_or_skip():
    try:
        return find_data_root("camvid")
    except DatasetError as e:
        pytest.skip(f"CamVid not available: {e}")


def test_registry_lists_builtin_datasets():
    assert {"camvid", "ade20k", "folder"} <= set(list_datasets())
    with pytest.raises(DatasetError, match="unknown dataset 'nope'.*camvid"):
        get_dataset("nope")


def test_camvid_splits_classes_and_void_label():
    _camvid_or_skip()
    train = get_dataset("camvid", split="train")
    val = get_dataset("camvid", split="val")
    assert len(train.samples) == 367 and len(val.samples) == 101
    assert train.num_classes == 11 and train.classes[0] == "sky" and train.classes[10] == "bicyclist"
    assert train.palette.dtype == np.uint8 and train.palette.shape == (11, 3)
    np.testing.assert_array_equal(train.palette, CAMVID_PALETTE)
    assert train.palette[4].tolist() == [60, 40, 222]  # sidewalk, from the README
    assert train.ignore_index == 255
    img_path, lbl_path = train.samples[0]
    assert img_path.endswith(os.path.join("train", "0001TP_006690.png"))
    assert lbl_path.endswith(os.path.join("trainannot", "0001TP_006690.png"))
    # A real label map holds void (11): it must come out as 255, the rest unchanged.
    from PIL import Image

    raw = np.asarray(Image.open(lbl_path))
    assert (raw == 11).any()
    image, label = load_sample(img_path, lbl_path, mapper_for(train))
    assert image.shape == (360, 480, 3) and image.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(11)) | {255}
    np.testing.assert_array_equal(label == 255, raw == 11)
    np.testing.assert_array_equal(label[raw != 11], raw[raw != 11])


def test_find_data_root_order_and_error(tmp_path, monkeypatch):
    (tmp_path / "env" / "mydata").mkdir(parents=True)
    (tmp_path / "cwd" / "data" / "mydata").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("KSEG_DATA", str(tmp_path / "env"))
    assert find_data_root("mydata") == str(tmp_path / "env" / "mydata")
    monkeypatch.delenv("KSEG_DATA")
    assert find_data_root("mydata") == str(tmp_path / "cwd" / "data" / "mydata")
    assert find_data_root("x", root=str(tmp_path / "env")) == str(tmp_path / "env")
    with pytest.raises(DatasetError) as e:
        find_data_root("no_such_dataset")
    msg = str(e.value)
    assert str(tmp_path / "cwd" / "data" / "no_such_dataset") in msg
    assert os.path.join("shared", "data", "no_such_dataset") in msg
    assert "KSEG_DATA" in msg and "data.root" in msg
    with pytest.raises(DatasetError, match="dataset folder not found: .*missing_root"):
        get_dataset("camvid", root=str(tmp_path / "missing_root"))


def _make_ade(h, base, n_train=2, n_val=1):
    root = base / "ADEChallengeData2016"
    raw = np.array([[0, 1, 150, 150], [0, 1, 2, 2], [3, 3, 3, 3]], np.uint8)
    for sub, n in (("training", n_train), ("validation", n_val)):
        for i in range(n):
            name = f"ADE_{sub[:5]}_{i:08d}"
            h.write_image(str(root / "images" / sub / f"{name}.jpg"), 3, 4, seed=i, fmt="JPEG")
            h.write_label(str(root / "annotations" / sub / f"{name}.png"), raw)
    return root, raw


def test_ade20k_fixture_reduce_zero_label(tmp_path, monkeypatch, helpers):
    root, raw = _make_ade(helpers, tmp_path)
    monkeypatch.setenv("KSEG_DATA", str(tmp_path))
    info = get_dataset("ade20k", split="train")
    assert info.root == str(root) and info.reduce_zero_label is True
    assert info.num_classes == 150 and info.classes == ADE20K_CLASSES
    assert info.classes[0] == "wall" and info.classes[-1] == "flag"
    np.testing.assert_array_equal(info.palette, ADE20K_PALETTE)
    assert [os.path.basename(p) for p, _ in info.samples] == [
        "ADE_train_00000000.jpg", "ADE_train_00000001.jpg"]
    assert len(get_dataset("ade20k", split="val").samples) == 1
    _, label = load_sample(*info.samples[0], mapper_for(info))
    expected = np.where(raw == 0, 255, raw.astype(np.int32) - 1)
    np.testing.assert_array_equal(label, expected)
    # Through the evaluation pipeline (root given explicitly as the parent folder).
    cfg = DataConfig(dataset="ade20k", root=str(tmp_path))
    image, lbl = next(iter(build_dataset(cfg, "val", training=False)))
    assert image.shape == (1, 3, 4, 3) and image.dtype.name == "float32"
    np.testing.assert_array_equal(lbl.numpy()[0], expected)
    # reduce_zero_label=False keeps raw values, and then 150 is out of range.
    plain = get_dataset("ade20k", split="train", reduce_zero_label=False)
    with pytest.raises(DatasetError, match=r"values \[150\]"):
        load_sample(*plain.samples[0], mapper_for(plain))
    with pytest.raises(DatasetError, match="no split 'test'"):
        get_dataset("ade20k", split="test")


def test_folder_dataset_with_split_lists_and_label_map(folder_dataset, helpers):
    stripes = helpers.stripes
    labels = {"a": stripes(24, 32, [0, 1]), "b": stripes(24, 32, [2, 9]),
              "c": stripes(24, 32, [1, 2])}
    spec = folder_dataset(labels, splits={"train": ["b", "a"], "val": ["c.png"]},
                          label_map={9: 255}, extra_spec={"palette": [[1, 2, 3], [4, 5, 6],
                                                                      [7, 8, 9]]})
    info = get_dataset("folder", folder_spec=spec, split="train")
    assert info.name == "tiny" and info.classes == ("a", "b", "c")
    assert info.palette.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [os.path.basename(p) for p, _ in info.samples] == ["b.png", "a.png"]  # list order
    assert [os.path.basename(p) for p, _ in get_dataset(
        "folder", folder_spec=spec, split="val").samples] == ["c.png"]
    cfg = DataConfig(dataset="folder", folder_spec=spec)
    ds = build_dataset(cfg, "train", training=False, with_paths=True)
    (img0, lbl0, path0), (img1, lbl1, _) = list(ds)
    assert path0.numpy()[0].decode() == info.samples[0][0]
    assert img0.shape == (1, 24, 32, 3) and lbl0.dtype.name == "int32"
    np.testing.assert_array_equal(lbl0.numpy()[0], stripes(24, 32, [2, 255]))
    np.testing.assert_array_equal(lbl1.numpy()[0], stripes(24, 32, [0, 1]))
    with pytest.raises(DatasetError, match="no split 'test'.*train, val"):
        get_dataset("folder", folder_spec=spec, split="test")


def test_folder_dataset_scans_all_files_and_validates_spec(folder_dataset, tmp_path):
    spec = folder_dataset()
    info = get_dataset("folder", folder_spec=spec, split="anything")
    assert [os.path.basename(p) for p, _ in info.samples] == ["s0.png", "s1.png", "s2.png",
                                                                "s3.png"]
    assert info.palette.shape == (3, 3) and len({tuple(c) for c in info.palette}) == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_dir: img\nlabel_dir: ann\nclasses: [a]\ncolours: [[1,2,3]]\n")
    with pytest.raises(DatasetError, match="unknown key.*colours.*Valid keys"):
        get_dataset("folder", folder_spec=str(bad))
    bad.write_text("image_dir: img\nlabel_dir: ann\nclasses: [a, b]\npalette: [[1,2,3]]\n")
    with pytest.raises(DatasetError, match="'palette' must be 2"):
        get_dataset("folder", folder_spec=str(bad))
    with pytest.raises(DatasetError, match="needs a YAML spec"):
        get_dataset("folder")
    with pytest.raises(DatasetError, match="spec not found: .*nope.yaml"):
        get_dataset("folder", folder_spec=str(tmp_path / "nope.yaml"))
