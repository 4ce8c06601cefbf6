"""Helpers of the export tests (imported as ``tests.export.export_utils``)."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAMVID_RECIPE = os.path.join(REPO, "recipes", "segformer_mit_b0_camvid.yaml")


def tiny_sets(root):
    """``--set`` overrides of the CamVid recipe for the tiny splits."""
    items = [f"data.root={root}", "data.val_split=val_tiny", "data.train_split=train_tiny",
             "data.cache=false"]
    return [a for item in items for a in ("--set", item)]


def run_cli(*args, env_extra=None, timeout=600):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def size_rank(variant):
    """Rough model-size rank from a variant id: MiT-B<n> -> n; ViT/DeiT/Swin t, s, b, l, h ->
    0..4 (larger patches first within a size); unknown -> 99."""
    m = re.search(r"_mit_b(\d)", variant)
    if m:
        return (int(m.group(1)), 0)
    m = re.search(r"_(?:vit|deit|swin)_([tsblh])(\d*)", variant)
    if m:
        return ("tsblh".index(m.group(1)), -int(m.group(2) or 0))
    return (99, 0)


def smallest_of_each_family(variants):
    """The cheapest-looking variant of every family (``{family}_...``)."""
    best = {}
    for v in variants:
        family = v.split("_")[0]
        if family not in best or (size_rank(v), v) < (size_rank(best[family]), best[family]):
            best[family] = v
    return set(best.values())


def is_large(variant):
    """MiT-B3..B5, ViT/DeiT/Swin-L/H (and unknown names): minutes to export on 2 cores."""
    return size_rank(variant)[0] >= 3


# Tests of big variants run with KSEG_TEST_BIG_VARIANTS=1 (minutes each on 2 cores).
BIG = os.environ.get("KSEG_TEST_BIG_VARIANTS") == "1"


def assert_same_labels(labels, ref_logits, tol=1e-4):
    """``labels`` equal ``argmax(ref_logits)`` except where the top two reference logits are
    within ``tol`` (relative): random-weight models have near-ties that graph vs eager
    float rounding may flip."""
    import numpy as np

    ref_logits = np.asarray(ref_logits, np.float32)
    ref = np.argmax(ref_logits, -1)
    top2 = np.sort(ref_logits, -1)[..., -2:]
    scale = max(1.0, float(np.abs(ref_logits).max()))
    tie = (top2[..., 1] - top2[..., 0]) <= tol * scale
    bad = (np.asarray(labels) != ref) & ~tie
    assert labels.shape == ref.shape, (labels.shape, ref.shape)
    assert not bad.any(), f"{int(bad.sum())} labels differ where the logits are not tied"
    assert np.mean(np.asarray(labels) == ref) >= 0.999
