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


# Tiny configs: each family's variants with fewer encoder blocks (and decoder layers), every
# width, head count and patch size of the variant kept, so a test over the whole registry
# takes seconds per variant. Entries are overrides, or functions of the variant's table row
# returning them. A family missing here fails the registry tests until it gets an entry.
TINY_OVERRIDES = {
    "SegFormer": {"depths": (1, 1, 1, 1)},
    "Segmenter": {"depth": 1},
    "SETR": {"depth": 4},  # 4 blocks: MLA taps 1..4 and the aux taps stay distinct
    "SegViT": {"depth": 4, "out_layers": (2, 3, 4), "qd_block": 3, "qu_layers": (2, 4), "decoder_layers": 1},
    "MaskFormer": lambda row: {"backbone_kwargs": {**row.get("backbone_kwargs", {}), "depths": (1, 1, 1, 1)},
                               "decoder_layers": 1},
}


def build_tiny(variant, num_classes=3):
    """``kseg.build_model(variant)`` with the family's tiny overrides."""
    import kseg
    from kseg.models import variant_spec

    model_cls, row = variant_spec(variant)
    family = model_cls.__name__
    if family not in TINY_OVERRIDES:
        raise KeyError(f"no tiny config for {family} ({variant}): add one to TINY_OVERRIDES "
                       "in tests/export/export_utils.py")
    overrides = TINY_OVERRIDES[family]
    overrides = overrides(row) if callable(overrides) else overrides
    return kseg.build_model(variant, num_classes=num_classes, **overrides)


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
