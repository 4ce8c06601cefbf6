"""SegViT converter: a state dict in the authors' mmseg layout, built here from a random kseg
model by an independent renaming (written from zbwxp/SegVit's module tree), loads back into
a fresh model and reproduces its outputs."""

import re

import numpy as np
import pytest

from kseg.convert.common import ShapeMismatchError
from kseg.convert.segvit import load_segvit
from kseg.models import SegViT


def tiny(shrunk=False, k=3, img_size=64):
    """ViT-T/16 widths, 4 blocks, 3 decoder layers per ATM (the authors' count)."""
    model = SegViT(k, backbone="vit_t16", shrunk=shrunk, img_size=img_size, depth=4, out_layers=(2, 3, 4),
                   qd_block=3, qu_layers=(2, 4))
    model.build((None, None, None, 3))
    return model


_ENC_RULES = (
    (r"^encoder/patch_embed/proj/", "backbone.patch_embed.projection/"),
    (r"^encoder/blocks_(\d+)/norm1/", r"backbone.layers.\1.ln1/"),
    (r"^encoder/blocks_(\d+)/norm2/", r"backbone.layers.\1.ln2/"),
    (r"^encoder/blocks_(\d+)/attn/qkv/", r"backbone.layers.\1.attn.attn.in_proj_/"),
    (r"^encoder/blocks_(\d+)/attn/proj/", r"backbone.layers.\1.attn.attn.out_proj/"),
    (r"^encoder/blocks_(\d+)/mlp/fc1/", r"backbone.layers.\1.ffn.layers.0.0/"),
    (r"^encoder/blocks_(\d+)/mlp/fc2/", r"backbone.layers.\1.ffn.layers.1/"),
    (r"^encoder/(cls_token|pos_embed)$", r"backbone.\1"),
)


def authors_state_dict(model):
    """torch-layout numpy state dict with the authors' key names."""
    state = {}
    qu_cross = {}
    for v in model.weights:
        path = v.path.split("/", 1)[1]  # drop the model name
        arr = np.asarray(v)
        for pat, rep in _ENC_RULES:
            if re.match(pat, path):
                path = re.sub(pat, rep, path)
                break
        else:
            path = path.replace("/layers_", "/layers.").replace("/", ".")
            path = re.sub(r"\.(kernel|gamma|beta|bias)$", r"/\1", path)
            path = path.replace("self_attn.in_proj/", "self_attn.in_proj_/")
            if re.search(r"(^|\.)q$", path):
                path += ".weight"
        key, _, kind = path.partition("/")
        if key.endswith("in_proj_"):
            key = key + ("weight" if kind == "kernel" else "bias")
        elif kind:
            key = f"{key}.{'bias' if kind in ('bias', 'beta') else 'weight'}"
        if kind == "kernel":
            arr = arr.transpose(3, 2, 0, 1) if arr.ndim == 4 else arr.T
        m = re.match(r"^(decode_head\.decoder_[12]\.layers\.\d+\.multihead_attn)\.(q|k|v|proj)\.(weight|bias)$", key)
        if model.shrunk and m:  # QU layers are nn.TransformerDecoderLayer: fused in_proj + out_proj
            if m.group(2) == "proj":
                key = f"{m.group(1)}.out_proj.{m.group(3)}"
            else:
                qu_cross.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = arr
                continue
        state[key] = arr
    for (prefix, kind), parts in qu_cross.items():
        state[f"{prefix}.in_proj_{kind}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    state["decode_head.loss_decode.criterion.empty_weight"] = np.ones(model.num_classes + 1, np.float32)
    return state


# Keys as they appear in the authors' modules (decode_heads/atm_head.py, tpn_atm_head.py,
# mmseg VisionTransformer).
CASCADE_KEYS = (
    "backbone.patch_embed.projection.weight", "backbone.cls_token", "backbone.pos_embed",
    "backbone.layers.3.attn.attn.in_proj_weight", "backbone.layers.0.ffn.layers.0.0.bias",
    "backbone.layers.3.ffn.layers.1.weight", "backbone.layers.2.ln2.bias", "decode_head.q.weight",
    "decode_head.class_embed.weight", "decode_head.input_proj_3.weight", "decode_head.proj_norm_1.bias",
    "decode_head.decoder_1.layers.0.self_attn.in_proj_weight", "decode_head.decoder_2.layers.2.self_attn.out_proj.bias",
    "decode_head.decoder_3.layers.1.multihead_attn.q.weight", "decode_head.decoder_3.layers.1.multihead_attn.proj.bias",
    "decode_head.decoder_1.layers.2.linear1.weight", "decode_head.decoder_1.layers.2.norm3.weight",
)
SHRUNK_KEYS = (
    "decode_head.q.weight", "decode_head.input_proj_2.bias", "decode_head.proj_norm_2.weight",
    "decode_head.decoder_2.layers.2.multihead_attn.in_proj_weight",
    "decode_head.decoder_1.layers.0.multihead_attn.out_proj.weight", "decode_head.atm.q.weight",
    "decode_head.atm.class_embed.bias", "decode_head.atm.decoder_1.layers.2.multihead_attn.k.weight",
)


@pytest.mark.parametrize("shrunk", [False, True])
def test_round_trip_through_the_authors_layout(shrunk):
    src, dst = tiny(shrunk), tiny(shrunk)
    state = authors_state_dict(src)
    for key in CASCADE_KEYS[:8] + (SHRUNK_KEYS if shrunk else CASCADE_KEYS[8:]):
        assert key in state, key
    assert state["backbone.layers.0.attn.attn.in_proj_weight"].shape == (3 * 192, 192)
    report = load_segvit(dst, state)
    assert not report.missing and not report.unexpected and not report.untouched
    assert "decode_head.loss_decode.criterion.empty_weight" in report.skipped
    x = np.random.default_rng(0).uniform(0, 255, (1, 48, 80, 3)).astype("float32")
    a, b = src(x), dst(x)
    for k in ("class_logits", "mask_logits"):
        np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k]), atol=1e-5)


