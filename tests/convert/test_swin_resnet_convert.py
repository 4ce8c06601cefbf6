"""Swin / ResNet converters: parity against randomly initialised transformers models, and
round trips through the official Swin, detectron2 and torchvision layouts."""

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F
from transformers import MaskFormerSwinConfig, ResNetConfig, ResNetModel, SwinConfig, SwinModel
from transformers.models.maskformer.modeling_maskformer_swin import MaskFormerSwinBackbone

from kseg.backbones.resnet import ResNet
from kseg.backbones.swin import SwinTransformer
from kseg.convert import resnet as cres
from kseg.convert import swin as cswin
from kseg.convert.common import ShapeMismatchError

KEYS = ("res2", "res3", "res4", "res5")
TINY = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(2, 3, 4, 6))


def _randomize(module, seed=0):
    """HF zero-initialises bias tables and LN affine = (1, 0): perturb everything (and BN stats)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if p.dtype.is_floating_point:
                if name.endswith("running_var"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=g))
                else:
                    p.add_(0.2 * torch.randn(p.shape, generator=g))
    return module.eval()


def _image(h, w, seed=0):
    return np.random.default_rng(seed).normal(size=(2, h, w, 3)).astype("float32")


def _torch(x):
    return torch.from_numpy(x).permute(0, 3, 1, 2)


def _nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def _swin(**kw):
    m = SwinTransformer(**{**TINY, **kw}, drop_path_rate=0.0)
    m.build((None, None, None, 3))
    return m


# ----------------------------------------------------------------------------- Swin


@pytest.fixture(scope="module")
def hf_maskformer_swin():
    cfg = MaskFormerSwinConfig(embed_dim=24, depths=[2, 2, 2, 2], num_heads=[2, 3, 4, 6], window_size=7,
                               out_features=["stage1", "stage2", "stage3", "stage4"])
    return _randomize(MaskFormerSwinBackbone(cfg))


def test_maskformer_swin_backbone_parity_non_square_padded(hf_maskformer_swin):
    # 70 x 101: not a multiple of the patch; stages 18x26, 9x13, 5x7, 3x4 all need window
    # padding (window 7) and the odd maps need patch-merging padding.
    x = _image(70, 101)
    with torch.no_grad():
        ref = hf_maskformer_swin(_torch(x)).feature_maps
    model = _swin(window_size=7)
    report = cswin.load_swin(model, hf_maskformer_swin.state_dict())
    assert not report.missing and not report.unexpected and "transformers" in report.layout
    out = model(tf.constant(x))
    for key, r in zip(KEYS, ref):
        assert out[key].shape == _nhwc(r).shape
        np.testing.assert_allclose(out[key].numpy(), _nhwc(r), atol=1e-4, err_msg=key)


def test_hf_maskformer_checkpoint_prefix(hf_maskformer_swin):
    full = {cswin.HF_MASKFORMER_PREFIX + k: v for k, v in hf_maskformer_swin.state_dict().items()}
    full["model.transformer_module.queries_embedder.weight"] = torch.zeros(4, 4)  # not backbone: ignored
    official = cswin.hf_maskformer_backbone_state(full)
    assert "layers.0.blocks.1.attn.qkv.weight" in official and "norm3.weight" in official
    model = _swin(window_size=7)
    report = cswin.load_swin(model, full, prefix=cswin.HF_MASKFORMER_PREFIX)
    assert not report.missing and not report.unexpected
    exported = cswin.export_state(model)
    assert exported.keys() == official.keys()
    for k in official:
        np.testing.assert_array_equal(exported[k], official[k])
    auto = cswin.load_swin(_swin(window_size=7), full)  # prefix detected
    assert not auto.missing and not auto.unexpected and "model.pixel_level_module" in auto.notes[0]
    with pytest.raises(ValueError, match="no checkpoint key starts with"):
        cswin.load_swin(model, full, prefix="sem_seg_head.")


def test_swin_model_parity_5x_layout():
    # transformers' SwinModel clamps the window when a stage is not larger than it, which
    # the segmentation Swin does not do: window 3 keeps every stage above it here.
    cfg = SwinConfig(embed_dim=24, depths=[2, 2, 2, 2], num_heads=[2, 3, 4, 6], window_size=3)
    hf = _randomize(SwinModel(cfg), seed=1)
    x = _image(130, 197, seed=1)
    with torch.no_grad():
        ref = hf(_torch(x), output_hidden_states=True,
                 output_hidden_states_before_downsampling=True).reshaped_hidden_states[1:]
    state = dict(hf.state_dict())
    rng = np.random.default_rng(2)
    norms = {}
    for i, c in enumerate((24, 48, 96, 192)):
        norms[i] = (1 + 0.2 * rng.normal(size=c).astype("float32"), 0.2 * rng.normal(size=c).astype("float32"))
        state[f"norm{i}.weight"], state[f"norm{i}.bias"] = norms[i]
    model = _swin(window_size=3)
    report = cswin.load_swin(model, state)
    assert not report.missing and not report.unexpected
    assert "layernorm.weight" in report.skipped
    out = model(tf.constant(x))
    for i, (key, r) in enumerate(zip(KEYS, ref)):
        want = F.layer_norm(r.permute(0, 2, 3, 1), (r.shape[1],), torch.from_numpy(norms[i][0]),
                            torch.from_numpy(norms[i][1])).numpy()
        np.testing.assert_allclose(out[key].numpy(), want, atol=1e-4, err_msg=key)


def _hf_to_official_by_hand(hf_state):
    """An independent rename of the MaskFormerSwin Hub layout into the official release's."""
    out = {}
    for k, v in hf_state.items():
        v = v.numpy()
        k = k.replace("model.", "", 1).replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
        k = k.replace("embeddings.norm", "patch_embed.norm").replace("encoder.layers", "layers")
        k = k.replace("hidden_states_norms.", "norm").replace("layernorm_before", "norm1")
        k = k.replace("layernorm_after", "norm2").replace("attention.output.dense", "attn.proj")
        k = k.replace("intermediate.dense", "mlp.fc1").replace("output.dense", "mlp.fc2")
        k = k.replace("attention.self.", "attn.")
        out[k] = v
    for k in [k for k in out if ".attn.query." in k]:
        parts = [k.replace("query", n) for n in ("query", "key", "value")]
        out[k.replace("query", "qkv")] = np.concatenate([out.pop(p) for p in parts])
    return out


