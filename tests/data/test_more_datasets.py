"""Cityscapes, PASCAL Context (59 / 60) and COCO-Stuff 10k on tiny fixture trees, plus
tools/prepare_cityscapes.py."""

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from kseg.config import DataConfig
from kseg.data import DatasetError, build_dataset, get_dataset, list_datasets, load_sample
from kseg.data.io import mapper_for
from kseg.data.palettes import (
    CITYSCAPES_PALETTE,
    COCO_STUFF_CLASSES,
    PASCAL_CONTEXT_59_CLASSES,
    PASCAL_CONTEXT_60_CLASSES,
    PASCAL_CONTEXT_60_PALETTE,
)

H, W = 20, 30
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _eval_labels(dataset, root, split):
    """Labels of every sample through the evaluation pipeline, int32 [H, W] each."""
    cfg = DataConfig(dataset=dataset, root=str(root))
    return [lbl.numpy()[0] for _, lbl in build_dataset(cfg, split, training=False)]


def _names(info):
    return [os.path.basename(p) for p, _ in info.samples]


def test_new_datasets_are_registered():
    assert {"cityscapes", "pascal_context", "pascal_context_59", "pascal_context_60",
            "coco_stuff10k"} <= set(list_datasets())


# --- Cityscapes ------------------------------------------------------------------------

