"""Hugging Face SegFormer -> kseg conversion: parity with transformers, both key layouts,
encoder-only checkpoints, and the errors for checkpoints that do not fit.

The reference is a randomly initialised transformers model with MiT-B0 dimensions whose
weights are drawn away from the defaults (fan-in scaled weights, LayerNorm/BatchNorm
affine parameters and running statistics away from identity), so that a wrong transpose,
a swapped projection or an ignored norm changes the logits by far more than the tolerance.
torch and transformers come from the ``parity`` extra; these tests must not be skipped.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import (
    SegformerConfig,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    SegformerModel,
)

import kseg
from kseg.convert import load_hf_segformer, read_state_dict
from kseg.convert.hf_segformer import to_legacy_key, to_v5_key

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEAN = np.array([123.675, 116.28, 103.53], "float32")
STD = np.array([58.395, 57.12, 57.375], "float32")
B0 = dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256)
B1 = dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256)
NUM_CLASSES = 7
TOL = 1e-4


def perturbed(model, seed):
    """Draws every parameter and running statistic away from its default; eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                mod.weight.normal_(0.0, 1.0 / math.sqrt(mod.weight[0].numel()))
                if mod.bias is not None:
                    mod.bias.normal_(0.0, 0.1)
            elif isinstance(mod, torch.nn.LayerNorm):
                mod.weight.normal_(1.0, 0.3)
                mod.bias.normal_(0.0, 0.2)
            elif isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.normal_(1.0, 0.3)
                mod.bias.normal_(0.0, 0.2)
                mod.running_mean.normal_(0.0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return model.eval()


def images(h, w, batch=1, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, h, w, 3)).astype("float32")


