"""Two worker processes on localhost (TF_CONFIG, MultiWorkerMirroredStrategy) train 3
steps of the CLI: both end with bit-identical weights equal to the single-process run,
and only the chief writes checkpoints, summaries and TensorBoard events."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.integration.test_train_cli import RECIPE, REPO, camvid_tiny, sets  # noqa: F401

TINY = ["data.scale=[120,90]", "data.crop_size=[64,64]", "train.global_batch_size=2", "eval.scale=[120,90]",
        "data.val_split=val_tiny", "train.log_interval=1", "train.max_steps=3", "train.eval_interval=3",
        "train.backup_interval=3", "data.cache=false", "train.num_overlays=1",
        # SGD without warmup: three steps move the weights far beyond the tolerance, and
        # the update is linear in the gradient. (AdamW divides by sqrt(v): on weights whose
        # true gradient is ~0, e.g. biases before a BatchNorm, it turns float rounding of the
        # all-reduce into full-size steps of either sign, a ~3e-5 relative difference.)
        "optim.name=sgd", "optim.lr=0.01", "schedule.warmup_steps=0"]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _losses(stdout):
    """The logged training losses, ``step i/N loss X`` lines."""
    return [float(l.split(" loss ")[1].split()[0]) for l in stdout.splitlines() if l.startswith("step ")]


def _model_weights(path):
    """{dataset path: float64 array} of a .weights.h5 file, optimizer state left out."""
    import h5py

    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()].astype(np.float64))
                     if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer") else None)
    return out


def _fingerprint(stdout):
    line = [l for l in stdout.splitlines() if l.startswith("weights fingerprint: ")]
    assert line, stdout[-3000:]
    return json.loads(line[-1][len("weights fingerprint: "):])


@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path, camvid_tiny):  # noqa: F811
    args = ["--recipe", RECIPE, *sets(*TINY, f"data.root={camvid_tiny}")]
    base_env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", "KSEG_PRINT_FINGERPRINT": "1"}
    base_env.pop("TF_CONFIG", None)
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**base_env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kseg.train", *args, "--work-dir", str(tmp_path / f"w{i}")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    single = subprocess.run([sys.executable, "-m", "kseg.train", *args, "--work-dir", str(tmp_path / "single")],
                            cwd=REPO, env=base_env, capture_output=True, text=True, timeout=1200)
    outs = [p.communicate(timeout=1200) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    assert single.returncode == 0, single.stderr[-4000:]
    assert "MultiWorkerMirroredStrategy x2" in outs[0][0]

    f0, f1, fs = _fingerprint(outs[0][0]), _fingerprint(outs[1][0]), _fingerprint(single.stdout)
    assert f0["sha256"] == f1["sha256"]  # the workers hold bit-identical weights

    chief, other = tmp_path / "w0", tmp_path / "w1"
    for name in ("recipe.yaml", "last.weights.h5", "best.weights.h5", "summary.json", "eval/step_3.json"):
        assert (chief / name).exists(), name
    assert list((chief / "tensorboard").rglob("events*"))
    assert not other.exists() or not any(other.rglob("*")), sorted(map(str, other.rglob("*")))
    summary = json.loads((chief / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["replicas"] == 2

    # The same losses and weights as one process with the same global batch.
    assert _losses(outs[0][0]) == pytest.approx(_losses(single.stdout), rel=1e-5)
    multi, one = _model_weights(chief / "last.weights.h5"), _model_weights(tmp_path / "single" / "last.weights.h5")
    assert multi.keys() == one.keys()
    diff = sum(float(np.sum((multi[k] - one[k]) ** 2)) for k in one) ** 0.5
    norm = sum(float(np.sum(one[k] ** 2)) for k in one) ** 0.5
    assert diff <= 1e-5 * norm, f"relative L2 difference {diff / norm:.2e}"
    cm0 = json.loads((chief / "eval" / "step_3.json").read_text())["confusion_matrix"]
    cms = json.loads((tmp_path / "single" / "eval" / "step_3.json").read_text())["confusion_matrix"]
    total = sum(map(sum, cms))
    assert sum(abs(a - b) for ra, rb in zip(cm0, cms) for a, b in zip(ra, rb)) <= 1e-4 * total
