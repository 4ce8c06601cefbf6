"""ViT / DeiT conversion: parity with transformers on a non-square input that needs
position-embedding interpolation, both HF key layouts, timm keys, grid resampling on load,
and the errors for checkpoints of another architecture."""

import math

import numpy as np
import pytest
import torch
from transformers import DeiTConfig, DeiTModel, ViTConfig, ViTModel

from kseg.backbones.vit import ViT
from kseg.convert.vit import load_vit, normalize_keys

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
            patch_size=8, image_size=32, layer_norm_eps=1e-6)
TOL = 1e-4


def perturbed(model, seed=0):
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
        for name, p in model.named_parameters():
            if name.startswith("embeddings.") and "patch" not in name:
                p.normal_(0.0, 0.5)
    return model.eval()


def kseg_vit(distilled=False, grid_img=32):
    enc = ViT(64, 2, 4, 8, img_size=grid_img, distilled=distilled, out_layers=(1, 2))
    enc.build((None, None, None, 3))
    return enc


def hf_last_hidden(hf, x):
    with torch.no_grad():
        out = hf(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), interpolate_pos_encoding=True)
    return out.last_hidden_state.numpy()


@pytest.fixture(scope="module")
def hf_vit():
    return perturbed(ViTModel(ViTConfig(**TINY), add_pooling_layer=False))


@pytest.mark.parametrize("layout", ["in_memory", "hub"])
def test_hf_vit_parity_non_square(hf_vit, layout, tmp_path):
    if layout == "hub":
        hf_vit.save_pretrained(tmp_path)
        source = tmp_path
    else:
        source = hf_vit.state_dict()
    enc = kseg_vit()
    report = load_vit(enc, source)
    assert not report.missing and not report.unexpected, report
    x = np.random.default_rng(0).normal(size=(2, 40, 56, 3)).astype("float32")  # 5x7 grid vs 4x4 stored
    ref = hf_last_hidden(hf_vit, x)
    out = enc(x)
    got = np.asarray(out["final"]).reshape(2, -1, 64)
    diff = np.abs(got - ref[:, 1:]).max()
    print(f"ViT parity ({layout}) max abs diff of the last hidden state: {diff:.2e}")
    assert diff < TOL
    assert np.abs(ref[:, 1:]).max() > 0.5  # not trivially small


def test_hf_deit_parity_and_prefix_tokens():
    hf = perturbed(DeiTModel(DeiTConfig(**TINY), add_pooling_layer=False), seed=1)
    enc = ViT(64, 2, 4, 8, img_size=32, distilled=True, return_prefix=True)
    enc.build((None, None, None, 3))
    load_vit(enc, hf.state_dict())
    x = np.random.default_rng(1).normal(size=(1, 48, 32, 3)).astype("float32")
    ref = hf_last_hidden(hf, x)
    out = enc(x)
    assert np.abs(np.asarray(out["final"]).reshape(1, -1, 64) - ref[:, 2:]).max() < TOL
    assert np.abs(np.asarray(out["prefix"]) - ref[:, :2]).max() < TOL


def test_timm_layout_and_pos_embed_resampled_on_load(hf_vit):
    ref_enc = kseg_vit()
    load_vit(ref_enc, hf_vit.state_dict())
    # timm names, as a timm VisionTransformer state dict would hold them (+ its ImageNet head).
    timm = {}
    for k, v in normalize_keys(hf_vit.state_dict())[0].items():
        timm[k] = v
    timm["head.weight"], timm["head.bias"] = np.zeros((10, 64), "float32"), np.zeros(10, "float32")
    big = kseg_vit(grid_img=48)  # 6x6 grid: the 4x4 checkpoint grid is resampled on load
    report = load_vit(big, timm)
    assert "head.weight" in report.skipped and any("resampled" in n for n in report.notes)
    x = np.random.default_rng(2).normal(size=(1, 48, 48, 3)).astype("float32")
    # resampling 4x4 -> 6x6 on load then 6x6 -> 6x6 at run time == 4x4 -> 6x6 at run time
    np.testing.assert_allclose(np.asarray(big(x)["final"]), np.asarray(ref_enc(x)["final"]), atol=TOL)


def test_wrong_architecture_is_a_clear_error(hf_vit):
    enc = ViT(64, 3, 4, 8, img_size=32)
    with pytest.raises(ValueError, match="missing keys"):
        load_vit(enc, hf_vit.state_dict())
    wide = ViT(96, 2, 4, 8, img_size=32)
    with pytest.raises(ValueError, match="embed_dim 64"):
        load_vit(wide, hf_vit.state_dict())
    deit = ViT(64, 2, 4, 8, img_size=32, distilled=True)
    with pytest.raises(ValueError, match="prefix tokens"):
        load_vit(deit, hf_vit.state_dict())


def _to_jax_npz(hf, path, heads):
    """Writes ``hf``'s weights in the Google ViT ``.npz`` layout (vit_jax naming, as read by
    timm's ``_load_weights``): (in, out) kernels, per-head attention kernels."""
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    d = sd["embeddings.cls_token"].shape[-1]
    out = {
        "embedding/kernel": sd["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["embeddings.patch_embeddings.projection.bias"],
        "cls": sd["embeddings.cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["embeddings.position_embeddings"],
        "Transformer/encoder_norm/scale": sd["layernorm.weight"],
        "Transformer/encoder_norm/bias": sd["layernorm.bias"],
        "head/kernel": np.zeros((d, 5), "float32"),
        "head/bias": np.zeros(5, "float32"),
    }
    i = 0
    while f"layers.{i}.attention.q_proj.weight" in sd:
        s, p = f"layers.{i}.", f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        for n, hfn in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            out[f"{mha}{n}/kernel"] = sd[f"{s}attention.{hfn}.weight"].T.reshape(d, heads, -1)
            out[f"{mha}{n}/bias"] = sd[f"{s}attention.{hfn}.bias"].reshape(heads, -1)
        out[f"{mha}out/kernel"] = sd[f"{s}attention.o_proj.weight"].T.reshape(heads, -1, d)
        out[f"{mha}out/bias"] = sd[f"{s}attention.o_proj.bias"]
        for ln, hfn in (("LayerNorm_0", "layernorm_before"), ("LayerNorm_2", "layernorm_after")):
            out[f"{p}{ln}/scale"], out[f"{p}{ln}/bias"] = sd[f"{s}{hfn}.weight"], sd[f"{s}{hfn}.bias"]
        for j in (0, 1):
            out[f"{p}MlpBlock_3/Dense_{j}/kernel"] = sd[f"{s}mlp.fc{j + 1}.weight"].T
            out[f"{p}MlpBlock_3/Dense_{j}/bias"] = sd[f"{s}mlp.fc{j + 1}.bias"]
        i += 1
    np.savez(path, **out)


def test_google_jax_npz_layout(hf_vit, tmp_path):
    _to_jax_npz(hf_vit, tmp_path / "vit.npz", heads=4)
    enc = kseg_vit()
    report = load_vit(enc, str(tmp_path / "vit.npz"))
    assert report.layout.startswith("Google JAX") and "head.weight" in report.skipped and not report.missing
    x = np.random.default_rng(3).normal(size=(1, 40, 56, 3)).astype("float32")
    ref = hf_last_hidden(hf_vit, x)
    assert np.abs(np.asarray(enc(x)["final"]).reshape(1, -1, 64) - ref[:, 1:]).max() < TOL
