"""python -m kseg.export end to end, the export spec, and the TensorFlow-free edge kit."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.export.export_utils import CAMVID_RECIPE, REPO, run_cli, tiny_sets

EDGE_SCRIPT = os.path.join(REPO, "export", "tflite_predict.py")
MOBILE_SPEC = os.path.join(REPO, "export", "segformer_mit_b0_mobile.yaml")


def _block_tensorflow(tmp_path):
    """A PYTHONPATH dir whose ``tensorflow`` and ``kseg`` packages raise ImportError."""
    shim = tmp_path / "shim"
    for name in ("tensorflow", "kseg", "keras"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the edge kit must not need it')\n")
    return str(shim)


@pytest.fixture(scope="module")
def exported_tflite(tmp_path_factory, camvid_tiny, b0_camvid):
    _, ckpt = b0_camvid
    out = tmp_path_factory.mktemp("tflite") / "b0.tflite"
    r = run_cli("-m", "kseg.export", "--recipe", CAMVID_RECIPE, "--checkpoint", ckpt,
                "--format", "tflite", "--input-size", "64", "96", "--verify-images", "2",
                "--output", str(out), *tiny_sets(camvid_tiny))
    return r, out


def test_cli_tflite_verifies_and_writes_sidecar(exported_tflite):
    r, out = exported_tflite
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pixel agreement" in r.stdout and "GELU" in r.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["classes"][0] == "sky" and len(meta["palette"]) == 11
    assert meta["input"]["shape"] == [1, 64, 96, 3] and meta["input"]["dtype"] == "uint8"
    assert meta["outputs"]["logits"]["stride"] == 4 and meta["quantize"] == "none"
    assert meta["verification"]["images"] == 2 and meta["verification"]["agreement"] >= 99.9


def test_edge_kit_runs_without_tensorflow(tmp_path, exported_tflite):
    _, model = exported_tflite
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)).save(images / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(images / "b.png")
    env = {"PYTHONPATH": _block_tensorflow(tmp_path)}
    r = run_cli(EDGE_SCRIPT, str(model), str(images), "--output", str(tmp_path / "out"),
                "--threads", "1", env_extra=env)
    assert r.returncode == 0, r.stderr[-3000:]
    for stem, size in (("a", (100, 70)), ("b", (90, 120))):
        label = Image.open(tmp_path / "out" / f"{stem}.png")
        assert label.size == size and label.mode == "P"
        assert np.asarray(label).max() < 11
        assert label.getpalette()[:3] == [128, 128, 128]  # "sky" colour from the sidecar
        assert Image.open(tmp_path / "out" / f"{stem}_overlay.png").size == size
    # The shim really blocks TensorFlow.
    r = run_cli("-c", "import tensorflow", env_extra=env)
    assert r.returncode != 0 and "blocked" in r.stderr


def _main(*argv):
    from kseg.export.__main__ import main

    return main([str(a) for a in argv])


@pytest.mark.slow
def test_cli_spec_int8(tmp_path, capsys, camvid_tiny, b0_camvid):
    """The mobile spec (int8), shrunk to 64x64 and 4 calibration images for the test."""
    _, ckpt = b0_camvid
    out = tmp_path / "b0_int8.tflite"
    # --min-agreement 101 cannot be met: exit status 1, the artifact and its sidecar kept.
    rc = _main("--spec", MOBILE_SPEC, "--recipe", CAMVID_RECIPE, "--checkpoint", ckpt,
               "--input-size", 64, 64, "--calibration-images", 4, "--verify-images", 2,
               "--min-agreement", 101, "--output", out, *tiny_sets(camvid_tiny))
    captured = capsys.readouterr()
    assert rc == 1 and "is below 101.0%" in captured.err, captured.err[-3000:]
    assert out.exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["quantize"] == "int8" and meta["input"]["shape"] == [1, 64, 64, 3]
    assert meta["float_ops"] == ["MEAN", "SQUARED_DIFFERENCE", "RSQRT", "BATCH_MATMUL", "SOFTMAX"]
    assert meta["ops"]["int8_ops"] > meta["ops"]["float_ops"]
    assert "calibration: 4 images" in captured.out


@pytest.mark.slow
def test_cli_saved_model(tmp_path, capsys, camvid_tiny, b0_camvid):
    _, ckpt = b0_camvid
    out = tmp_path / "sm"
    rc = _main("--recipe", CAMVID_RECIPE, "--checkpoint", ckpt, "--format", "saved_model",
               "--verify-images", 1, "--output", out, *tiny_sets(camvid_tiny))
    assert rc == 0, capsys.readouterr().err[-3000:]
    meta = json.loads((out / "assets.extra" / "kseg.json").read_text())
    assert meta["inference"]["scale"] == [240, 180] and meta["classes"][0] == "sky"
    assert meta["verification"]["agreement"] >= 99.9


def test_cli_errors(tmp_path, capsys, b0_camvid):
    _, ckpt = b0_camvid
    rc = _main("--recipe", CAMVID_RECIPE, "--checkpoint", tmp_path / "missing.weights.h5",
               "--format", "tflite", "--output", tmp_path / "x.tflite")
    assert rc == 2 and "missing.weights.h5 does not exist" in capsys.readouterr().err
    rc = _main("--recipe", CAMVID_RECIPE, "--checkpoint", ckpt, "--format", "tflite",
               "--output", tmp_path / "x.tflite", "--verify-images", 0,
               "--set", "model.name=segformer_mit_b1")
    assert rc == 2 and "does not fit model segformer_mit_b1" in capsys.readouterr().err
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("format: tflite\nquantise: int8\n")
    rc = _main("--spec", bad_spec, "--recipe", CAMVID_RECIPE, "--checkpoint", ckpt,
               "--output", tmp_path / "x.tflite")
    assert rc == 2 and "unknown key(s) quantise" in capsys.readouterr().err
    rc = _main("--recipe", CAMVID_RECIPE, "--checkpoint", ckpt, "--format", "tflite",
               "--output", tmp_path / "x.pb")
    assert rc == 2 and "must end with .tflite" in capsys.readouterr().err
