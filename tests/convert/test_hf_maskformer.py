"""A randomly initialised transformers MaskFormer (tiny Swin / ResNet), converted, gives the
same class and mask logits as kseg's MaskFormer."""

import numpy as np
import pytest

from kseg.models import MaskFormer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MEAN = np.array([123.675, 116.28, 103.53], "float32")
STD = np.array([58.395, 57.12, 57.375], "float32")
HEAD = dict(num_queries=6, hidden_size=32, num_heads=2, ffn_dim=64, decoder_layers=2, fpn_feature_size=32,
            mask_feature_size=32, drop_path_rate=0.0)


def hf_model(backbone, seed=0, num_labels=4):
    from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation, ResNetConfig, SwinConfig
    from transformers.models.maskformer.configuration_maskformer import MaskFormerDetrConfig

    torch.manual_seed(seed)
    if backbone == "swin":
        bb = SwinConfig(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2], window_size=4, image_size=64,
                        out_features=["stage1", "stage2", "stage3", "stage4"])
    else:
        bb = ResNetConfig(embedding_size=16, hidden_sizes=[64, 128, 256, 512], depths=[1, 1, 2, 1],
                          layer_type="bottleneck", out_features=["stage1", "stage2", "stage3", "stage4"],
                          downsample_in_bottleneck=False)
    dec = MaskFormerDetrConfig(decoder_layers=2, d_model=32, decoder_attention_heads=2, decoder_ffn_dim=64,
                               num_queries=6)
    cfg = MaskFormerConfig(backbone_config=bb, decoder_config=dec, fpn_feature_size=32, mask_feature_size=32,
                           num_labels=num_labels)
    model = MaskFormerForInstanceSegmentation(cfg).eval()
    with torch.no_grad():  # non-trivial norms so a swapped gamma/beta would show
        for name, p in model.named_parameters():
            if "norm" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if "running_var" in name:
                b.copy_(0.5 + torch.rand_like(b))
            elif "running_mean" in name:
                b.copy_(0.1 * torch.randn_like(b))
    return model


def kseg_twin(backbone):
    if backbone == "swin":
        return MaskFormer(4, backbone="swin_t", backbone_kwargs={"embed_dim": 16, "depths": [2, 2, 2, 2],
                                                                  "num_heads": [1, 1, 2, 2], "window_size": 4},
                          **HEAD)
    return MaskFormer(4, backbone="r50", backbone_kwargs={"depths": [1, 1, 2, 1], "stem_channels": 16,
                                                          "width_per_group": 16}, **HEAD)


def run_both(hf, model, h=64, w=96, seed=1):
    x = np.random.default_rng(seed).uniform(0, 255, (2, h, w, 3)).astype("float32")
    with torch.no_grad():
        ref = hf(pixel_values=torch.tensor(((x - MEAN) / STD).transpose(0, 3, 1, 2)))
    out = model(x)
    return ref, out


@pytest.mark.parametrize("layout", ["state_dict", "saved"])
def test_swin_parity(layout, tmp_path):
    from kseg.convert.hf_maskformer import load_hf_maskformer

    hf = hf_model("swin")
    model = kseg_twin("swin")
    if layout == "saved":  # Hub layout (out_proj, fc1) as written by save_pretrained
        hf.save_pretrained(tmp_path)
        source = str(tmp_path)
    else:  # transformers 5.x in-memory layout (o_proj, mlp.fc1)
        source = hf.state_dict()
    report = load_hf_maskformer(model, source)
    assert not report.missing and not report.unexpected
    assert "criterion.empty_weight" in report.skipped
    # saved: sizes that are not multiples of 32 (Swin padding, PyTorch's nearest upsampling)
    ref, out = run_both(hf, model, *((72, 100) if layout == "saved" else (64, 96)))
    cls_diff = np.abs(np.asarray(out["class_logits"]) - ref.class_queries_logits.numpy()).max()
    mask_diff = np.abs(np.asarray(out["mask_logits"]) - ref.masks_queries_logits.numpy().transpose(0, 2, 3, 1)).max()
    print(f"swin parity ({layout}): class {cls_diff:.2e}, mask {mask_diff:.2e}")
    assert cls_diff < 1e-4 and mask_diff < 1e-4


def test_resnet_parity():
    from kseg.convert.hf_maskformer import load_hf_maskformer

    hf = hf_model("resnet")
    model = kseg_twin("resnet")
    load_hf_maskformer(model, hf.state_dict())
    ref, out = run_both(hf, model, h=70, w=98)  # odd FPN ratios
    cls_diff = np.abs(np.asarray(out["class_logits"]) - ref.class_queries_logits.numpy()).max()
    mask_diff = np.abs(np.asarray(out["mask_logits"]) - ref.masks_queries_logits.numpy().transpose(0, 2, 3, 1)).max()
    print(f"resnet parity: class {cls_diff:.2e}, mask {mask_diff:.2e}")
    assert cls_diff < 1e-4 and mask_diff < 1e-4


