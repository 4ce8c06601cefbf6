"""python -m kseg.train / evaluate / predict on real CamVid with tiny sizes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "segformer_mit_b0_camvid.yaml")
TINY = [
    "data.scale=[120,90]", "data.crop_size=[64,64]", "train.global_batch_size=2",
    "eval.scale=[120,90]", "data.val_split=val_tiny", "train.log_interval=1",
]


@pytest.fixture(scope="module")
def camvid_tiny(tmp_path_factory):
    """A CamVid root whose val split lists 3 images (links to the real files)."""
    from kseg.data import find_data_root

    real = find_data_root("camvid")
    root = tmp_path_factory.mktemp("camvid")
    for name in os.listdir(real):
        os.symlink(os.path.join(real, name), root / name)
    os.symlink(os.path.join(real, "val"), root / "val_tiny")
    os.symlink(os.path.join(real, "valannot"), root / "val_tinyannot")
    with open(os.path.join(real, "val.txt")) as f:
        (root / "val_tiny.txt").write_text("".join(f.readlines()[:3]))
    return str(root)


def tensorboard_tags(folder):
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    tags = set()
    for path in folder.rglob("events*"):
        for record in tf.data.TFRecordDataset(str(path)):
            tags.update(v.tag for v in event_pb2.Event.FromString(record.numpy()).summary.value)
    return tags


def cli(module, *args, **kw):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, **kw)


def sets(*items):
    return [arg for item in items for arg in ("--set", item)]


@pytest.mark.slow
def test_train_evaluate_predict(tmp_path, camvid_tiny):
    work = tmp_path / "work"
    r = cli("kseg.train", "--recipe", RECIPE, "--work-dir", str(work),
            *sets(*TINY, f"data.root={camvid_tiny}", "train.max_steps=4", "train.eval_interval=2",
                  "train.backup_interval=2"))
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("recipe.yaml", "best.weights.h5", "last.weights.h5", "summary.json", "eval/step_2.json",
                 "eval/step_4.json"):
        assert (work / name).exists(), name
    assert not (work / "backup").exists()  # finished runs leave no backup
    summary = json.loads((work / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["global_batch_size"] == 2
    ev = json.loads((work / "eval" / "step_4.json").read_text())
    assert set(ev) >= {"aAcc", "mIoU", "mAcc", "IoU", "Acc", "confusion_matrix"}
    assert len(ev["IoU"]) == 11 and "sky" in ev["IoU"]
    # 3 val images of 360x480, void pixels excluded: the matrix counts labelled pixels only.
    assert 0 < np.sum(ev["confusion_matrix"]) <= 3 * 360 * 480
    tags = tensorboard_tags(work / "tensorboard")
    assert {"train/loss", "train/lr", "val/mIoU", "val/overlays"} <= tags, tags

    r = cli("kseg.evaluate", "--recipe", RECIPE, "--checkpoint", str(work / "best.weights.h5"),
            "--output", str(tmp_path / "eval.json"), *sets(*TINY, f"data.root={camvid_tiny}"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mIoU" in r.stdout and "bicyclist" in r.stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["mode"] == "whole" and result["split"] == "val_tiny"

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8)).save(images / "a.jpg")
    r = cli("kseg.predict", "--recipe", RECIPE, "--checkpoint", str(work / "best.weights.h5"),
            "--input", str(images), "--output", str(tmp_path / "pred"),
            *sets(*TINY, f"data.root={camvid_tiny}"))
    assert r.returncode == 0, r.stderr[-3000:]
    label = Image.open(tmp_path / "pred" / "a.png")
    assert label.size == (100, 70) and label.mode == "P" and np.asarray(label).max() < 11
    assert Image.open(tmp_path / "pred" / "a_overlay.png").size == (100, 70)


def _step_lines(text):
    """{step: "loss L lr X"} from the ``step N/M loss L lr X (Ts)`` lines of kseg.train."""
    out = {}
    for line in text.splitlines():
        if line.startswith("step "):
            head, rest = line.split(" ", 2)[1], line.split(" ", 2)[2]
            out[int(head.split("/")[0])] = rest.rsplit(" (", 1)[0]
    return out


@pytest.mark.slow
def test_killed_run_resumes_at_the_same_step(tmp_path, camvid_tiny):
    """SIGKILL mid-run, then: a resume whose loss turns non-finite stops with a clear
    message and leaves the backup as it was; a plain --resume continues from the backup
    with the same step counter and learning rate, losing at most one backup interval, and
    ends with a final checkpoint."""
    work = tmp_path / "work"
    args = ["--recipe", RECIPE, "--work-dir", str(work),
            *sets(*TINY, f"data.root={camvid_tiny}", "train.max_steps=8", "train.eval_interval=8",
                  "train.backup_interval=2", "data.cache=false")]
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = tmp_path / "killed.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "kseg.train", *args], cwd=REPO, env=env,
                                stdout=f, stderr=subprocess.DEVNULL)
        meta = work / "backup" / "training_metadata.json"
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if meta.exists() and json.loads(meta.read_text() or "{}").get("step", 0) >= 2:
                # let it run into the next backup interval, then kill it without warning
                if max(_step_lines(log.read_text()) or [0]) >= 3:
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = _step_lines(log.read_text())
    backed_up = json.loads(meta.read_text())["step"]
    reached = max(killed)
    assert 0 < backed_up < 8 and backed_up <= reached
    assert reached - backed_up <= 2  # at most one backup interval of work lost

    r = cli("kseg.train", *args)  # without --resume: refuses, nothing overwritten
    assert r.returncode != 0 and "--resume" in r.stderr

    backup_bytes = (work / "backup" / "latest.weights.h5").read_bytes()
    r = cli("kseg.train", *args, "--resume", "--set", "model.class_weight=[.inf,1,1,1,1,1,1,1,1,1,1]")
    assert r.returncode != 0
    assert f"non-finite loss at step {backed_up + 1}" in r.stderr, r.stderr[-3000:]
    assert (work / "backup" / "latest.weights.h5").read_bytes() == backup_bytes  # last good state kept
    assert json.loads(meta.read_text())["step"] == backed_up

    r = cli("kseg.train", *args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming at step {backed_up}" in r.stdout
    resumed = _step_lines(r.stdout)
    assert min(resumed) == backed_up + 1 and max(resumed) == 8
    for step in range(backed_up + 1, reached + 1):  # same schedule position: same learning rate
        assert resumed[step].split(" lr ")[1] == killed[step].split(" lr ")[1], (step, resumed, killed)
    summary = json.loads((work / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["resumed_at"] == backed_up  # the step counter continued
    assert (work / "last.weights.h5").exists() and not (work / "backup").exists()
