"""Bad input through ``python -m kseg.train`` (in process): each case stops with one clear
error naming the culprit; ``data.skip_bad_samples`` logs each bad file and reports the
count instead, dropping nothing silently."""

import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from kseg.train import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "segformer_mit_b0_camvid.yaml")


def _image(path, h, w, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _label(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode="L").save(path)


@pytest.fixture
def dataset(tmp_path):
    """A 3-class folder dataset of 4 train and 2 val images (40x48); returns (root, spec)."""
    root = tmp_path / "ds"
    for split, n in (("train", 4), ("val", 2)):
        names = []
        for i in range(n):
            name = f"{split}{i}"
            _image(str(root / "img" / f"{name}.png"), 40, 48, seed=i)
            lab = np.zeros((40, 48), np.uint8)
            lab[:, 16:32], lab[:, 32:] = 1, 2
            _label(str(root / "ann" / f"{name}.png"), lab)
            names.append(name)
        (root / f"{split}.txt").write_text("".join(n + "\n" for n in names))
    spec = {"name": "tiny", "image_dir": "img", "label_dir": "ann", "image_suffix": ".png",
            "label_suffix": ".png", "classes": ["a", "b", "c"],
            "splits": {"train": "train.txt", "val": "val.txt"}}
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root, str(root / "dataset.yaml")


def _argv(tmp_path, spec, *extra):
    sets = ["data.dataset=folder", f"data.folder_spec={spec}", "model.num_classes=3", "data.scale=[48,40]",
            "data.crop_size=[32,32]", "eval.scale=[48,40]", "train.global_batch_size=2", "train.max_steps=2",
            "train.eval_interval=2", "train.backup_interval=2", "train.num_overlays=0", "data.cache=false",
            *extra]
    return ["--recipe", RECIPE, "--work-dir", str(tmp_path / "work")] + [a for s in sets for a in ("--set", s)]


def _fails(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = str(e.value.code)
    assert message.startswith("kseg.train:"), message
    assert "Traceback" not in message and "\n  File " not in message, message
    return message


def test_mistyped_recipe_key(tmp_path, dataset):
    _, spec = dataset
    msg = _fails(_argv(tmp_path, spec, "train.max_step=3"))
    assert "train.max_step" in msg and "max_steps" in msg  # the culprit and the valid keys


def test_missing_dataset_folder(tmp_path):
    msg = _fails(["--recipe", RECIPE, "--work-dir", str(tmp_path / "w"), "--set",
                  f"data.root={tmp_path / 'no_such_camvid'}"])
    assert "no_such_camvid" in msg


def test_empty_split_list(tmp_path, dataset):
    root, spec = dataset
    (root / "train.txt").write_text("\n")
    msg = _fails(_argv(tmp_path, spec))
    assert "train.txt" in msg and "empty" in msg


def test_label_and_image_of_different_sizes(tmp_path, dataset):
    root, spec = dataset
    _image(str(root / "img" / "train2.png"), 30, 48, seed=9)
    msg = _fails(_argv(tmp_path, spec))
    assert "train2.png" in msg and "48" in msg and "30" in msg


def test_corrupt_image(tmp_path, dataset):
    root, spec = dataset
    (root / "img" / "train1.png").write_bytes(b"this is not a png")
    msg = _fails(_argv(tmp_path, spec))
    assert "train1.png" in msg


def test_checkpoint_of_another_variant(tmp_path, dataset):
    import kseg

    _, spec = dataset
    other = tmp_path / "b1.weights.h5"
    kseg.build_model("segformer_mit_b1", num_classes=3).save_weights(str(other))
    msg = _fails(_argv(tmp_path, spec, f"model.pretrained={other}"))
    assert "b1.weights.h5" in msg and "segformer_mit_b0" in msg


@pytest.mark.slow
def test_truncated_image_found_while_training(tmp_path, dataset):
    root, spec = dataset
    path = root / "img" / "train3.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still reads: only decoding fails
    msg = _fails(_argv(tmp_path, spec, "train.max_steps=4", "train.eval_interval=4", "train.backup_interval=4"))
    assert "train3.png" in msg


@pytest.mark.slow
def test_label_values_out_of_range_found_while_training(tmp_path, dataset):
    root, spec = dataset
    lab = np.full((40, 48), 7, np.uint8)
    _label(str(root / "ann" / "train0.png"), lab)
    msg = _fails(_argv(tmp_path, spec, "train.max_steps=4", "train.eval_interval=4", "train.backup_interval=4"))
    assert "train0.png" in msg and "7" in msg


@pytest.mark.slow
def test_skip_bad_samples_logs_and_counts(tmp_path, dataset, capsys, caplog):
    root, spec = dataset
    path = root / "img" / "train3.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _label(str(root / "ann" / "train0.png"), np.full((40, 48), 7, np.uint8))
    main(_argv(tmp_path, spec, "data.skip_bad_samples=true", "train.max_steps=4", "train.eval_interval=4",
               "train.backup_interval=4"))
    out = capsys.readouterr().out
    assert "skipped 2 bad sample(s)" in out and "train3.png" in out and "train0.png" in out
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "train3.png" in logged and "train0.png" in logged
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert sorted(os.path.basename(p) for p in summary["skipped_bad_samples"]) == ["train0.png", "train3.png"]
    assert summary["steps"] == 4