def hf_pixels(img):
    """Raw NHWC pixels -> the NCHW ImageNet-normalised tensor HF models take."""
    return torch.from_numpy(((img - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def snapshot(model):
    return {w.path: w.numpy().copy() for w in model.weights}


@pytest.fixture(scope="module")
def hf_seg():
    return perturbed(SegformerForSemanticSegmentation(SegformerConfig(num_labels=NUM_CLASSES, **B0)), seed=0)


@pytest.fixture(scope="module")
def hub_dir(hf_seg, tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_b0")
    hf_seg.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def converted(hub_dir, tmp_path_factory):
    """kseg B0 with weights from ``tools/convert_weights.py`` run as a script."""
    dst = tmp_path_factory.mktemp("kseg") / "b0.weights.h5"
    env = {**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "tools/convert_weights.py", str(hub_dir), str(dst), "--variant", "segformer_mit_b0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded: 207 checkpoint keys" in proc.stdout, proc.stdout
    model = kseg.build_model("segformer_mit_b0", num_classes=NUM_CLASSES)
    model.load_weights(str(dst))
    return model


def test_rename_table_matches_transformers(hf_seg, hub_dir):
    """The rename table agrees with transformers' own: its in-memory names (``stages.*``,
    ``q_proj``...) and what its ``save_pretrained`` writes (5.23: the original Hub names)
    normalise to the same keys, and the table inverts exactly."""
    saved = set(read_state_dict(hub_dir))
    in_memory = set(hf_seg.state_dict())
    legacy = {to_legacy_key(k) for k in in_memory}
    assert any(".stages." in k for k in in_memory) and not any("stages." in k for k in legacy)
    assert {to_legacy_key(k) for k in saved} == legacy
    assert all(to_v5_key(to_legacy_key(k)) == k for k in in_memory)
    assert {to_v5_key(k) for k in legacy} == in_memory


@pytest.mark.parametrize("h, w", [(96, 128), (70, 110)])
def test_logit_parity_non_square(hf_seg, converted, h, w):
    img = images(h, w)
    with torch.no_grad():
        ref = nhwc(hf_seg(pixel_values=hf_pixels(img)).logits)  # stride 4, before upsampling
    ours = np.asarray(converted(img))
    assert ours.shape == ref.shape == (1, math.ceil(h / 4), math.ceil(w / 4), NUM_CLASSES)
    diff = float(np.abs(ours - ref).max())
    print(f"\n[parity] SegFormer-B0 {h}x{w}: max |logit diff| kseg vs transformers = {diff:.3e} "
          f"(max |logit| {np.abs(ref).max():.2f})")
    assert diff < TOL


def test_transformers5_layout_loads_identically(hf_seg, hub_dir, converted, tmp_path):
    """A torch.save of the in-memory (renamed) state dict, and a renamed-back dict."""
    bin_path = tmp_path / "pytorch_model.bin"
    torch.save(hf_seg.state_dict(), bin_path)
    expected = snapshot(converted)

    model = kseg.build_model("segformer_mit_b0", num_classes=NUM_CLASSES)
    report = load_hf_segformer(model, tmp_path)
    assert report.layout.startswith("transformers 5") and len(report.loaded) == 207
    assert list(report.skipped) == ["decode_head.batch_norm.num_batches_tracked"]
    assert not (report.missing or report.unexpected or report.untouched)
    for path, value in snapshot(model).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=path)

    legacy = {to_legacy_key(k): v.numpy() for k, v in hf_seg.state_dict().items()}
    model = kseg.build_model("segformer_mit_b0", num_classes=NUM_CLASSES)
    report = load_hf_segformer(model, legacy)
    assert report.layout.startswith("original Hub") and len(report.loaded) == 207
    for path, value in snapshot(model).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=path)


def test_encoder_only_checkpoint(tmp_path):
    hf = perturbed(SegformerModel(SegformerConfig(**B0)), seed=1)
    hf.save_pretrained(tmp_path)  # keys "encoder.block.*", no "segformer." prefix
    model = kseg.build_model("segformer_mit_b0", num_classes=NUM_CLASSES)
    before = snapshot(model)
    report = load_hf_segformer(model, tmp_path)
    assert report.info["encoder_only"] and not report.info["head_loaded"]
    assert any("encoder-only" in n for n in report.notes)
    assert report.untouched and all(p.startswith("segformer/decode_head/") for p in report.untouched)
    for path, value in snapshot(model).items():
        if "/decode_head/" in path:
            np.testing.assert_array_equal(value, before[path], err_msg=path)

    img = images(64, 96, seed=1)
    features = model.encoder(model.normalize(img))
    with torch.no_grad():
        hidden = hf(pixel_values=hf_pixels(img), output_hidden_states=True).hidden_states
    assert len(hidden) == 4
    for i, ref in enumerate(hidden):
        diff = float(np.abs(np.asarray(features[f"stage{i + 1}"]) - nhwc(ref)).max())
        assert diff < TOL, (i, diff)

    # SegformerForImageClassification (transformers 5 layout): the ImageNet head is dropped.
    cls = SegformerForImageClassification(SegformerConfig(num_labels=10, **B0))
    cls.segformer.load_state_dict(hf.state_dict())
    report = load_hf_segformer(model, cls.state_dict())
    assert set(report.skipped) == {"classifier.weight", "classifier.bias"}
    assert len(report.loaded) == 192


def test_other_variant_raises_naming_key_and_shapes(tmp_path):
    hf = SegformerModel(SegformerConfig(**B1))  # B1 widths, B0 depths
    hf.save_pretrained(tmp_path)
    model = kseg.build_model("segformer_mit_b0", num_classes=NUM_CLASSES)
    before = snapshot(model)
    with pytest.raises(ValueError) as err:
        load_hf_segformer(model, tmp_path)
    msg = str(err.value)
    assert "segformer.encoder." in msg and "(64, 3, 7, 7)" in msg and "(7, 7, 3, 32)" in msg, msg
    assert "segformer_mit_b1" in msg and "--variant" in msg, msg
    after = snapshot(model)
    assert all(np.array_equal(after[p], before[p]) for p in before), "a failed load must not assign"


def test_class_count_mismatch_and_skip_classifier(hf_seg, hub_dir, tmp_path):
    model = kseg.build_model("segformer_mit_b0", num_classes=5)
    with pytest.raises(ValueError, match=r"decode_head\.classifier\.weight.*\(7, 256, 1, 1\).*skip_classifier"):
        load_hf_segformer(model, hub_dir)

    fresh = model.decode_head.classifier.kernel.numpy().copy()
    report = load_hf_segformer(model, hub_dir, skip_classifier=True)
    assert set(report.skipped) >= {"decode_head.classifier.weight", "decode_head.classifier.bias"}
    assert sorted(report.untouched) == ["segformer/decode_head/classifier/bias",
                                        "segformer/decode_head/classifier/kernel"]
    np.testing.assert_array_equal(model.decode_head.classifier.kernel.numpy(), fresh)
    np.testing.assert_allclose(
        model.decode_head.batch_norm.moving_variance.numpy(),
        hf_seg.decode_head.batch_norm.running_var.numpy(),
    )

    # The CLI refuses a differing --num-classes unless --skip-classifier is given.
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        import convert_weights
    finally:
        sys.path.pop(0)
    dst = str(tmp_path / "b0_5.weights.h5")
    args = [str(hub_dir), dst, "--variant", "segformer_mit_b0", "--num-classes", "5"]
    assert convert_weights.main(args) == 2 and not os.path.exists(dst)
    assert convert_weights.main(args + ["--skip-classifier"]) == 0 and os.path.exists(dst)


def test_strict_missing_and_unexpected_keys(hf_seg):
    state = {k: v.numpy() for k, v in hf_seg.state_dict().items() if ".stages.3.blocks.1." not in k}
    state["segformer.stages.0.extra.weight"] = np.zeros(3, "float32")
    model = kseg.build_model("segformer_mit_b0", num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"unexpected keys.*extra.*missing keys.*block\.3\.1\."):
        load_hf_segformer(model, state)
    report = load_hf_segformer(model, state, strict=False)
    assert report.unexpected == ["segformer.stages.0.extra.weight"]
    assert report.missing and all(".block.3.1." in k for k in report.missing)
    assert len(report.untouched) == len(report.missing)