def test_torch_tensors_and_module_prefix_are_accepted():
    torch = pytest.importorskip("torch")
    src, dst = tiny(), tiny()
    state = {f"module.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in authors_state_dict(src).items()}
    load_segvit(dst, state)
    np.testing.assert_allclose(np.asarray(dst.decode_head.q), np.asarray(src.decode_head.q))


def test_grids_of_another_crop_are_resampled():
    src = tiny(True, img_size=32)  # 2x2 position and QU grids
    dst = tiny(True, img_size=64)  # 4x4
    report = load_segvit(dst, authors_state_dict(src))
    assert any("pos_embed resampled from 2x2 to 4x4" in n for n in report.notes)
    assert any("QU tokens" in n and "2x2 to 4x4" in n for n in report.notes)
    assert tuple(dst.decode_head.q.shape) == (16, 96)


def test_wrong_variant_or_class_count_raises_and_assigns_nothing():
    state = authors_state_dict(tiny(False, k=3))
    shrunk = tiny(True)
    before = np.asarray(shrunk.decode_head.atm.q).copy()
    with pytest.raises(ValueError, match="cascade checkpoint.*segvit_\\*_shrunk"):
        load_segvit(shrunk, state)
    with pytest.raises(ValueError, match="Shrunk checkpoint"):
        load_segvit(tiny(False), authors_state_dict(shrunk))
    other = tiny(False, k=5)
    q_before = np.asarray(other.decode_head.q).copy()
    with pytest.raises(ShapeMismatchError, match="decode_head.*class count"):
        load_segvit(other, state)
    np.testing.assert_array_equal(np.asarray(other.decode_head.q), q_before)
    np.testing.assert_array_equal(np.asarray(shrunk.decode_head.atm.q), before)
    state.pop("decode_head.class_embed.bias")
    with pytest.raises(ValueError, match="1 missing keys"):
        load_segvit(tiny(False), state)
    report = load_segvit(tiny(False), state, strict=False)
    assert report.missing == ["decode_head.class_embed.bias"]
