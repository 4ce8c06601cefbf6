"""The converter registry (issue 15, item 4): every family has a converter, models dispatch to
it, checkpoints are recognised, and no kseg module needs another to be imported first (no
import cycles)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kseg
from kseg.convert import converter_for, detect_family, list_converters, load
from kseg.convert.loader import Binding, apply_binding
from tests.convert.test_segmenter_setr_convert import randomize, segmenter_authors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMPORT_EACH_ALONE = r"""
import importlib, json, pkgutil, sys
import kseg
names = sorted(m.name for m in pkgutil.walk_packages(kseg.__path__, "kseg.") if not m.name.endswith("__main__"))
failed = []
for name in ["kseg"] + names:
    for loaded in [m for m in sys.modules if m == "kseg" or m.startswith("kseg.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:  # report them all
        failed.append(f"{name}: {type(err).__name__}: {err}")
print(json.dumps({"modules": len(names) + 1, "failed": failed}))
"""


@pytest.mark.slow
def test_every_module_imports_alone():
    """One fresh interpreter; before each module's import every kseg module is dropped from
    ``sys.modules``, so a module that only imports after another (a cycle) fails here."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH_ALONE], cwd=REPO, env=env, capture_output=True, check=False,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["modules"] > 80 and result["failed"] == [], result["failed"]


def test_every_family_has_a_converter_and_models_dispatch_to_it():
    import tools.convert_weights as cli

    families = {v.split("_", 1)[0] for v in kseg.models.list_variants()}
    assert set(list_converters()) == families == set(cli.FAMILIES)
    for variant in ("segformer_mit_b0", "segmenter_vit_t16_mask", "setr_pup_vit_t16", "segvit_vit_t16",
                    "maskformer_swin_nano"):
        assert converter_for(kseg.models.variant_spec(variant)[0]).family == variant.split("_")[0]


def test_detect_family_and_generic_load():
    src = randomize(kseg.build_model("segmenter_vit_t16_mask", num_classes=3, depth=1), seed=3)
    state = segmenter_authors(src)
    assert detect_family(state) == ["segmenter"]
    assert detect_family({"backbone.layers.0.ln1.weight": np.zeros(2)}) == []  # a bare ViT: no family
    dst = kseg.build_model("segmenter_vit_t16_mask", num_classes=3, depth=1)
    report = load(dst, state)  # the model's family picks the converter
    assert not report.missing and not report.unexpected and "authors' layout" in report.layout
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 48, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(dst(x)), np.asarray(src(x)))


def test_one_loader_checks_everything_before_assigning():
    """A mismatch anywhere leaves the model untouched; optional keys may be absent when strict."""
    from kseg.convert.common import to_torch_layout
    from kseg.convert.hf_segformer import encoder_targets

    model = kseg.build_model("segformer_mit_b0", num_classes=2, depths=(1, 1, 1, 1))
    targets = encoder_targets(model.encoder)
    state = {k: v + 1.0 for k, v in to_torch_layout(targets).items()}
    before = [np.asarray(w).copy() for w in model.weights]
    last = max(state)
    with pytest.raises(ValueError, match=last.replace(".", r"\.") + ".*has shape"):
        apply_binding(model, Binding({**state, last: np.ones((7, 7, 7), "float32")}, targets))
    assert all(np.array_equal(a, np.asarray(w)) for a, w in zip(before, model.weights))
    dropped = sorted(state)[:3]
    partial = {k: v for k, v in state.items() if k not in dropped}
    with pytest.raises(ValueError, match="3 missing keys"):
        apply_binding(model, Binding(partial, targets))
    report = apply_binding(model, Binding(partial, targets, optional=set(dropped)))  # strict, but optional
    assert report.missing == dropped and len(report.loaded) == len(partial)
    assert len(report.untouched) == len(model.weights) - len(partial)
