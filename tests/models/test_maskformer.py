import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.layers.sine_position import sine_position_embedding
from kseg.models import MaskFormer, list_variants

TINY = dict(backbone="swin_t", backbone_kwargs={"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
                                                 "window_size": 4},
            num_queries=6, hidden_size=32, num_heads=2, ffn_dim=64, decoder_layers=2, fpn_feature_size=32,
            mask_feature_size=32, drop_path_rate=0.0)


def images(b, h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (b, h, w, 3)).astype("float32")


def n_params(layer):
    return sum(int(np.prod(v.shape)) for v in layer.weights)


def test_variants_registered():
    assert set(list_variants("maskformer")) == {
        "maskformer_r50", "maskformer_r101", "maskformer_r101c",
        "maskformer_swin_t", "maskformer_swin_s", "maskformer_swin_b", "maskformer_swin_l", "maskformer_swin_nano"}


@pytest.mark.slow
@pytest.mark.parametrize("variant, paper", [("maskformer_r50", 41), ("maskformer_r101", 60),
                                            ("maskformer_r101c", 60), ("maskformer_swin_t", 42),
                                            ("maskformer_swin_s", 63), ("maskformer_swin_b", 102),
                                            ("maskformer_swin_l", 212)])
def test_params_match_table_1(variant, paper):
    """MaskFormer Table 1 (ADE20K, K=150), within 3%."""
    model = kseg.build_model(variant, num_classes=150)
    total = model.count_params() / 1e6
    assert abs(total - paper) / paper < 0.03, total
    # heads: transformer module + class/mask heads ~10M (maskformer.md §1.4)
    heads = (n_params(model.transformer_module) + n_params(model.class_predictor) + n_params(model.mask_embedder))
    assert 9.8e6 < heads < 10.4e6


def test_head_params_of_r50_by_hand():
    """Pixel decoder of R50 (2048/1024/512/256 -> 256, GN, 3x3 mask projection) and the
    transformer module + heads, counted by hand (K=150, 100 queries, d 256, FFN 2048)."""
    from kseg.heads.maskformer_head import MaskFormerPixelDecoder, MaskFormerTransformerModule

    pd = MaskFormerPixelDecoder({"res2": 256, "res3": 512, "res4": 1024, "res5": 2048})
    pd.build()
    gn = 2 * 256
    expected = (9 * 2048 * 256 + gn) + sum(c * 256 + gn + 9 * 256 * 256 + gn for c in (1024, 512, 256)) \
        + 9 * 256 * 256 + 256
    assert n_params(pd) == expected
    tm = MaskFormerTransformerModule(2048)
    tm.build()
    layer = 2 * 4 * (256 * 256 + 256) + 3 * 2 * 256 + (256 * 2048 + 2048) + (2048 * 256 + 256)
    assert n_params(tm) == (2048 * 256 + 256) + 100 * 256 + 6 * layer + 2 * 256