def test_official_layout_round_trip(hf_maskformer_swin, tmp_path):
    official = _hf_to_official_by_hand(hf_maskformer_swin.state_dict())
    official.pop("layernorm.weight"), official.pop("layernorm.bias")
    # what a classification release adds: a final norm, a head, buffers; a "model" wrapper.
    extra = {"norm.weight": np.ones(192, "float32"), "norm.bias": np.zeros(192, "float32"),
             "head.weight": np.zeros((10, 192), "float32"), "head.bias": np.zeros(10, "float32"),
             "layers.0.blocks.1.attn_mask": np.zeros((4, 49, 49), "float32")}
    model = _swin(window_size=7)
    report = cswin.load_swin(model, {"backbone." + k: v for k, v in {**official, **extra}.items()})
    assert report.layout.startswith("official") and not report.unexpected and not report.missing
    skipped = {"backbone.head.weight", "backbone.norm.weight", "backbone.layers.0.blocks.1.attn_mask"}
    assert skipped <= set(report.skipped)
    reference = _swin(window_size=7)
    cswin.load_swin(reference, hf_maskformer_swin.state_dict())
    x = tf.constant(_image(40, 56))
    a, b = model(x), reference(x)
    for key in KEYS:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    # MaskFormer's detectron2 .pkl form of the same weights.
    import pickle

    path = tmp_path / "swin_tiny.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": official, "__author__": "third_party", "matching_heuristics": True}, f)
    from_pkl = _swin(window_size=7)
    assert not cswin.load_swin(from_pkl, str(path)).missing
    np.testing.assert_array_equal(from_pkl(x)["res5"].numpy(), b["res5"].numpy())
    # ImageNet weights lack the stage norms: allowed even when strict, and noted.
    imagenet = {k: v for k, v in official.items() if not k.startswith("norm")}
    report = cswin.load_swin(_swin(window_size=7), imagenet)
    assert report.missing and all(k.startswith("norm") for k in report.missing) and report.notes


