import numpy as np
import pytest
import tensorflow as tf

from kseg.backbones.swin import SWIN_VARIANTS, SwinTransformer, build_backbone
from kseg.layers.window_attention import (
    WindowAttention,
    cyclic_shift,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

KEYS = ("res2", "res3", "res4", "res5")
TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)


def _up(n, k):
    return -(-n // k)


def _count(layer):
    return sum(int(np.prod(w.shape)) for w in layer.weights)


def test_shapes_non_square_and_two_sizes_one_graph():
    model = SwinTransformer(**TINY, drop_path_rate=0.1, name="backbone")
    model.build((None, None, None, 3))
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for h, w in [(64, 96), (70, 45), (33, 130)]:
        out = fn(tf.random.normal((2, h, w, 3)))
        assert list(out) == list(KEYS)
        size = (_up(h, 4), _up(w, 4))
        for i, key in enumerate(KEYS):
            if i:
                size = (_up(size[0], 2), _up(size[1], 2))
            assert tuple(out[key].shape) == (2, *size, 16 * 2 ** i), (h, w, key)
            assert np.isfinite(out[key].numpy()).all()
    assert model.out_channels == {"res2": 16, "res3": 32, "res4": 64, "res5": 128}
    assert model.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def test_layer_names_mirror_official_release():
    model = build_backbone("swin_t", name="backbone")
    model.build((None, None, None, 3))
    paths = {w.path for w in model.weights}
    for p in ("backbone/patch_embed/proj/kernel", "backbone/patch_embed/norm/gamma",
              "backbone/layers_0/blocks_1/attn/relative_position_bias_table",
              "backbone/layers_2/blocks_5/attn/qkv/kernel", "backbone/layers_2/blocks_5/mlp/fc2/bias",
              "backbone/layers_2/downsample/reduction/kernel", "backbone/norm3/beta"):
        assert p in paths, p
    assert "backbone/layers_3/downsample/reduction/kernel" not in paths


# Backbone parameters (no classifier). Spec sheet (maskformer.md Sec. 1.4) lists the
# window-7 numbers: Swin-T 27.52 (+stage norms), S 48.84, B 86.75, L 195.00 (millions).
# MaskFormer's Swin-B/L use window 12: (23^2 - 13^2) = 360 more table rows per head per block.
SPEC_M = {"swin_t": 27.52, "swin_s": 48.84, "swin_b": 86.75, "swin_l": 195.00}


@pytest.mark.parametrize("name", ["swin_t", "swin_s", pytest.param("swin_b", marks=pytest.mark.slow),
                                  pytest.param("swin_l", marks=pytest.mark.slow)])
def test_param_counts_match_spec(name):
    model = build_backbone(name)
    model.build((None, None, None, 3))
    n = _count(model)
    arch = SWIN_VARIANTS[name]
    extra = 0
    if arch["window_size"] == 12:
        extra = 360 * sum(h * d for h, d in zip(arch["num_heads"], arch["depths"]))
    assert abs((n - extra) / 1e6 - SPEC_M[name]) < 0.01, (name, n)


def test_variant_table_and_builder():
    assert set(SWIN_VARIANTS) == {"swin_t", "swin_s", "swin_b", "swin_l"}
    assert SWIN_VARIANTS["swin_b"]["window_size"] == 12 and SWIN_VARIANTS["swin_l"]["embed_dim"] == 192
    assert all("drop_path_rate" not in v for v in SWIN_VARIANTS.values())  # passed separately
    model = SwinTransformer(**SWIN_VARIANTS["swin_t"], drop_path_rate=0.3, name="backbone")
    rates = [b.drop_path.rate for s in model.layers for b in s.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3) and rates == sorted(rates)
    assert [b.shift_size for b in model.layers[2].blocks] == [0, 3] * 3
    with pytest.raises(KeyError, match="swin_t"):
        build_backbone("swin_xl")
    with pytest.raises(ValueError, match="divisible"):
        SwinTransformer(embed_dim=20, num_heads=(3, 6, 12, 24))
    with pytest.raises(ValueError, match="out_features"):
        SwinTransformer(**TINY, out_features=("res6",))


def test_out_features_subset_and_config_round_trip():
    model = SwinTransformer(**TINY, out_features=("res3", "res4"))
    out = model(tf.random.normal((1, 40, 40, 3)))
    assert list(out) == ["res3", "res4"] and model.out_channels == {"res3": 32, "res4": 64}
    clone = SwinTransformer.from_config(model.get_config())
    clone.build((None, None, None, 3))
    clone.set_weights(model.get_weights())
    x = tf.random.normal((1, 36, 52, 3))
    np.testing.assert_allclose(clone(x)["res4"].numpy(), model(x)["res4"].numpy(), atol=1e-6)


def test_drop_path_only_in_training():
    model = SwinTransformer(**TINY, drop_path_rate=0.5)
    x = tf.random.normal((4, 32, 32, 3))
    a, b = model(x, training=False)["res5"], model(x, training=False)["res5"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    c = model(x, training=True)["res5"]
    assert not np.allclose(a.numpy(), c.numpy())


def test_mixed_precision_outputs_finite():
    from keras import mixed_precision

    mixed_precision.set_global_policy("mixed_float16")
    try:
        model = SwinTransformer(**TINY)
        out = model(tf.random.normal((1, 48, 64, 3)))
        assert out["res5"].dtype == tf.float16 and np.isfinite(out["res5"].numpy()).all()
        assert model.layers[0].blocks[0].attn.relative_position_bias_table.dtype == "float32"
    finally:
        mixed_precision.set_global_policy("float32")


# ----------------------------------------------------------------------------- window attention


def test_relative_position_index_brute_force():
    m = 3
    idx = relative_position_index(m)
    for a in range(m * m):
        for b in range(m * m):
            dr, dc = a // m - b // m, a % m - b % m
            assert idx[a, b] == (dr + m - 1) * (2 * m - 1) + (dc + m - 1)
    assert idx.max() == (2 * m - 1) ** 2 - 1


def test_cyclic_shift_is_roll():
    x = tf.reshape(tf.range(2 * 7 * 14 * 3, dtype=tf.float32), (2, 7, 14, 3))
    for s in (-3, 3, -6):
        np.testing.assert_array_equal(cyclic_shift(x, s).numpy(), tf.roll(x, (s, s), (1, 2)).numpy())


def test_partition_reverse_round_trip():
    x = tf.random.normal((2, 14, 21, 5))
    win = window_partition(x, 7)
    assert tuple(win.shape) == (2 * 2 * 3, 49, 5)
    np.testing.assert_array_equal(window_reverse(win, 7, 14, 21).numpy(), x.numpy())
    np.testing.assert_array_equal(win[1].numpy().reshape(7, 7, 5), x[0, :7, 7:14].numpy())


def _official_mask(hp, wp, m, s):
    """The official nine-slice construction, in numpy."""
    img = np.zeros((hp, wp))
    cnt = 0
    for hs in (slice(0, -m), slice(-m, -s), slice(-s, None)):
        for ws in (slice(0, -m), slice(-m, -s), slice(-s, None)):
            img[hs, ws] = cnt
            cnt += 1
    win = img.reshape(hp // m, m, wp // m, m).transpose(0, 2, 1, 3).reshape(-1, m * m)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, -100.0, 0.0)


@pytest.mark.parametrize("hp,wp,m", [(14, 21, 7), (7, 7, 7), (24, 12, 12)])
def test_shifted_window_mask_matches_official(hp, wp, m):
    got = shifted_window_mask(tf.constant(hp), tf.constant(wp), m, m // 2).numpy()
    np.testing.assert_array_equal(got, _official_mask(hp, wp, m, m // 2))


def test_window_attention_bias_and_mask_shapes():
    attn = WindowAttention(8, 2, 3)
    x = tf.random.normal((4, 9, 8))  # 2 images x 2 windows
    attn.build(x.shape)
    assert tuple(attn.relative_position_bias_table.shape) == (25, 2)
    assert tuple(attn.relative_position_bias().shape) == (2, 9, 9)
    mask = shifted_window_mask(tf.constant(3), tf.constant(6), 3, 1)
    assert tuple(attn(x, attn_mask=mask).shape) == (4, 9, 8)
    with pytest.raises(ValueError, match="divisible"):
        WindowAttention(8, 3, 7)


@pytest.mark.slow
def test_tflite_builtins_match_eager():
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = SwinTransformer(**TINY)
    x = tf.random.normal((1, 70, 90, 3))
    want = model(x)
    fn = tf.function(lambda t: model(t), input_signature=[tf.TensorSpec((1, 70, 90, 3), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [convert_variables_to_constants_v2(fn.get_concrete_function())])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    interp = Interpreter(model_content=converter.convert())
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x.numpy())
    interp.invoke()
    lite = {tuple(d["shape"]): interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    for key in KEYS:
        np.testing.assert_allclose(lite[tuple(want[key].shape)], want[key].numpy(), atol=1e-4)
