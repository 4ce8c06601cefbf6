"""TFLite export: builtins only, parity with Keras (ai-edge-litert), quantized variants, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.export import (TFLiteExportModule, TFLiteRunner, UnsupportedOpError, convert, op_summary,
                         verify_tflite)
from kseg.models import Segmentor
from tests.export.export_utils import build_tiny

SIZE = (64, 96)  # non-square on purpose


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
        label = rng.integers(0, 11, (50, 70)).astype(np.int32)
        label[:5] = 255
        yield image, label


@pytest.fixture(scope="module")
def fp32(b0_camvid):
    model, _ = b0_camvid
    return convert(model, SIZE, "none")


def test_fp32_is_builtins_only_and_matches_keras(fp32, b0_camvid):
    model, _ = b0_camvid
    summary = op_summary(fp32)
    ops = summary["ops"]
    assert "GELU" in ops and "ERF" not in ops  # exact GELU fused into the builtin
    assert not any(o.startswith("FLEX") or o == "CUSTOM" for o in ops), ops
    assert {"SOFTMAX", "RESIZE_BILINEAR", "ARG_MAX"} <= set(ops)
    runner = TFLiteRunner(fp32)
    assert runner.input_size == SIZE and runner.input_dtype == np.uint8
    details = runner.runner.get_output_details()
    assert details["labels"]["dtype"] == np.int32 and list(details["labels"]["shape"]) == [1, 64, 96]
    assert list(details["logits"]["shape"]) == [1, 16, 24, 11]
    result = verify_tflite(runner, TFLiteExportModule(model, SIZE), _samples(3), 11)
    assert result["images"] == 3 and result["agreement"] >= 99.9, result
    assert result["logits_max_abs_diff"] < 1e-3, result
    assert abs(result["tflite"]["mIoU"] - result["keras"]["mIoU"]) < 0.5


@pytest.mark.parametrize("quantize", ["fp16", "dynamic", "int8"])
def test_quantized_variants(quantize, fp32, b0_camvid):
    model, _ = b0_camvid
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 256, (1,) + SIZE + (3,), dtype=np.uint8) for _ in range(4)]
    content = convert(model, SIZE, quantize, representative_data=data if quantize == "int8" else None)
    assert len(content) < 0.6 * len(fp32)
    summary = op_summary(content)
    assert not any(o.startswith("FLEX") or o == "CUSTOM" for o in summary["ops"])
    if quantize == "int8":
        assert summary["int8_ops"] > summary["float_ops"], summary
    result = verify_tflite(content, TFLiteExportModule(model, SIZE), _samples(2), 11)
    assert result["agreement"] > (95.0 if quantize != "int8" else 30.0), result


def test_int8_float_ops_keeps_chosen_ops_in_float(b0_camvid):
    model, _ = b0_camvid
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 256, (1,) + SIZE + (3,), dtype=np.uint8) for _ in range(2)]
    full = op_summary(convert(model, SIZE, "int8", data))
    mixed = op_summary(convert(model, SIZE, "int8", data, float_ops=("MEAN", "RSQRT")))
    assert mixed["float_ops"] > full["float_ops"]
    assert mixed["ops"].get("DEQUANTIZE", 0) > full["ops"].get("DEQUANTIZE", 0)


class ErfModel(Segmentor):
    """A model with a hand-written erf: needs the Flex op Erf."""

    def __init__(self, **kwargs):
        super().__init__(name="erf_model", **kwargs)
        self.num_classes, self.variant = 2, "erf_test"
        self.conv = keras.layers.Conv2D(2, 1)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.built = True

    def forward(self, x, training=None):
        return self.conv(tf.math.erf(x))


def test_unsupported_op_is_named_with_the_fix():
    model = ErfModel()
    model.build((None, None, None, 3))
    with pytest.raises(UnsupportedOpError, match="Erf") as info:
        convert(model, (32, 32))
    assert info.value.ops == ["Erf"]
    assert "gelu" in str(info.value).lower() and "erf_test" in str(info.value)


def test_bad_arguments(b0_camvid):
    model, _ = b0_camvid
    with pytest.raises(ValueError, match="unknown quantization"):
        convert(model, SIZE, "int4")
    with pytest.raises(ValueError, match="representative_data"):
        convert(model, SIZE, "int8")
    with pytest.raises(ValueError, match="too small"):
        convert(model, (16, 16))
    with pytest.raises(ValueError, match="uint8"):
        convert(model, SIZE, "int8", [np.zeros((1, 32, 32, 3), np.uint8)])
    with pytest.raises(FileNotFoundError):
        TFLiteRunner("/nonexistent/model.tflite")


# Every SegFormer variant (tiny config: one block per stage, the variant's widths, heads and
# reduction ratios), and one or two variants of every other family: all of them convert.
TFLITE_VARIANTS = kseg.models.list_variants("segformer") + [
    "segmenter_vit_t16_mask", "setr_pup_vit_t16", "segvit_vit_t16", "segvit_vit_b16_shrunk",
    "maskformer_swin_t", "maskformer_r50"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", TFLITE_VARIANTS)
def test_variant_converts_to_builtins(variant):
    """Converts with builtin ops only and matches Keras at 64x64."""
    model = build_tiny(variant, num_classes=4)
    content = convert(model, (64, 64), "none")
    ops = op_summary(content)["ops"]
    assert not any(o.startswith("FLEX") or o == "CUSTOM" for o in ops)
    assert "GELU" in ops or variant.startswith("maskformer_r")  # exact GELU as one builtin op
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    lite = TFLiteRunner(content)(x)
    ref = TFLiteExportModule(model, (64, 64)).infer(tf.constant(x))
    np.testing.assert_allclose(lite["logits"], ref["logits"].numpy(), atol=2e-3)
