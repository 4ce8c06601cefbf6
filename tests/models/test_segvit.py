import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.backbones.vit_shrunk import SegViTEncoder
from kseg.inference.semantic import semantic_inference
from kseg.losses.atm_loss import ATMLoss
from kseg.models import SegViT, list_variants


def n_params(layer):
    return sum(int(np.prod(v.shape)) for v in layer.weights)


def images(b, h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (b, h, w, 3)).astype("float32")


TINY_TAPS = dict(depth=4, out_layers=(2, 3, 4), qd_block=3, qu_layers=(2, 4))


def tiny(shrunk=False, k=3, decoder_layers=1, **kw):
    """ViT-T/16 widths with 4 blocks (taps 2, 3, 4; QD in block 3, QU taps 2 and 4) and one
    decoder layer per ATM unless a test needs more: the structure of the variants at a
    fraction of the CPU time."""
    return SegViT(k, backbone="vit_t16", shrunk=shrunk, img_size=64, decoder_layers=decoder_layers,
                  **{**TINY_TAPS, **kw})


def test_variants_registered():
    assert set(list_variants("segvit")) == {
        "segvit_vit_b16", "segvit_vit_l16", "segvit_vit_b16_shrunk", "segvit_vit_l16_shrunk", "segvit_vit_t16"}


def test_taps_follow_the_paper_and_authors_code():
    b = SegViT(150, backbone="vit_b16")
    assert b.out_layers == (6, 8, 12) and b.img_size == 512  # Table 5 best; config out_indices [5, 7, 11]
    assert b.decoder_dim == 384 and b.decoder_heads == 12 and b.decoder_layers == 3
    bs = SegViT(150, backbone="vit_b16", shrunk=True)
    assert bs.qd_block == 7 and bs.qu_layers == (6, 12)  # reproduces Table 8's 97.1 / 74.1 GFLOPs
    ls = SegViT(150, backbone="vit_l16", shrunk=True)
    assert ls.qd_block == 9 and ls.qu_layers == (8, 24) and ls.img_size == 640  # shrink_idx=8, out [7, 23]
    assert SegViT(150, backbone="vit_l16").out_layers == (8, 16, 24)  # out_indices [7, 15, 23]
    assert SegViT.from_variant("segvit_vit_l16", 150).drop_path_rate == 0.3
    t = SegViT.from_variant("segvit_vit_t16", 11)
    assert t.out_layers == (6, 8, 12) and t.decoder_dim == 96 and t.decoder_heads == 3


def _atm_layer(d):
    # self-attn (in_proj 3d^2+3d, out d^2+d) + cross (q, k, v, proj) + FFN (4d) + 3 LayerNorms
    return (4 * d * d + 4 * d) * 2 + (d * 4 * d + 4 * d + 4 * d * d + d) + 6 * d


@pytest.mark.slow
def test_parameter_counts_vit_b():
    """The paper reports no parameter counts; check against closed forms of the authors'
    architecture: ViT-B/16 (no final norm, 32x32+1 position grid) and the ATM head."""
    k, c, d = 150, 768, 384
    model = kseg.build_model("segvit_vit_b16", num_classes=k)
    vit_b = 768 * 3 * 256 + 768 + 768 + 1025 * 768 + 12 * (
        2 * 2 * c + 3 * c * c + 3 * c + c * c + c + 4 * c * c + 4 * c + 4 * c * c + c)
    assert n_params(model.encoder) == vit_b  # 86.43M
    head = 3 * (c * d + d + 2 * d) + 9 * _atm_layer(d) + k * d + d * (k + 1) + k + 1
    assert n_params(model.decode_head) == head == 22_303_255
    shrunk = kseg.build_model("segvit_vit_b16_shrunk", num_classes=k)
    qu = 32 * 32 * d + 2 * (c * d + d + 2 * d) + 6 * _atm_layer(d)
    assert n_params(shrunk.decode_head) == qu + 3 * _atm_layer(d) + k * d + d * (k + 1) + k + 1
    assert n_params(shrunk.encoder) == vit_b  # QD adds no parameters (Sec. 3.3)


