"""Every bad-input case gives a DatasetError (or a TF error holding its text) naming the file."""

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from kseg.config import DataConfig
from kseg.data import DatasetError, build_dataset, get_dataset


def _eval_all(spec, **cfg):
    return list(build_dataset(DataConfig(dataset="folder", folder_spec=spec, **cfg), "train",
                              training=False))


def _truncate(path, keep=0.5):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


def test_missing_split_list_names_the_file(tmp_path):
    (tmp_path / "camvid").mkdir()
    (tmp_path / "camvid" / "val.txt").write_text("x.png\n")
    with pytest.raises(DatasetError) as e:
        get_dataset("camvid", root=str(tmp_path / "camvid"), split="train")
    assert str(tmp_path / "camvid" / "train.txt") in str(e.value)
    assert "Splits found" in str(e.value) and "val" in str(e.value)


def test_empty_split_list_names_the_file(tmp_path):
    (tmp_path / "train.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="split list .*train.txt is empty"):
        get_dataset("camvid", root=str(tmp_path), split="train")


def test_listed_image_or_label_missing(folder_dataset, tmp_path):
    spec = folder_dataset(splits={"train": ["s0", "ghost"]})
    with pytest.raises(DatasetError) as e:
        get_dataset("folder", folder_spec=spec)
    assert "missing" in str(e.value) and os.path.join("img", "ghost.png") in str(e.value)
    assert "train.txt" in str(e.value)
    os.remove(tmp_path / "ds" / "ann" / "s0.png")
    with pytest.raises(DatasetError, match=r"label map listed in .* is missing: .*ann.s0\.png"):
        get_dataset("folder", folder_spec=spec)


def test_corrupt_image_header_fails_eagerly(folder_dataset, tmp_path):
    spec = folder_dataset()
    (tmp_path / "ds" / "img" / "s2.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DatasetError, match=r"image .*s2\.png is unreadable or corrupt"):
        get_dataset("folder", folder_spec=spec)


def test_size_mismatch_gives_both_sizes(folder_dataset):
    spec = folder_dataset(image_sizes={"s1": (20, 30)})
    with pytest.raises(DatasetError) as e:
        get_dataset("folder", folder_spec=spec)
    msg = str(e.value)
    assert "s1.png" in msg and "32x24" in msg and "30x20" in msg


def test_colour_label_map_rejected(folder_dataset, tmp_path):
    spec = folder_dataset()
    from PIL import Image

    Image.new("RGB", (32, 24)).save(tmp_path / "ds" / "ann" / "s3.png")
    with pytest.raises(DatasetError, match=r"s3\.png has PIL mode RGB"):
        get_dataset("folder", folder_spec=spec)


def test_truncated_image_fails_at_iteration_with_path(folder_dataset, tmp_path):
    spec = folder_dataset()
    path = str(tmp_path / "ds" / "img" / "s1.png")
    _truncate(path)
    get_dataset("folder", folder_spec=spec)  # the header is fine: eager checks pass
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _eval_all(spec)
    assert "DatasetError" in str(e.value) and path in str(e.value)
    assert "truncated" in str(e.value)


def test_label_values_out_of_range_give_values_and_path(folder_dataset, helpers, tmp_path):
    spec = folder_dataset(labels={"s0": helpers.stripes(24, 32, [0, 1]),
                                  "s1": helpers.stripes(24, 32, [2, 7, 9])})
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _eval_all(spec)
    msg = str(e.value)
    assert str(tmp_path / "ds" / "ann" / "s1.png") in msg and "[7, 9]" in msg
    assert "outside [0, 3)" in msg and "255" in msg
    # The training pipeline surfaces the same error.
    cfg = DataConfig(dataset="folder", folder_spec=spec, crop_size=(8, 8), scale=(32, 24))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"s1\.png has values \[7, 9\]"):
        for _ in build_dataset(cfg, "train", training=True, batch_size=2).take(4):
            pass


def test_skip_bad_samples_logs_and_records_every_bad_file(folder_dataset, helpers, tmp_path,
                                                          caplog):
    labels = {f"s{i}": helpers.stripes(24, 32, [0, 1]) for i in range(5)}
    labels["s3"] = helpers.stripes(24, 32, [0, 5])  # out of range (K = 3)
    spec = folder_dataset(labels=labels, splits={"train": ["s0", "s1", "s2", "s3", "s4", "s9"]})
    _truncate(str(tmp_path / "ds" / "img" / "s1.png"))  # found at decode time
    cfg = DataConfig(dataset="folder", folder_spec=spec, skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger="kseg.data"):
        info = get_dataset("folder", folder_spec=spec, skip_bad_samples=True)
        assert len(info.samples) == 5 and len(info.bad_samples) == 1  # s9 missing: eager
        out = list(build_dataset(cfg, "train", training=False, info=info))
    assert len(out) == 3  # s0, s2, s4
    bad = {os.path.basename(p): reason for p, reason in info.bad_samples}
    assert set(bad) == {"s9.png", "s1.png", "s3.png"}
    assert "truncated" in bad["s1.png"] and "[5]" in bad["s3.png"]
    logged = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name in ("s9.png", "s1.png", "s3.png"):
        assert name in logged
    assert "3 of 6 skipped" in logged


def test_skip_bad_samples_still_raises_when_all_are_bad(folder_dataset, helpers):
    spec = folder_dataset(labels={"s0": helpers.stripes(24, 32, [4])})
    cfg = DataConfig(dataset="folder", folder_spec=spec, skip_bad_samples=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="every sample .* is bad"):
        next(iter(build_dataset(cfg, "train", training=True, batch_size=1)))


def test_interpreter_exits_with_a_live_iterator(folder_dataset):
    """A module-level iterator with in-flight PIL decodes must not hang interpreter exit."""
    spec = folder_dataset()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = textwrap.dedent(f"""
        from kseg.config import DataConfig
        from kseg.data import build_dataset
        cfg = DataConfig(dataset="folder", folder_spec={spec!r}, crop_size=(8, 8),
                         scale=(32, 24))
        it = iter(build_dataset(cfg, "train", training=True, batch_size=2))
        next(it)
        print("ok", flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok" in proc.stdout


def test_label_mapper_handles_16_bit_labels():
    from kseg.data import LabelMapper

    mapper = LabelMapper(4, label_map={1000: 3})
    out = mapper(np.array([[0, 1000], [2, 255]], np.int32))
    np.testing.assert_array_equal(out, [[0, 3], [2, 255]])
    with pytest.raises(DatasetError, match=r"values \[700\]"):
        mapper(np.array([[700]], np.int32), "x.png")