def test_swin_wrong_window_or_width_is_a_clear_error(hf_maskformer_swin):
    model = _swin(window_size=12)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ShapeMismatchError, match="relative_position_bias_table"):
        cswin.load_swin(model, hf_maskformer_swin.state_dict())
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    with pytest.raises(ShapeMismatchError, match="another Swin variant"):
        cswin.load_swin(SwinTransformer(embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 3, 4, 6)),
                        hf_maskformer_swin.state_dict())


# ----------------------------------------------------------------------------- ResNet


@pytest.fixture(scope="module")
def hf_resnet():
    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[1, 2, 1, 1],
                       layer_type="bottleneck")
    model = _randomize(ResNetModel(cfg), seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # keep activations O(1) through the residual sums (float32 parity)
        for name, p in model.named_parameters():
            if "normalization.weight" in name:
                p.copy_(0.2 + 0.2 * torch.rand(p.shape, generator=g))
    return model


def _resnet(**kw):
    m = ResNet(**{"depths": (1, 2, 1, 1), "stem_channels": 16, "width_per_group": 8, **kw})
    m.build((None, None, None, 3))
    return m


def test_resnet_parity_with_transformers(hf_resnet):
    x = _image(61, 90, seed=4)
    with torch.no_grad():
        ref = hf_resnet(_torch(x), output_hidden_states=True).hidden_states[1:]
    model = _resnet()
    report = cres.load_resnet(model, hf_resnet.state_dict())
    assert report.layout.startswith("transformers") and not report.missing and not report.unexpected
    assert any(k.endswith("num_batches_tracked") for k in report.skipped)
    out = model(tf.constant(x), training=False)
    for key, r in zip(KEYS, ref):
        assert out[key].shape == _nhwc(r).shape
        assert 0.1 < np.abs(_nhwc(r)).max() < 100
        np.testing.assert_allclose(out[key].numpy(), _nhwc(r), atol=1e-4, err_msg=key)


def _d2_to_torchvision(state):
    """detectron2 names -> torchvision names, written independently of the converter."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "stem":
            out["conv1.weight" if parts[2] == "weight" else f"bn1.{parts[-1]}"] = v
            continue
        stage, block, conv = int(parts[0][3:]) - 1, parts[1], parts[2]
        base = f"layer{stage}.{block}."
        norm = parts[3] == "norm"
        if conv == "shortcut":
            out[base + ("downsample.1." if norm else "downsample.0.") + parts[-1]] = v
        else:
            n = conv[-1]
            out[base + (f"bn{n}." if norm else f"conv{n}.") + parts[-1]] = v
    return out


def test_resnet_detectron2_torchvision_and_pickle_round_trip(hf_resnet, tmp_path):
    import pickle

    source = _resnet()
    cres.load_resnet(source, hf_resnet.state_dict())
    d2 = cres.export_state(source)
    assert "stem.conv1.norm.running_var" in d2 and "res2.0.shortcut.weight" in d2 and "res3.1.conv3.weight" in d2
    tv = _d2_to_torchvision(d2)
    tv["fc.weight"], tv["fc.bias"] = np.zeros((5, 256), "float32"), np.zeros(5, "float32")
    tv["bn1.num_batches_tracked"] = np.array(3)
    path = tmp_path / "R-tiny.pkl"
    with open(path, "wb") as f:
        weights = {"backbone." + k: v for k, v in d2.items()}
        weights["sem_seg_head.predictor.class_embed.weight"] = np.zeros((3, 4), "float32")  # a whole MaskFormer
        pickle.dump({"model": weights, "__author__": "test"}, f)
    x = tf.constant(_image(37, 50, seed=5))
    want = source(x, training=False)
    for src, layout in ((tv, "torchvision"), (str(path), "detectron2")):
        model = _resnet()
        report = cres.load_resnet(model, src)
        assert report.layout.startswith(layout) and not report.missing and not report.unexpected
        got = model(x, training=False)
        for key in KEYS:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())
    with pytest.raises(ShapeMismatchError, match="another ResNet variant"):
        cres.load_resnet(_resnet(stem_type="deeplab", stem_channels=16), d2)


def test_resnet_pickle_reader_refuses_code(tmp_path):
    import pickle

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"x": print}}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        cres.read_d2_pickle(str(path))
