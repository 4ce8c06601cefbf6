import numpy as np
import pytest

import kseg
from kseg.models import SegFormer, list_variants

# SegFormer paper Table 1a / Table 2: total parameters in millions with 150 classes.
PAPER_PARAMS_M = {0: 3.8, 1: 13.7, 2: 27.5, 3: 47.3, 4: 64.1, 5: 84.7}
PAPER_ENCODER_M = {0: 3.4, 1: 13.1, 2: 24.2, 3: 44.0, 4: 60.8, 5: 81.4}


@pytest.mark.parametrize("b", range(6))
def test_parameter_counts_match_paper(b):
    model = kseg.build_model(f"segformer_mit_b{b}", num_classes=150)
    total = model.count_params() / 1e6
    encoder = sum(int(np.prod(v.shape)) for v in model.encoder.weights) / 1e6
    assert abs(total - PAPER_PARAMS_M[b]) / PAPER_PARAMS_M[b] < 0.02, total
    assert abs(encoder - PAPER_ENCODER_M[b]) / PAPER_ENCODER_M[b] < 0.03, encoder


def test_all_variants_registered():
    assert [f"segformer_mit_b{b}" for b in range(6)] == list_variants("segformer")


def test_non_square_and_several_sizes_with_one_model():
    model = kseg.build_model("segformer_mit_b0", num_classes=5)
    rng = np.random.default_rng(0)
    for h, w in [(64, 96), (50, 70), (96, 64)]:
        out = model(rng.uniform(0, 255, (2, h, w, 3)).astype("float32"))
        assert tuple(out.shape) == (2, -(-h // 4), -(-w // 4), 5)
        assert out.dtype == "float32"
    # uint8 input is cast and normalised inside: same logits as float input.
    img = rng.integers(0, 256, (1, 40, 56, 3))
    np.testing.assert_allclose(model(img.astype("uint8")), model(img.astype("float32")), atol=1e-5)


def test_output_is_translation_aware_and_depends_on_input():
    model = kseg.build_model("segformer_mit_b0", num_classes=3)
    a = model(np.zeros((1, 64, 64, 3), "float32"))
    b = model(np.full((1, 64, 64, 3), 200.0, "float32"))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_from_variant_config_and_saving(tmp_path):
    model = SegFormer.from_variant("segformer_mit_b0", num_classes=4, drop_path_rate=0.0)
    x = np.random.default_rng(1).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    y = np.asarray(model(x))
    assert model.get_config()["backbone"] == "mit_b0"
    model.save(tmp_path / "m.keras")
    import keras

    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)), y, atol=1e-5)
    model.save_weights(tmp_path / "m.weights.h5")
    other = kseg.build_model("segformer_mit_b0", num_classes=4)
    other.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(np.asarray(other(x)), y, atol=1e-5)


def test_checkpoint_of_another_variant_is_a_clear_error(tmp_path):
    from kseg.models import load_checkpoint

    kseg.build_model("segformer_mit_b0", num_classes=4).save_weights(tmp_path / "b0.weights.h5")
    with pytest.raises(ValueError, match="b0.weights.h5 does not fit model segformer_mit_b1"):
        load_checkpoint(kseg.build_model("segformer_mit_b1", num_classes=4), str(tmp_path / "b0.weights.h5"))
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(kseg.build_model("segformer_mit_b0", num_classes=7), str(tmp_path / "b0.weights.h5"))


def test_unknown_variant_lists_registered():
    with pytest.raises(KeyError, match="segformer_mit_b0"):
        kseg.build_model("segformer_mit_b9", num_classes=3)


def test_drop_path_only_in_training():
    model = kseg.build_model("segformer_mit_b0", num_classes=3, drop_path_rate=0.5, dropout=0.0)
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    rates = [blk.drop_path.rate for stage in model.encoder.block for blk in stage]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)


def test_folded_decoder_equals_eq4_as_written():
    model = kseg.build_model("segformer_mit_b2", num_classes=6)
    rng = np.random.default_rng(3)
    for v in model.decode_head.weights:  # move BatchNorm/bias off their identity init
        v.assign(v + rng.normal(0, 0.05, v.shape).astype("float32"))
    feats = model.encoder(model.normalize(rng.uniform(0, 255, (2, 72, 104, 3)).astype("float32")))
    folded = np.asarray(model.decode_head(feats))
    reference = np.asarray(model.decode_head.reference_call(feats))
    assert np.abs(folded - reference).max() < 1e-4 * max(1.0, np.abs(reference).max())


def test_compiled_model_round_trips_with_its_optimizer_state(tmp_path):
    import keras

    model = SegFormer.from_variant("segformer_mit_b0", num_classes=3)
    model.compile()
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 3, (2, 64, 64)).astype("int32")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "c.keras")
    loaded = keras.models.load_model(tmp_path / "c.keras")
    assert int(loaded.optimizer.iterations) == 1
    assert [float(o.learning_rate) for o in loaded.optimizer.optimizers] == pytest.approx(
        [float(o.learning_rate) for o in model.optimizer.optimizers])
    assert loaded.loss.ignore_index == 255
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-5)
    loaded.fit(x, y, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 2
