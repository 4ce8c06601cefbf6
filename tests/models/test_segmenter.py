import keras
import numpy as np
import pytest

import kseg
from kseg.models import Segmenter, list_variants


def n_params(layer):
    return sum(int(np.prod(v.shape)) for v in layer.weights)


# Segmenter Table 11 (decoders on Seg-B†/16, ADE20K K=150): (decoder, layers, dim) -> M params.
# Mask decoders include proj_dec, 2 d x d projections and the norms (see MaskTransformerHead).
TABLE_11 = [("mask", 1, 768, 9.0), ("mask", 2, 768, 16.0), ("mask", 3, 768, 23.0), ("mask", 2, 384, 4.2)]
# Table 1: backbone parameters (M). Our counts include the position embedding at the
# checkpoint resolution (384 px, 224 for DeiT-S) and cls/dist tokens, no ImageNet head.
TABLE_1 = {"deit_s16": 22.0, "deit_b16": 86.0, "vit_b16": 86.0, "vit_l16": 307.0}


@pytest.mark.parametrize("decoder, layers, dim, paper", TABLE_11)
def test_mask_decoder_params_match_table_11(decoder, layers, dim, paper):
    model = Segmenter(150, backbone="deit_b16", decoder=decoder, decoder_layers=layers, decoder_dim=dim)
    model.build((None, None, None, 3))
    assert abs(n_params(model.decode_head) / 1e6 - paper) / paper < 0.05


def test_linear_decoder_params_match_table_11():
    model = kseg.build_model("segmenter_deit_b16_linear", num_classes=150)
    assert round(n_params(model.decode_head) / 1e6, 1) == 0.1  # 768*150 + 150 = 0.115M


@pytest.mark.parametrize("backbone, paper", TABLE_1.items())
def test_backbone_params_match_table_1(backbone, paper):
    model = Segmenter(150, backbone=backbone)
    model.build((None, None, None, 3))
    assert abs(n_params(model.encoder) / 1e6 - paper) / paper < 0.05


def test_variants_registered():
    names = list_variants("segmenter")
    assert "segmenter_vit_b16_mask" in names and "segmenter_vit_t16_mask" in names
    assert "segmenter_deit_b16_mask" in names and "segmenter_vit_l16_mask" in names
    assert "segmenter_vit_b8_mask" not in names  # not in the paper
    assert len(names) == 12


@pytest.mark.parametrize("variant", ["segmenter_vit_t16_mask"])
def test_non_square_and_several_sizes_with_one_model(variant):
    model = kseg.build_model(variant, num_classes=5)
    rng = np.random.default_rng(0)
    for h, w in [(64, 96), (48, 32)]:
        out = model(rng.uniform(0, 255, (2, h, w, 3)).astype("float32"))
        assert tuple(out.shape) == (2, h // 16, w // 16, 5) and out.dtype == "float32"
    img = rng.integers(0, 256, (1, 32, 48, 3))
    np.testing.assert_allclose(model(img.astype("uint8")), model(img.astype("float32")), atol=1e-5)


def test_linear_and_upsampled_mask_shapes():
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    lin = Segmenter(3, backbone="vit_t16", decoder="linear")
    assert tuple(lin(x).shape) == (1, 4, 6, 3)
    up = Segmenter(3, backbone="vit_t16", decoder="mask", upsample_tokens=True, decoder_layers=1)
    assert tuple(up(x).shape) == (1, 8, 12, 3)
    assert Segmenter(3, backbone="deit_t16").mean != lin.mean  # DeiT: ImageNet statistics


def test_from_variant_config_and_saving(tmp_path):
    model = Segmenter.from_variant("segmenter_vit_t16_mask", num_classes=4, drop_path_rate=0.0)
    x = np.random.default_rng(2).uniform(0, 255, (1, 32, 48, 3)).astype("float32")
    y = np.asarray(model(x))
    assert model.get_config()["decoder"] == "mask"
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)), y, atol=1e-5)
    model.save_weights(tmp_path / "m.weights.h5")
    other = kseg.build_model("segmenter_vit_t16_mask", num_classes=4)
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(np.asarray(other(x)), y, atol=1e-5)


@pytest.mark.slow
def test_compile_defaults_and_one_training_step():
    model = kseg.build_model("segmenter_vit_t16_mask", num_classes=3)
    model.compile(max_steps=10)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, (2, 32, 32)).astype("int32")
    y[0, :4] = 255
    hist = model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


@pytest.mark.parametrize("decoder", ["linear", "mask"])
def test_traces_with_unknown_batch_height_width(decoder):
    import tensorflow as tf

    model = Segmenter(3, backbone="vit_t16", decoder=decoder, decoder_layers=1)
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, None, None, 3]
    assert tuple(fn(tf.zeros((1, 48, 80, 3))).shape) == (1, 3, 5, 3)
