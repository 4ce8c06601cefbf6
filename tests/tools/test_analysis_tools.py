"""tools/browse_dataset.py, analyze_logs.py, confusion_matrix.py, benchmark_checkpoint.py:
each CLI's --help, the numbers they read or measure, and the PNGs they write."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "segformer_mit_b0_camvid.yaml")
TOOLS = ("browse_dataset", "analyze_logs", "confusion_matrix", "benchmark_checkpoint")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"kseg_tools_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("name", TOOLS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        load_tool(name).main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--output" in out or "--json" in out


@pytest.mark.slow
def test_browse_dataset_draws_augmented_crops_and_labels(tmp_path, capsys):
    from kseg.data import get_dataset

    tool = load_tool("browse_dataset")
    out = tmp_path / "browse.png"
    sets = ["--set", "data.scale=[120,90]", "--set", "data.crop_size=[48,64]"]
    assert tool.main(["--recipe", RECIPE, *sets, "--num", "3", "--cols", "2", "--output", str(out)]) == 0
    assert "3 samples of camvid/train (crop 64x48" in capsys.readouterr().out
    picture = png(out)
    assert picture.shape[1] == 2 * 320  # two columns of 3.2 in at 100 dpi
    # The label panels hold the dataset's palette colours (nearest-neighbour drawn).
    colours = {tuple(c) for c in picture.reshape(-1, 3)[::7]}
    palette = get_dataset("camvid", split="train", check=False).palette
    assert sum(tuple(int(v) for v in c) in colours for c in palette) >= 3

    samples, info = tool.read_samples(
        __import__("kseg").load_recipe(RECIPE, ["data.scale=[120,90]", "data.crop_size=[48,64]"]),
        "train", 2, 0, True)
    assert [s[0].shape for s in samples] == [(48, 64, 3)] * 2 and samples[0][0].dtype == np.uint8
    assert all(set(np.unique(s[1])) <= set(range(info.num_classes)) | {255} for s in samples)


def write_run(folder, losses, mious):
    """A work dir whose TensorBoard logs hold train/loss, train/lr and val/mIoU."""
    import tensorflow as tf

    train = tf.summary.create_file_writer(str(folder / "tensorboard" / "train"))
    val = tf.summary.create_file_writer(str(folder / "tensorboard" / "val"))
    for step, loss in losses.items():
        with train.as_default(step=step):
            tf.summary.scalar("train/loss", loss)
            tf.summary.scalar("train/lr", 1e-3 * (1 - step / 100))
    for step, miou in mious.items():
        with val.as_default(step=step):
            tf.summary.scalar("val/mIoU", miou)
            tf.summary.image("val/overlays", np.zeros((1, 4, 12, 3), np.uint8))
    train.close()
    val.close()


def test_analyze_logs_reads_the_runs_and_plots_them(tmp_path, capsys):
    tool = load_tool("analyze_logs")
    write_run(tmp_path / "a", {10: 2.0, 20: 1.5, 30: 1.25}, {15: 20.0, 30: 35.5})
    write_run(tmp_path / "b", {10: 2.2, 20: 1.9}, {20: 12.0})
    scalars = tool.read_scalars(str(tmp_path / "a"))
    assert set(scalars) == {"train/loss", "train/lr", "val/mIoU"}  # images are not scalars
    assert scalars["train/loss"] == ([10, 20, 30], [2.0, 1.5, 1.25])
    assert scalars["val/mIoU"] == ([15, 30], [20.0, 35.5])

    out = tmp_path / "curves.png"
    assert tool.main([str(tmp_path / "a"), str(tmp_path / "b"), "--legend", "base", "other",
                      "--keys", "loss", "lr", "mIoU", "aAcc", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "base: last step 30, loss 1.2500 best mIoU 35.50 at step 30 (2 evaluations)" in text
    assert "other: last step 20, loss 1.9000 best mIoU 12.00 at step 20" in text
    assert "not logged: aAcc" in text
    assert png(out).shape[1] == 4 * 500  # one 5-inch panel per key

    with pytest.raises(FileNotFoundError, match="no TensorBoard events"):
        tool.read_scalars(str(tmp_path / "missing"))
    with pytest.raises(SystemExit, match="none of the keys"):
        tool.main([str(tmp_path / "a"), "--keys", "mAcc", "--output", str(out)])


def test_confusion_matrix_normalises_rows(tmp_path, capsys):
    tool = load_tool("confusion_matrix")
    cm = [[80, 20, 0], [10, 30, 0], [0, 0, 0]]  # class 'c' absent from the ground truth
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"confusion_matrix": cm, "mIoU": 41.5, "aAcc": 78.3,
                                "IoU": {"a": 72.7, "b": 50.0, "c": None}}))
    out = tmp_path / "cm.png"
    assert tool.main([str(path), "--output", str(out)]) == 0
    assert "3 classes, 140 pixels" in capsys.readouterr().out
    assert png(out).shape[0] >= 400

    matrix, names, _ = tool.load(str(path))
    assert names == ["a", "b", "c"]
    shown = tool.draw(matrix, names, normalize=True).axes[0].images[0].get_array()
    np.testing.assert_allclose(shown[:2], [[80, 20, 0], [25, 75, 0]])
    assert np.isnan(np.asarray(shown.filled(np.nan))[2]).all()  # no ground truth: empty row
    counts = tool.draw(matrix, names, normalize=False).axes[0].images[0].get_array()
    np.testing.assert_array_equal(counts, cm)

    (tmp_path / "bad.json").write_text(json.dumps({"mIoU": 1.0}))
    with pytest.raises(SystemExit, match="has no 'confusion_matrix'"):
        tool.main([str(tmp_path / "bad.json"), "--output", str(out)])


@pytest.mark.slow
def test_benchmark_checkpoint_times_labels_at_input_size(tmp_path, capsys):
    import kseg
    from kseg.models import build_from_recipe

    model = build_from_recipe(kseg.load_recipe(RECIPE))
    checkpoint = tmp_path / "b0.weights.h5"
    model.save_weights(str(checkpoint))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (60, 80), "b.jpg": (45, 70)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / name)
    out = tmp_path / "bench.json"
    tool = load_tool("benchmark_checkpoint")
    assert tool.main(["--recipe", RECIPE, "--checkpoint", str(checkpoint), "--images", str(images),
                      "--warmup", "1", "--repeat", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 images (70x45, 80x60), mode whole" in text and "FPS" in text
    result = json.loads(out.read_text())
    assert result["num_images"] == 2 and len(result["latencies_ms"]) == 4 and result["compiled"]
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["fps"] == pytest.approx(1000 / result["mean_ms"])
