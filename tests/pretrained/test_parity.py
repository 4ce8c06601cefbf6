"""Each family loaded through ``kseg.from_pretrained`` from a checkpoint in its authors' layout
(random weights) matches a reference at 72x100: a size that is neither square nor a multiple
of the patch size (16) or of SegFormer's / MaskFormer's strides.

References: transformers for SegFormer and MaskFormer; for Segmenter, SETR and SegViT the
authors' forward re-implemented in torch (tests/pretrained/reference.py). The printed max abs
differences are the figures reported in issue 12."""

import numpy as np
import pytest

import kseg
from tests.convert.test_hf_maskformer import hf_model as hf_maskformer
from tests.convert.test_segmenter_setr_convert import (
    randomize,
    segmenter_authors,
    setr_authors,
)
from tests.convert.test_segvit_checkpoint import authors_state_dict, tiny
from tests.pretrained import reference
from tests.pretrained.conftest import torch_save

torch = pytest.importorskip("torch")
H, W = 72, 100
X = np.random.default_rng(3).uniform(0, 255, (1, H, W, 3)).astype("float32")
IMAGENET = (np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375]))


def nchw(x, mean, std):
    return torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2)).double()


def tensors(state):
    return {k: torch.from_numpy(np.ascontiguousarray(v)).double() for k, v in state.items()}


def check(name, got, ref, tol):
    diff = float(np.abs(got - ref).max())
    print(f"{name} at {H}x{W}: max abs diff {diff:.2e} (|ref| max {np.abs(ref).max():.2f})")
    assert np.abs(ref).max() > 0.1 and diff < tol, (name, diff)


def test_segmenter_matches_the_authors_forward(home, tmp_path):
    src = randomize(kseg.build_model("segmenter_vit_t16_mask", num_classes=5, depth=2, img_size=64), seed=11)
    state = segmenter_authors(src)
    model = kseg.from_pretrained(str(torch_save(state, tmp_path / "checkpoint.pth")), log=None)
    assert model.encoder.norm_epsilon == 1e-5 and model.pos_embed_interpolation == "bilinear"
    assert model.encoder.img_size == 64  # the checkpoint's 4x4 grid, not resampled at load
    got = np.asarray(model(X))
    assert got.shape == (1, H, W, 5)
    with torch.no_grad():
        ref = reference.segmenter(tensors(state), nchw(X, 127.5, 127.5), 16, 3, 2, 3, 2, 5).numpy()
    check("Segmenter", got, ref.transpose(0, 2, 3, 1), 1e-4)


def test_setr_pup_matches_the_authors_forward(home, tmp_path):
    src = kseg.build_model("setr_pup_vit_t16", num_classes=4, depth=3, img_size=64, channels=32)
    state = setr_authors(randomize(src, seed=12))
    model = kseg.from_pretrained(str(torch_save(state, tmp_path / "setr.pth")), log=None)
    np.testing.assert_allclose(model.pixel_mean, IMAGENET[0])  # the authors' img_norm_cfg
    got = np.asarray(model(X))
    with torch.no_grad():
        ref = reference.setr_pup(tensors(state), nchw(X, *IMAGENET), 16, 3, 3).numpy()
    check("SETR-PUP", got, ref.transpose(0, 2, 3, 1), 1e-4)


def test_segvit_matches_the_authors_forward(home, tmp_path):
    src = randomize(tiny(False, k=3), seed=13)
    state = authors_state_dict(src)
    model = kseg.from_pretrained(str(torch_save(state, tmp_path / "segvit.pth")), out_layers=(2, 3, 4), log=None)
    got = np.asarray(model.semantic_logits(model(X)))
    with torch.no_grad():
        ref = reference.segvit(tensors(state), nchw(X, 127.5, 127.5), 16, 3, 4, (2, 3, 4), 3, 3).numpy()
    check("SegViT", got, ref.transpose(0, 2, 3, 1), 1e-4)


def test_segformer_matches_transformers(home, tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    hf = SegformerForSemanticSegmentation(SegformerConfig(depths=[1, 1, 1, 1], num_labels=5)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "segformer")
    model = kseg.from_pretrained(str(tmp_path / "segformer"), log=None)
    got = np.asarray(model(X))
    with torch.no_grad():
        ref = hf(pixel_values=nchw(X, *IMAGENET).float()).logits.numpy().transpose(0, 2, 3, 1)
    assert got.shape == ref.shape == (1, 18, 25, 5)
    # transformers' LayerNorms use eps 1e-5 where the authors' MiT (and kseg) use 1e-6
    check("SegFormer", got, ref, 2e-3)


def test_maskformer_matches_transformers(home, tmp_path):
    hf = hf_maskformer("swin", seed=4)
    hf.save_pretrained(tmp_path / "maskformer")
    model = kseg.from_pretrained(str(tmp_path / "maskformer"), log=None)
    out = model(X)
    with torch.no_grad():
        ref = hf(pixel_values=nchw(X, *IMAGENET).float())
    masks = ref.masks_queries_logits.numpy().transpose(0, 2, 3, 1)
    assert np.asarray(out["mask_logits"]).shape == masks.shape == (1, 18, 25, 6)
    check("MaskFormer class logits", np.asarray(out["class_logits"]), ref.class_queries_logits.numpy(), 1e-3)
    check("MaskFormer mask logits", np.asarray(out["mask_logits"]), masks, 1e-3)
