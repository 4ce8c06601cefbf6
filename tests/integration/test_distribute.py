"""MirroredStrategy on 2 logical CPU devices reproduces one device.

The checks run in one subprocess (``tests/training/replica_check.py all``): logical CPU
devices must be configured before TensorFlow initialises, which the pytest process has
long done. See that script for what each check trains.

Tolerances. Losses: 1e-5 relative per step. Weights: 1e-5 relative in L2 over the model
after 3 AdamW steps, gauge tensors excluded (below). Per element only a sanity bound holds: summing a gradient over
two half-batches instead of one batch changes its rounding (~1e-7 relative), and AdamW
moves a weight by ~lr * m / (sqrt(v) + eps) whatever the gradient's size, so a gradient
component that is ~0 (exactly 0 for "gauge" parameters such as a bias feeding a
BatchNorm or an attention key bias, which cancel out of the output) is rounding noise
whose sign decides a step of up to lr. Gauge tensors (first-batch gradient below 1e-6 of
the largest component) do not change any output and are left out of the L2 bound;
replica_check.py reports them, the L2 with them, and the largest per-element differences.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.training import families

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def results():
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    r = subprocess.run([sys.executable, os.path.join("tests", "training", "replica_check.py"), "all"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            d = json.loads(line[len("RESULT "):])
            out[(d["check"], d["family"])] = d
    assert out, (r.stdout[-2000:], r.stderr[-4000:])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", list(families.FAMILIES))
def test_two_replicas_train_like_one_device(results, family):
    d = results[("replicas", family)]
    assert "error" not in d, d.get("error")
    assert d["loss_rel"] <= 1e-5, d
    assert d["weight_rel_l2_non_gauge"] <= 1e-5, d
    assert d["weight_abs_max"] <= 2 * 3 * 10 * 2e-4  # 3 steps of at most lr (head lr x10)
    assert d["moved_from_init"] > 1e-3  # the steps did train


@pytest.mark.slow
def test_accumulation_and_global_clip_equal_the_plain_batch(results):
    """2 replicas x 2 micro-batches of 1, clipped to a global norm of 0.05 every step, give
    the single-device batch-of-4 update clipped the same way (Segmenter: no BatchNorm)."""
    d = results[("accumulate", "segmenter")]
    assert "error" not in d, d.get("error")
    assert d["loss_rel"] <= 1e-5, d
    assert d["weight_rel_l2_non_gauge"] <= 1e-5, d
    assert d["weight_abs_max"] <= 2 * 3 * 10 * 2e-4
    assert d["clip_changes_weights_abs"] > 1e-4  # the clip was active
    assert d["per_group_clip_differs_abs"] > 1e-6  # and it is global, not per group


@pytest.mark.slow
def test_distributed_evaluation_gives_the_exact_confusion_matrix(results):
    d = results[("evaluate", "segformer")]
    assert "error" not in d, d.get("error")
    assert d["cm_equal"] and d["num_images"] == d["ref_images"] == 5 and d["order_kept"]
    assert d["cm_sum"] > 0