def test_outputs_non_square_two_sizes_and_training_dict():
    model = MaskFormer(4, **TINY)
    for h, w in [(64, 96), (96, 64)]:
        out = model(images(2, h, w))
        assert set(out) == {"class_logits", "mask_logits"}
        assert tuple(out["class_logits"].shape) == (2, 6, 5) and out["class_logits"].dtype == "float32"
        assert tuple(out["mask_logits"].shape) == (2, h // 4, w // 4, 6) and out["mask_logits"].dtype == "float32"
        sem = model.semantic_logits(out)
        assert tuple(sem.shape) == (2, h // 4, w // 4, 4)
    train = model(images(1, 64, 96), training=True)
    assert len(train["aux_outputs"]) == 1
    assert tuple(train["aux_outputs"][0]["mask_logits"].shape) == (1, 16, 24, 6)


def test_eval_outputs_equal_last_layer_of_training_graph_without_dropout():
    model = MaskFormer(4, **{**TINY, "dropout": 0.0})
    x = images(1, 64, 64, seed=1)
    ev, tr = model(x), model(x, training=True)
    np.testing.assert_allclose(ev["class_logits"], tr["class_logits"], atol=1e-5)
    np.testing.assert_allclose(ev["mask_logits"], tr["mask_logits"], atol=1e-4)


def test_sine_position_embedding_matches_detr_formula():
    pos = np.asarray(sine_position_embedding(3, 5, num_pos_feats=8))
    assert pos.shape == (15, 16)
    y = np.arange(1, 4) / (3 + 1e-6) * 2 * np.pi
    x = np.arange(1, 6) / (5 + 1e-6) * 2 * np.pi
    dim_t = 10000 ** (2 * (np.arange(8) // 2) / 8)
    ref_y = np.stack([np.sin(y[:, None] / dim_t[0::2]), np.cos(y[:, None] / dim_t[1::2])], -1).reshape(3, 8)
    ref_x = np.stack([np.sin(x[:, None] / dim_t[0::2]), np.cos(x[:, None] / dim_t[1::2])], -1).reshape(5, 8)
    np.testing.assert_allclose(pos.reshape(3, 5, 16)[:, :, :8], np.broadcast_to(ref_y[:, None], (3, 5, 8)),
                               atol=1e-5)
    np.testing.assert_allclose(pos.reshape(3, 5, 16)[:, :, 8:], np.broadcast_to(ref_x[None], (3, 5, 8)), atol=1e-5)


def test_loss_gradients_reach_every_head_variable():
    model = MaskFormer(3, **TINY)
    model.compile(max_steps=10)
    x = images(2, 64, 64)
    y = np.random.default_rng(2).integers(0, 3, (2, 64, 64)).astype("int32")
    y[1] = 255  # an image without segments
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, missing


@pytest.mark.slow
def test_traces_with_unknown_batch_height_width_and_mixed_precision():
    model = MaskFormer(3, **TINY)
    for training in (False, True):
        fn = tf.function(lambda x: model(x, training=training),
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
        out = fn.get_concrete_function().structured_outputs
        assert out["class_logits"].shape.as_list() == [None, 6, 4]
        assert out["mask_logits"].shape.as_list() == [None, None, None, 6]
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        half = MaskFormer(3, **TINY)
        out = half(images(1, 64, 64))
        assert out["class_logits"].dtype == "float32" and out["mask_logits"].dtype == "float32"
        assert np.isfinite(np.asarray(out["mask_logits"])).all()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.slow
@pytest.mark.parametrize("matcher", ["scipy", "hungarian"])
def test_fit_with_compile_defaults(matcher):
    from kseg.config import OptimConfig, ScheduleConfig

    model = MaskFormer(3, **{**TINY, "matcher": matcher})
    model.compile(optim=OptimConfig(lr=1e-3), schedule=ScheduleConfig(warmup_steps=0), max_steps=10)
    rng = np.random.default_rng(2)
    x = images(2, 64, 64)
    y = rng.integers(0, 3, (2, 64, 64)).astype("int32")
    y[:, :5] = 255
    model.build((None, None, None, 3))
    before = [w.numpy().copy() for w in model.transformer_module.weights]
    hist = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all() and "mIoU" in hist.history
    after = [w.numpy() for w in model.transformer_module.weights]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))
    res = model.evaluate(x, y, verbose=0, return_dict=True)
    assert np.isfinite(res["loss"])


def test_jit_compile_switches_to_the_in_graph_matcher():
    model = MaskFormer(3, **TINY)
    model.compile(max_steps=10)  # "auto" -> no XLA with the host matcher
    assert model.jit_compile is False and model.loss.matcher == "scipy"
    model.compile(max_steps=10, loss=model.default_loss(), jit_compile=True)
    assert model.jit_compile is True and model.loss.matcher == "hungarian" and not model.loss.compact_targets


def test_config_saving_and_head_pattern(tmp_path):
    import re

    model = MaskFormer.from_variant("maskformer_swin_t", num_classes=4, **{k: v for k, v in TINY.items()
                                                                           if k != "backbone"})
    x = images(1, 64, 96, seed=3)
    ref = model(x)
    model.compile(max_steps=10)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)["mask_logits"]), np.asarray(ref["mask_logits"]), atol=1e-4)
    assert loaded.loss.get_config() == model.loss.get_config()
    model.save_weights(tmp_path / "m.weights.h5")
    other = MaskFormer(4, **TINY)
    other.build((None, None, None, 3))
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(np.asarray(other(x)["class_logits"]), np.asarray(ref["class_logits"]), atol=1e-5)
    heads = [w.path for w in model.weights if re.fullmatch(MaskFormer.head_path_pattern, w.path)]
    assert heads and not any("backbone" in p for p in heads)
    assert len(heads) == len(model.weights) - len(model.backbone.weights)


@pytest.mark.slow
def test_swin_l_recipe_trains_a_few_real_steps(tmp_path):
    """``python -m kseg.train --recipe recipes/maskformer_swin_l.yaml`` on CamVid crops of 64x64
    (the ADE20K recipe with its model, optimiser, clipping and schedule; tiny data sizes)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from kseg.data import find_data_root

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    real = find_data_root("camvid")
    root = tmp_path / "camvid"
    root.mkdir()
    for name in os.listdir(real):
        os.symlink(os.path.join(real, name), root / name)
    os.symlink(os.path.join(real, "val"), root / "val_tiny")
    os.symlink(os.path.join(real, "valannot"), root / "val_tinyannot")
    with open(os.path.join(real, "val.txt")) as f:
        (root / "val_tiny.txt").write_text("".join(f.readlines()[:2]))
    sets = ["data.dataset=camvid", f"data.root={root}", "data.val_split=val_tiny", "model.num_classes=11",
            "data.scale=[120,90]", "data.crop_size=[64,64]", "train.global_batch_size=2", "train.max_steps=2",
            "train.eval_interval=2", "train.backup_interval=2", "eval.scale=[120,90]", "schedule.warmup_steps=1"]
    env = {**os.environ, "PYTHONPATH": repo, "TF_CPP_MIN_LOG_LEVEL": "2"}
    work = tmp_path / "work"
    args = [sys.executable, "-m", "kseg.train", "--recipe", os.path.join(repo, "recipes", "maskformer_swin_l.yaml"),
            "--work-dir", str(work)] + [a for s in sets for a in ("--set", s)]
    r = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["variant"] == "maskformer_swin_l" and summary["steps"] == 2
    assert "maskformer_swin_l (211.5" in r.stdout or "maskformer_swin_l (211.6" in r.stdout, r.stdout[-2000:]
    ev = json.loads((work / "eval" / "step_2.json").read_text())
    assert len(ev["IoU"]) == 11 and np.isfinite(ev["mIoU"])
    shutil.rmtree(work)  # ~1.7 GB of Swin-L checkpoints: do not leave them to pytest's tmp rotation
