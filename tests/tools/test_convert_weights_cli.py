"""tools/convert_weights.py beyond SegFormer: dispatch on the variant's family, default class
count read off the checkpoint, and exit status 2 with a message naming the problem."""

import importlib.util
import os
import sys

import numpy as np
import pytest

import kseg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))
try:
    import convert_weights
finally:
    sys.path.pop(0)


def _helpers():
    """The foreign-layout writers of tests/convert/test_segmenter_setr_convert.py."""
    path = os.path.join(REPO, "tests", "convert", "test_segmenter_setr_convert.py")
    spec = importlib.util.spec_from_file_location("segmenter_setr_layouts", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


H = _helpers()
X = np.random.default_rng(5).uniform(0, 255, size=(1, 48, 32, 3)).astype("float32")


def test_segmenter_authors_pth(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    src = H.randomize(kseg.build_model("segmenter_vit_t16_mask", num_classes=4), seed=6)
    ckpt = tmp_path / "checkpoint.pth"  # the authors' training checkpoint: weights under "model"
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in H.segmenter_authors(src).items()},
                "epoch": 3}, ckpt)
    dst = tmp_path / "seg.weights.h5"
    assert convert_weights.main([str(ckpt), str(dst), "--variant", "segmenter_vit_t16_mask"]) == 0
    out = capsys.readouterr().out
    assert "mask decoder, 4 classes" in out and "num_classes=4" in out, out
    model = kseg.build_model("segmenter_vit_t16_mask", num_classes=4)
    model.load_weights(str(dst))
    np.testing.assert_array_equal(np.asarray(model(X)), np.asarray(src(X)))

    # a differing --num-classes needs --skip-classifier; the error names both counts
    assert convert_weights.main([str(ckpt), str(tmp_path / "x.weights.h5"), "--variant", "segmenter_vit_t16_mask",
                                 "--num-classes", "6"]) == 2
    err = capsys.readouterr().err
    assert "--num-classes 6 differs" in err and "4 classes" in err and "--skip-classifier" in err


def test_setr_mmseg_safetensors_and_errors(tmp_path, capsys):
    from safetensors.numpy import save_file

    src = H.randomize(kseg.build_model("setr_pup_vit_t16", num_classes=3), seed=7)
    src = H.zero_conv_bias_before_bn(src)
    ckpt = tmp_path / "setr.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in H.setr_mmseg(src).items()}, str(ckpt))
    dst = tmp_path / "setr.weights.h5"
    assert convert_weights.main([str(ckpt), str(dst), "--variant", "setr_pup_vit_t16"]) == 0
    assert "pup decoder, 3 classes, 4 auxiliary heads" in capsys.readouterr().out
    model = kseg.build_model("setr_pup_vit_t16", num_classes=3)
    model.load_weights(str(dst))
    np.testing.assert_array_equal(np.asarray(model(X)), np.asarray(src(X)))

    # a checkpoint of another decoder: exit 2, message says which variant to use, nothing written
    bad = tmp_path / "bad.weights.h5"
    assert convert_weights.main([str(ckpt), str(bad), "--variant", "setr_naive_vit_b16"]) == 2
    assert "PUP decoder" in capsys.readouterr().err and not bad.exists()
    # unknown variants, bad DST, families without a converter
    assert convert_weights.main([str(ckpt), str(tmp_path / "y.weights.h5"), "--variant", "segmenter_nope"]) == 2
    assert convert_weights.main([str(ckpt), str(tmp_path / "y.h5"), "--variant", "setr_pup_vit_t16"]) == 2
    err = capsys.readouterr().err
    assert "unknown model variant 'segmenter_nope'" in err and "must end in .weights.h5" in err
    from kseg.models.registry import list_variants

    other = [v for v in list_variants() if v.split("_", 1)[0] not in convert_weights.FAMILIES]
    if other:
        assert convert_weights.main([str(ckpt), str(tmp_path / "z.weights.h5"), "--variant", other[0]]) == 2
        assert "no checkpoint converter" in capsys.readouterr().err
