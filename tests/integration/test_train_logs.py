"""What a short ``python -m kseg.train`` run with odd intervals leaves behind: every
TensorBoard tag at every step it belongs to (train scalars in the train run, evaluation
scalars and overlays in the val run, all against the optimizer step, mIoU in percent as
in the eval JSON), plain progress lines in a pipe, and no debug output or avoidable
warnings."""

import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from tests.integration.test_train_cli import RECIPE, REPO, TINY, camvid_tiny, sets  # noqa: F401

TRAIN_TAGS = {"train/loss", "train/lr", "train/time", "train/data_time"}
VAL_TAGS = {"val/mIoU", "val/aAcc", "val/mAcc", "val/overlays"}


def read_events(run_dir):
    """{tag: {step: value}} of every event file under ``run_dir`` (images: their count)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    out = defaultdict(dict)
    for path in run_dir.glob("events*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for v in event.summary.value:
                value = tf.make_ndarray(v.tensor)
                out[v.tag][event.step] = value.item() if value.size == 1 else len(value) - 2
    return out


@pytest.mark.slow
def test_odd_intervals_log_every_step_they_name(tmp_path, camvid_tiny):  # noqa: F811
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    for key in ("KSEG_PRINT_FINGERPRINT", "KSEG_PROGRESS"):
        env.pop(key, None)
    r = subprocess.run(
        [sys.executable, "-m", "kseg.train", "--recipe", RECIPE, "--work-dir", str(work),
         *sets(*TINY, f"data.root={camvid_tiny}", "train.max_steps=7", "train.eval_interval=3",
               "train.log_interval=2", "train.backup_interval=7", "train.num_overlays=2")],
        cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]

    train, val = read_events(work / "tensorboard" / "train"), read_events(work / "tensorboard" / "val")
    assert set(train) == TRAIN_TAGS and set(val) == VAL_TAGS, (sorted(train), sorted(val))
    for tag in TRAIN_TAGS:
        assert sorted(train[tag]) == [2, 4, 6, 7], (tag, train[tag])  # log_interval, and the last step
    for tag in VAL_TAGS:
        assert sorted(val[tag]) == [3, 6, 7], (tag, val[tag])  # eval_interval, and the last step
    assert all(n == 2 for n in val["val/overlays"].values())
    for step in (3, 6, 7):  # TensorBoard and the eval JSON agree, in percent
        ev = json.loads((work / "eval" / f"step_{step}.json").read_text())
        for key in ("mIoU", "aAcc", "mAcc"):
            assert val[f"val/{key}"][step] == pytest.approx(ev[key], abs=1e-4)
    assert any(v > 1 for v in val["val/aAcc"].values())  # percent, not a fraction

    # Plain progress lines in a pipe: the first step at once, then the logged steps; the
    # console and TensorBoard show the same loss and learning rate.
    assert "\r" not in r.stdout and "\x1b[" not in r.stdout
    lines = {int(m.group(1)): m for m in re.finditer(
        r"^step (\d+)/7 loss ([\d.]+) lr ([\d.e+-]+) \(([\d.]+) s/step, data ([\d.]+) s, eta [^)]+\)",
        r.stdout, re.M)}
    assert sorted(lines) == [1, 2, 4, 6, 7], r.stdout
    for step in (2, 4, 6, 7):
        assert float(lines[step].group(2)) == pytest.approx(train["train/loss"][step], abs=6e-5)
        assert float(lines[step].group(3)) == pytest.approx(train["train/lr"][step], rel=6e-3)
        assert 0 <= train["train/data_time"][step] <= train["train/time"][step]
    assert np.isfinite(list(train["train/loss"].values())).all()

    # No debug output or avoidable warnings.
    assert "weights fingerprint" not in r.stdout
    assert "shuffle=True" not in r.stderr