def test_wrong_class_count_and_skip_classifier():
    from kseg.convert.common import ShapeMismatchError
    from kseg.convert.hf_maskformer import load_hf_maskformer

    hf = hf_model("swin", num_labels=7)
    model = kseg_twin("swin")
    with pytest.raises(ShapeMismatchError, match="class_predictor"):
        load_hf_maskformer(model, hf.state_dict())
    report = load_hf_maskformer(model, hf.state_dict(), skip_classifier=True)
    assert "class_predictor.weight" in report.skipped
    ref, out = run_both(hf, model)
    mask_diff = np.abs(np.asarray(out["mask_logits"]) - ref.masks_queries_logits.numpy().transpose(0, 2, 3, 1)).max()
    assert mask_diff < 1e-4


def hf_to_d2(hf_state, backbone_state):
    """The authors' detectron2 layout written out by hand from a HF state (test-side inverse)."""
    hub = {k: v.numpy() for k, v in hf_state.items()}
    d2 = {"backbone." + k: v for k, v in backbone_state.items()}
    d2["pixel_mean"] = MEAN.reshape(3, 1, 1)
    d2["pixel_std"] = STD.reshape(3, 1, 1)
    d2["criterion.empty_weight"] = np.ones(5, "float32")
    pd, pr = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
    src = "model.pixel_level_module.decoder."
    for p in ("weight", "bias"):
        d2[f"{pd}layer_4.norm.{p}"] = hub[f"{src}fpn.stem.1.{p}"]
        d2[f"{pd}mask_features.{p}"] = hub[f"{src}mask_projection.{p}"]
        for i, k in enumerate((3, 2, 1)):
            d2[f"{pd}adapter_{k}.norm.{p}"] = hub[f"{src}fpn.layers.{i}.proj.1.{p}"]
            d2[f"{pd}layer_{k}.norm.{p}"] = hub[f"{src}fpn.layers.{i}.block.1.{p}"]
    d2[f"{pd}layer_4.weight"] = hub[f"{src}fpn.stem.0.weight"]
    for i, k in enumerate((3, 2, 1)):
        d2[f"{pd}adapter_{k}.weight"] = hub[f"{src}fpn.layers.{i}.proj.0.weight"]
        d2[f"{pd}layer_{k}.weight"] = hub[f"{src}fpn.layers.{i}.block.0.weight"]
    tm = "model.transformer_module."
    d2[f"{pr}query_embed.weight"] = hub[f"{tm}queries_embedder.weight"]
    for p in ("weight", "bias"):
        d2[f"{pr}input_proj.{p}"] = hub[f"{tm}input_projection.{p}"]
        d2[f"{pr}transformer.decoder.norm.{p}"] = hub[f"{tm}decoder.layernorm.{p}"]
        d2[f"{pr}class_embed.{p}"] = hub[f"class_predictor.{p}"]
        for j in range(3):
            d2[f"{pr}mask_embed.layers.{j}.{p}"] = hub[f"mask_embedder.{j}.0.{p}"]
        for i in range(2):
            s, t = f"{tm}decoder.layers.{i}.", f"{pr}transformer.decoder.layers.{i}."
            for a, b in (("self_attn", "self_attn"), ("encoder_attn", "multihead_attn")):
                d2[f"{t}{b}.in_proj_{p}"] = np.concatenate([hub[f"{s}{a}.{x}_proj.{p}"] for x in "qkv"])
                d2[f"{t}{b}.out_proj.{p}"] = hub[f"{s}{a}.o_proj.{p}"]
            for a, b in (("mlp.fc1", "linear1"), ("mlp.fc2", "linear2"), ("self_attn_layer_norm", "norm1"),
                         ("encoder_attn_layer_norm", "norm2"), ("final_layer_norm", "norm3")):
                d2[f"{t}{b}.{p}"] = hub[f"{s}{a}.{p}"]
    return d2


def test_detectron2_checkpoint_gives_hf_outputs(tmp_path):
    import pickle

    from kseg.convert.d2_maskformer import load_d2_maskformer
    from kseg.convert.swin import hf_maskformer_backbone_state

    hf = hf_model("swin", seed=3)
    d2 = hf_to_d2(hf.state_dict(), hf_maskformer_backbone_state(hf.state_dict()))
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2, "__author__": "test"}, f)
    model = kseg_twin("swin")
    report = load_d2_maskformer(model, str(path))
    assert not report.unexpected and not report.missing
    assert {"pixel_mean", "pixel_std", "criterion.empty_weight"} <= set(report.skipped)
    ref, out = run_both(hf, model)
    np.testing.assert_allclose(np.asarray(out["class_logits"]), ref.class_queries_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(out["mask_logits"]),
                               ref.masks_queries_logits.numpy().transpose(0, 2, 3, 1), atol=1e-4)
    d2["sem_seg_head.predictor.transformer.encoder.layers.0.linear1.weight"] = np.zeros((2, 2), "float32")
    with pytest.raises(ValueError, match="transformer encoder"):
        load_d2_maskformer(kseg_twin("swin"), d2)