def _make_cityscapes(h, base, label_suffix="_gtFine_labelTrainIds.png"):
    root = base / "cityscapes"
    files = {"train": [("bochum", "bochum_000000_000313"), ("aachen", "aachen_000001_000019"),
                       ("aachen", "aachen_000000_000019")],
             "val": [("frankfurt", "frankfurt_000000_000294")]}
    raw = h.stripes(H, W, [0, 13, 18, 255])
    for split, items in files.items():
        for i, (city, stem) in enumerate(items):
            h.write_image(str(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"),
                          H, W, seed=i)
            h.write_label(str(root / "gtFine" / split / city / f"{stem}{label_suffix}"), raw)
    return root, raw


def test_cityscapes_listing_splits_and_labels(tmp_path, helpers):
    root, raw = _make_cityscapes(helpers, tmp_path)
    info = get_dataset("cityscapes", root=str(tmp_path), split="train")  # parent folder given
    assert info.root == str(root) and info.reduce_zero_label is False
    assert info.num_classes == 19 and info.classes[0] == "road" and info.classes[-1] == "bicycle"
    np.testing.assert_array_equal(info.palette, CITYSCAPES_PALETTE)
    assert _names(info) == ["aachen_000000_000019_leftImg8bit.png",
                            "aachen_000001_000019_leftImg8bit.png",
                            "bochum_000000_000313_leftImg8bit.png"]
    assert info.samples[0][1] == str(root / "gtFine" / "train" / "aachen" /
                                     "aachen_000000_000019_gtFine_labelTrainIds.png")
    (label,) = _eval_labels("cityscapes", root, "val")
    np.testing.assert_array_equal(label, raw)  # trainIds and 255 pass through unchanged
    with pytest.raises(DatasetError, match="no split 'trainval'.*train, val, test"):
        get_dataset("cityscapes", root=str(root), split="trainval")
    with pytest.raises(DatasetError, match=r"folder missing: .*leftImg8bit.test"):
        get_dataset("cityscapes", root=str(root), split="test")


def test_cityscapes_unprepared_labels_point_at_the_tool(tmp_path, helpers):
    root, _ = _make_cityscapes(helpers, tmp_path, label_suffix="_gtFine_labelIds.png")
    with pytest.raises(DatasetError) as e:
        get_dataset("cityscapes", root=str(root), split="val")
    msg = str(e.value)
    assert "frankfurt_000000_000294_gtFine_labelTrainIds.png" in msg
    assert "tools/prepare_cityscapes.py" in msg and str(root) in msg
    os.rename(root / "gtFine", root / "gtFine_moved")
    with pytest.raises(DatasetError, match=r"folder missing: .*gtFine.val.*gtFine_trainvaltest"):
        get_dataset("cityscapes", root=str(root), split="val")


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "prepare_cityscapes", os.path.join(REPO, "tools", "prepare_cityscapes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# cityscapesScripts helpers/labels.py: the 19 evaluated ids in trainId order.
_EVAL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def test_prepare_cityscapes_id_to_train_id(tmp_path, helpers, capsys):
    tool = _load_tool()
    root, _ = _make_cityscapes(helpers, tmp_path, label_suffix="_gtFine_labelIds.png")
    ids = np.arange(H * W, dtype=np.int64).reshape(H, W) % 36  # ids 0..33 plus 34, 35
    ids[0, 0] = 200
    src = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png"
    helpers.write_label(str(src), ids)
    assert tool.main([str(root), "--quiet", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "val  : 1 written" in out and "train: 3 written" in out
    assert "not Cityscapes label ids" in out and "34 (1 files)" in out and "200 (1 files)" in out
    expected = np.full(256, 255, np.int64)
    expected[_EVAL_IDS] = np.arange(19)
    dst = str(src).replace("_labelIds.png", "_labelTrainIds.png")
    with Image.open(dst) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), expected[ids])
    # The prepared tree loads: trainIds pass through the pipeline unchanged.
    (label,) = _eval_labels("cityscapes", root, "val")
    np.testing.assert_array_equal(label, expected[ids])
    # Second run keeps the outputs; a corrupt id map is reported and gives exit code 1.
    src.write_bytes(b"not a png")
    assert tool.main([str(root), "--quiet", "--splits", "train"]) == 0
    assert "3 already present (kept)" in capsys.readouterr().out
    assert tool.main([str(root), "--quiet", "--overwrite", "--splits", "val"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert tool.main([str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "folder not found" in capsys.readouterr().err


# --- PASCAL Context --------------------------------------------------------------------

def _make_pascal_context(h, base):
    root = base / "VOCdevkit" / "VOC2010"
    raw = h.stripes(H, W, [0, 1, 30, 59])
    stems = ["2008_000002", "2008_000007", "2010_001000"]
    for i, stem in enumerate(stems):
        h.write_image(str(root / "JPEGImages" / f"{stem}.jpg"), H, W, seed=i, fmt="JPEG")
        h.write_label(str(root / "SegmentationClassContext" / f"{stem}.png"), raw)
    lists = root / "ImageSets" / "SegmentationContext"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2010_001000\n2008_000002\n")
    (lists / "val.txt").write_text("2008_000007\n")
    return root, raw


def test_pascal_context_59_and_60(tmp_path, monkeypatch, helpers):
    root, raw = _make_pascal_context(helpers, tmp_path)
    monkeypatch.setenv("KSEG_DATA", str(tmp_path))  # found as $KSEG_DATA/VOCdevkit/VOC2010
    info = get_dataset("pascal_context", split="train")
    assert info.root == str(root) and info.reduce_zero_label is True
    assert info.num_classes == 59 and info.classes == PASCAL_CONTEXT_59_CLASSES
    assert info.classes[0] == "aeroplane" and info.classes[-1] == "wood"
    np.testing.assert_array_equal(info.palette, PASCAL_CONTEXT_60_PALETTE[1:])
    assert _names(info) == ["2010_001000.jpg", "2008_000002.jpg"]  # list order
    assert info.samples[0][1] == str(root / "SegmentationClassContext" / "2010_001000.png")
    assert get_dataset("pascal_context_59", split="val").num_classes == 59
    (label59,) = _eval_labels("pascal_context", root, "val")
    np.testing.assert_array_equal(label59, np.where(raw == 0, 255, raw.astype(np.int32) - 1))

    info60 = get_dataset("pascal_context_60", root=str(tmp_path), split="val")
    assert info60.num_classes == 60 and info60.reduce_zero_label is False
    assert info60.classes == PASCAL_CONTEXT_60_CLASSES and info60.classes[0] == "background"
    _, label60 = load_sample(*info60.samples[0], mapper_for(info60))
    np.testing.assert_array_equal(label60, raw)

    with pytest.raises(DatasetError, match="no split 'test'.*Splits found in .*: train, val"):
        get_dataset("pascal_context", split="test")
    os.rename(root / "SegmentationClassContext", root / "moved")
    with pytest.raises(DatasetError, match=r"folder missing: .*SegmentationClassContext.*"
                                           r"dataset_converters/pascal_context.py"):
        get_dataset("pascal_context_60", split="train")


# --- COCO-Stuff 10k --------------------------------------------------------------------

def _make_coco_stuff(h, base, lists=True):
    root = base / "coco_stuff10k"
    raw = h.stripes(H, W, [0, 1, 100, 171])
    files = {"train2014": ["COCO_train2014_000000000077", "COCO_train2014_000000000009"],
             "test2014": ["COCO_train2014_000000000328"]}
    for sub, stems in files.items():
        for i, stem in enumerate(stems):
            h.write_image(str(root / "images" / sub / f"{stem}.jpg"), H, W, seed=i, fmt="JPEG")
            h.write_label(str(root / "annotations" / sub / f"{stem}_labelTrainIds.png"), raw)
    if lists:
        (root / "imageLists").mkdir()
        (root / "imageLists" / "train.txt").write_text("\n".join(files["train2014"]) + "\n")
        (root / "imageLists" / "test.txt").write_text("\n".join(files["test2014"]) + "\n")
    return root, raw


def test_coco_stuff10k_lists_alias_and_labels(tmp_path, helpers):
    root, raw = _make_coco_stuff(helpers, tmp_path)
    info = get_dataset("coco_stuff10k", root=str(tmp_path), split="train")
    assert info.root == str(root) and info.reduce_zero_label is True
    assert info.num_classes == 171 and info.classes == COCO_STUFF_CLASSES
    assert info.classes[0] == "person" and info.classes[-1] == "wood"
    assert info.list_file == str(root / "imageLists" / "train.txt")
    assert _names(info) == ["COCO_train2014_000000000077.jpg", "COCO_train2014_000000000009.jpg"]
    assert info.samples[0][1] == str(root / "annotations" / "train2014" /
                                     "COCO_train2014_000000000077_labelTrainIds.png")
    val, test = (get_dataset("coco_stuff10k", root=str(root), split=s) for s in ("val", "test"))
    assert val.samples == test.samples and len(val.samples) == 1
    (label,) = _eval_labels("coco_stuff10k", root, "val")
    np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw.astype(np.int32) - 1))
    plain = get_dataset("coco_stuff10k", root=str(root), split="test", reduce_zero_label=False)
    with pytest.raises(DatasetError, match=r"values \[171\]"):
        load_sample(*plain.samples[0], mapper_for(plain))
    with pytest.raises(DatasetError, match="no split 'val2014'.*train, test, val"):
        get_dataset("coco_stuff10k", root=str(root), split="val2014")


def test_coco_stuff10k_without_lists_and_missing_folder(tmp_path, helpers):
    root, _ = _make_coco_stuff(helpers, tmp_path, lists=False)
    info = get_dataset("coco_stuff10k", root=str(root), split="train")
    assert _names(info) == ["COCO_train2014_000000000009.jpg", "COCO_train2014_000000000077.jpg"]
    assert info.list_file == str(root / "images" / "train2014")
    os.rename(root / "annotations", root / "moved")
    with pytest.raises(DatasetError, match=r"folder missing: .*annotations.test2014.*"
                                           r"coco_stuff10k.py"):
        get_dataset("coco_stuff10k", root=str(root), split="test")