@pytest.mark.parametrize("shrunk", [False, True])
def test_shapes_non_square_two_sizes_and_training_outputs(shrunk):
    model = tiny(shrunk, decoder_layers=3)  # Shrunk: one supervised group per ATM layer
    for h, w in [(64, 96), (48, 32)]:
        out = model(images(2, h, w))
        assert set(out) == {"class_logits", "mask_logits"}
        assert tuple(out["class_logits"].shape) == (2, 3, 4)
        assert tuple(out["mask_logits"].shape) == (2, h // 16, w // 16, 3)
        assert out["mask_logits"].dtype == "float32" and out["class_logits"].dtype == "float32"
        assert tuple(model.semantic_logits(out).shape) == (2, h // 16, w // 16, 3)
    train = model(images(1, 64, 96), training=True)
    assert len(train["aux_outputs"]) == 2
    for aux in train["aux_outputs"]:
        assert tuple(aux["class_logits"].shape) == (1, 3, 4) and tuple(aux["mask_logits"].shape) == (1, 4, 6, 3)


def test_semantic_logits_is_the_shared_semantic_inference():
    model = tiny()
    out = model(images(1, 32, 48))
    np.testing.assert_allclose(model.semantic_logits(out), semantic_inference(out["class_logits"], out["mask_logits"]))


def test_cascade_masks_are_running_sums_and_groups_share_class_embed():
    model = tiny(decoder_dropout=0.0)
    x = model.normalize(images(1, 32, 48))
    feats = model.encoder(x)
    head = model.decode_head
    out = head([feats[f"layer{i}"] for i in (4, 3, 2)])
    groups = out["aux_outputs"] + [{k: out[k] for k in ("class_logits", "mask_logits")}]
    # Recompute each ATM's similarity by hand from its decoder's last layer.
    tokens = tf.tile(head.q[None], [1, 1, 1])
    running = 0
    for s, tap in enumerate((4, 3, 2)):
        mem = head.proj_norm[s](head.input_proj[s](tf.reshape(feats[f"layer{tap}"], (1, -1, 192))))
        outs = head.decoder[s](tokens, mem)
        tokens, sim = outs[-1]
        running = running + tf.reshape(tf.transpose(sim, (0, 2, 1)), (1, 2, 3, 3))
        np.testing.assert_allclose(groups[s]["mask_logits"], running, atol=1e-5)
        np.testing.assert_allclose(groups[s]["class_logits"], head.class_embed(tokens), atol=1e-5)


def test_query_downsampling_equals_full_block_at_sampled_positions():
    """QD keeps keys/values at full resolution, so its outputs equal an ordinary block's
    outputs at the sampled (even) positions; later blocks run on the ceil-half grid."""
    kw = dict(embed_dim=64, depth=3, num_heads=2, patch_size=16, img_size=64, out_layers=(2, 3))
    plain = SegViTEncoder(**kw)
    qd = SegViTEncoder(qd_block=2, **kw)
    x = tf.random.normal((2, 80, 112, 3))
    plain.build(x.shape)
    qd.build(x.shape)
    qd.set_weights(plain.get_weights())
    a, b = plain(x), qd(x)
    assert tuple(a["layer2"].shape) == (2, 5, 7, 64) and tuple(b["layer2"].shape) == (2, 3, 4, 64)
    np.testing.assert_allclose(b["layer2"], a["layer2"][:, ::2, ::2], atol=1e-4)
    assert tuple(b["layer3"].shape) == (2, 3, 4, 64)
    assert not qd.cls_token.trainable  # with_cls_token=False: dropped before the blocks


def test_qu_tokens_resample_to_the_input_grid_and_are_identity_at_training_size():
    model = tiny(True)
    model.build((None, None, None, 3))
    head = model.decode_head
    q = np.asarray(head.q)
    np.testing.assert_allclose(head.upsample_queries(4, 4), q, atol=1e-5)
    assert tuple(head.upsample_queries(3, 6).shape) == (18, model.decoder_dim)


# ----------------------------------------------------------------------------- loss


def _bilinear_up(x, out_h, out_w):
    """numpy (h, w, C) -> (out_h, out_w, C), half-pixel centres, edge clamp (align_corners=False)."""
    h, w = x.shape[:2]

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    r0, r1, rt = axis(h, out_h)
    c0, c1, ct = axis(w, out_w)
    rows = x[r0] * (1 - rt)[:, None, None] + x[r1] * rt[:, None, None]
    return rows[:, c0] * (1 - ct)[None, :, None] + rows[:, c1] * ct[None, :, None]


def _np_group_loss(cls_logits, mask_logits, labels, k, w_cls=1.0, w_focal=20.0, w_dice=1.0, eos=0.1):
    b, H, W = labels.shape
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    ce_num = ce_den = 0.0
    focal = dice = 0.0
    n_masks = 0
    for i in range(b):
        up = _bilinear_up(mask_logits[i], H, W)
        for q in range(k):
            present = (labels[i] == q).any()
            target = q if present else k
            z = cls_logits[i, q]
            logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
            wt = 1.0 if present else eos
            ce_num += -wt * logp[target]
            ce_den += wt
            if present:
                n_masks += 1
                t = (labels[i] == q).astype(float).ravel()
                z = up[..., q].ravel()
                p = sig(z)
                ce = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
                p_t = p * t + (1 - p) * (1 - t)
                focal += np.mean((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2)
                dice += 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    n = max(n_masks, 1)
    return w_cls * ce_num / ce_den + w_focal * focal / n + w_dice * dice / n


def test_atm_loss_matches_numpy_reference_with_deep_supervision():
    rng = np.random.default_rng(0)
    k, b, H, W = 4, 2, 8, 12
    labels = rng.integers(0, 3, (b, H, W)).astype("int32")  # class 3 never present
    labels[0, :2] = 255
    labels[1] = np.where(labels[1] == 1, 2, labels[1])  # image 1 lacks class 1
    groups = [(rng.normal(size=(b, k, k + 1)).astype("float32"), rng.normal(size=(b, 4, 6, k)).astype("float32"))
              for _ in range(3)]
    outputs = {"class_logits": groups[-1][0], "mask_logits": groups[-1][1],
               "aux_outputs": [{"class_logits": c, "mask_logits": m} for c, m in groups[:-1]]}
    loss = ATMLoss(k)
    expected = sum(_np_group_loss(c, m, labels, k) for c, m in groups)
    np.testing.assert_allclose(float(loss(labels, outputs)), expected, rtol=1e-4)
    main_only = {"class_logits": groups[-1][0], "mask_logits": groups[-1][1]}
    np.testing.assert_allclose(float(loss(labels, main_only)), _np_group_loss(*groups[-1], labels, k), rtol=1e-4)


def test_fixed_class_to_token_assignment():
    labels = np.full((2, 4, 4), 255, "int32")
    labels[0, :2] = 2
    labels[0, 2:, :1] = 0
    onehot, present, classes = ATMLoss(4).targets(labels)
    np.testing.assert_array_equal(classes, [[0, 4, 2, 4], [4, 4, 4, 4]])  # token q <-> class q, else no-object
    np.testing.assert_array_equal(present, [[1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(onehot[0, :2, :, 2], 1)
    # An all-ignored image has no positive masks: only the no-object CE remains.
    out = {"class_logits": np.zeros((2, 4, 5), "float32"), "mask_logits": np.zeros((2, 2, 2, 4), "float32")}
    only_ignore = ATMLoss(4)(labels[1:], {k: v[1:] for k, v in out.items()})
    np.testing.assert_allclose(float(only_ignore), np.log(5.0), rtol=1e-5)


def test_mask_ignore_modes_and_errors():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (1, 8, 8)).astype("int32")
    labels[:, :4] = 255
    out = {"class_logits": rng.normal(size=(1, 3, 4)).astype("float32"),
           "mask_logits": rng.normal(size=(1, 8, 8, 3)).astype("float32") + 3.0}
    neg, exc = float(ATMLoss(3)(labels, out)), float(ATMLoss(3, mask_ignore="exclude")(labels, out))
    # positive logits on ignored pixels are penalised only in "negative" mode
    assert np.isfinite(neg) and np.isfinite(exc) and exc < neg
    with pytest.raises(ValueError, match="mask_ignore"):
        ATMLoss(3, mask_ignore="drop")
    with pytest.raises(ValueError, match=r"expects class_logits \(B, 5, 6\)"):
        ATMLoss(5)(labels, out)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ATMLoss(3, focal_weight=5.0)))
    assert isinstance(restored, ATMLoss) and restored.focal_weight == 5.0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="qu_layers"):
        SegViT(3, backbone="vit_t16", shrunk=True, qd_block=7, qu_layers=(8, 12))
    with pytest.raises(ValueError, match="duplicates"):
        SegViT(3, backbone="vit_t16", out_layers=(6, 6, 12))
    with pytest.raises(ValueError, match="qd_block"):
        SegViTEncoder(embed_dim=64, depth=3, num_heads=2, qd_block=5)
    with pytest.raises(KeyError, match="unknown ViT backbone"):
        SegViT(3, backbone="vit_q16")


# ----------------------------------------------------------------------------- training / saving


def test_head_pattern_matches_heads_only():
    model = tiny(True)
    model.build((None, None, None, 3))
    heads = [w.path for w in model.weights if re.fullmatch(SegViT.head_path_pattern, w.path)]
    assert heads and all("encoder" not in p for p in heads) and "segvit/decode_head/q" in heads
    assert len(heads) == len(model.decode_head.weights)


@pytest.mark.slow
@pytest.mark.parametrize("shrunk", [False, True])
def test_compile_fit_finite_loss_and_head_gets_gradients(shrunk):
    model = tiny(shrunk)
    model.build((None, None, None, 3))
    model.compile(max_steps=4)
    rng = np.random.default_rng(2)
    x = images(2, 32, 48)
    y = rng.integers(0, 3, (2, 32, 48)).astype("int32")
    y[:, :3] = 255
    before = model.decode_head.q.numpy().copy()
    hist = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert all(np.isfinite(hist.history["loss"])) and "mIoU" in hist.history
    assert np.abs(model.decode_head.q.numpy() - before).max() > 0


def test_from_variant_config_and_saving(tmp_path):
    model = SegViT.from_variant("segvit_vit_t16", num_classes=4, img_size=64, decoder_layers=1, **TINY_TAPS)
    x = images(1, 32, 48, seed=3)
    y = model(x)
    assert model.get_config()["out_layers"] == [2, 3, 4] and model.get_config()["variant"] == "segvit_vit_t16"
    model.compile(max_steps=10)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    for k in ("class_logits", "mask_logits"):
        np.testing.assert_allclose(np.asarray(loaded(x)[k]), np.asarray(y[k]), atol=1e-4)
    assert isinstance(loaded.loss, ATMLoss)
    model.save_weights(tmp_path / "m.weights.h5")
    other = SegViT.from_variant("segvit_vit_t16", num_classes=4, img_size=64, decoder_layers=1, **TINY_TAPS)
    other.build((None, None, None, 3))
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(np.asarray(other(x)["mask_logits"]), np.asarray(y["mask_logits"]), atol=1e-4)


def test_shrunk_keras_round_trip(tmp_path):
    model = tiny(True)
    x = images(1, 48, 64, seed=4)
    y = model(x)
    model.save(tmp_path / "s.keras")
    loaded = keras.models.load_model(tmp_path / "s.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)["mask_logits"]), np.asarray(y["mask_logits"]), atol=1e-4)


@pytest.mark.parametrize("shrunk, training", [(False, False), (True, True)])
def test_traces_with_unknown_batch_height_width(shrunk, training):
    model = tiny(shrunk)
    fn = tf.function(lambda x: model(x, training=training),
                     input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    out = fn.get_concrete_function().structured_outputs
    assert out["mask_logits"].shape.as_list() == [None, None, None, 3]
    assert out["class_logits"].shape.as_list() == [None, 3, 4]


def test_load_imagenet_vit_into_segvit_encoder():
    import torch
    from transformers import ViTConfig, ViTModel

    from kseg.convert.vit import load_vit

    hf = ViTModel(ViTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                            patch_size=16, image_size=224), add_pooling_layer=False)
    model = tiny()
    with torch.no_grad():
        report = load_vit(model, hf.state_dict())
    assert not report.missing and any("resampled" in n for n in report.notes)  # 14x14 -> 4x4 grid
    assert not report.unexpected and "norm.weight" in report.skipped  # SegViT runs without the final norm
