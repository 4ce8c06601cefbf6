"""FLOPs counter (kseg.utils.flops, tools/get_flops.py) against hand counts and the papers' tables.

The papers' "GFLOPs" are multiply-accumulates (one multiply-add = one FLOP); the anchors
below are copied from seeds/specs (SegFormer Table 1a/2; SegViT Tables 1 and 8, which also
give the Segmenter and SETR numbers; MaskFormer Table 1). Counting traces the model graph
without running it. Variants whose model files are still being written are skipped.
Fast subset: ``pytest -m "not slow" tests/tools/test_get_flops.py``.
"""

import functools
import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import kseg
from kseg.utils.flops import count_flops, einsum_macs

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "get_flops.py")


def _load_tool():
    spec = importlib.util.spec_from_file_location("kseg_tools_get_flops", os.path.abspath(_TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _report(variant, size, num_classes=150):
    model = kseg.models.build_model(variant, num_classes=num_classes)
    report = count_flops(model, (size, size, 3))
    assert not report.unknown, report.unknown
    return report


def _assert_close(report, paper, rel):
    err = report.gflops / paper - 1
    assert abs(err) <= rel, f"{report.model_name}: counted {report.gflops:.2f} G vs paper {paper} G ({100 * err:+.2f}%)"


def _require(variant):
    if variant not in kseg.models.list_variants():
        pytest.skip(f"variant {variant!r} is not registered yet (its model file is in progress); "
                    "re-run this test once it is")


# ---------------------------------------------------------------- hand-countable models


def test_dense_counts_one_mac_per_multiply_add_and_ignores_bias():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(3, use_bias=False)])
    report = count_flops(model, (8,), batch_size=2)
    assert report.macs == 2 * (8 * 4 + 4 * 3)
    assert report.gflops == pytest.approx((8 * 4 + 4 * 3) / 1e9)
    assert report.params == 8 * 4 + 4 + 4 * 3
    assert report.weight_only_macs == 0 and not report.unknown


def test_convolutions_hand_counts():
    x = keras.Input((10, 12, 3))
    y = keras.layers.Conv2D(5, 3, padding="same", name="conv")(x)              # 10*12*5 * 3*3*3
    y = keras.layers.DepthwiseConv2D(3, padding="valid", name="dw")(y)         # 8*10*5 * 3*3
    y = keras.layers.Conv2D(4, 1, groups=1, name="pw")(y)                      # 8*10*4 * 5
    y = keras.layers.Conv2D(4, 3, strides=2, groups=2, padding="same", name="grouped")(y)  # 4*5*4 * 3*3*2
    y = keras.layers.Conv2DTranspose(6, 2, strides=2, name="deconv")(y)        # (4*5*4) * 2*2*6
    model = keras.Model(x, y)
    report = count_flops(model, (10, 12, 3))
    expected = {
        "conv": 10 * 12 * 5 * 27,
        "dw": 8 * 10 * 5 * 9,
        "pw": 8 * 10 * 4 * 5,
        "grouped": 4 * 5 * 4 * 18,
        "deconv": 4 * 5 * 4 * 4 * 6,
    }
    assert report.by_layer(depth=1) == {k: v for k, v in sorted(expected.items(), key=lambda kv: -kv[1])}
    assert report.macs == sum(expected.values())


class _Attention(keras.layers.Layer):
    """softmax((x W W) x^T) x, where W W depends on the weights only."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], input_shape[-1]), name="w")

    def call(self, x):
        w2 = ops.matmul(self.w, self.w)  # input-independent
        q = ops.matmul(x, w2)
        scores = tf.einsum("bnc,bmc->bnm", q, x)
        return ops.matmul(ops.softmax(scores), x)


def test_attention_matmuls_and_weight_only_ops_counted():
    model = keras.Sequential([keras.Input((7, 6)), _Attention()])
    report = count_flops(model, (7, 6))
    n, c = 7, 6
    # Work on weights alone runs at every forward and is counted (as fvcore/mmcv would),
    # and reported separately.
    assert report.macs == c * c * c + n * c * c + n * n * c + n * n * c
    assert report.weight_only_macs == c * c * c


def test_einsum_macs():
    assert einsum_macs("bnc,bmc->bnm", [[2, 3, 4], [2, 5, 4]]) == 2 * 3 * 4 * 5
    assert einsum_macs("...ij,jk->...ik", [[2, 3, 4, 5], [5, 6]]) == 2 * 3 * 4 * 5 * 6
    assert einsum_macs("...c,...c->...", [[1, 8, 4], [3, 1, 4]]) == 3 * 8 * 4  # broadcast
    assert einsum_macs("ij->ji", [[3, 4]]) == 0


def test_formulation_is_validated():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="formulation"):
        count_flops(model, (2,), formulation="fvcore")


# ---------------------------------------------------------------- SegFormer, Table 1a (ADE20K, 150 classes)

# (variant, crop, paper GFLOPs, paper total params M or None)
SEGFORMER_FAST = [("segformer_mit_b0", 512, 8.4, 3.8), ("segformer_mit_b1", 512, 15.9, None)]
SEGFORMER_SLOW = [
    ("segformer_mit_b2", 512, 62.4, None),
    ("segformer_mit_b3", 512, 79.0, None),
    ("segformer_mit_b4", 512, 95.7, 64.1),
    ("segformer_mit_b5", 640, 183.3, 84.7),
]


def _check_segformer(variant, size, paper, params):
    report = _report(variant, size)
    _assert_close(report, paper, 0.03)
    assert report.reference_layers == ["decode_head"]
    if params is not None:
        assert report.params / 1e6 == pytest.approx(params, rel=0.03)


@pytest.mark.parametrize("variant,size,paper,params", SEGFORMER_FAST)
def test_segformer_table_1a(variant, size, paper, params):
    _check_segformer(variant, size, paper, params)


@pytest.mark.slow
@pytest.mark.parametrize("variant,size,paper,params", SEGFORMER_SLOW)
def test_segformer_table_1a_large(variant, size, paper, params):
    _check_segformer(variant, size, paper, params)


def test_segformer_executed_formulation_and_call_restored():
    """kseg's All-MLP head folds the fuse conv into the per-stage Linears: the executed graph
    does fewer MACs than Eq. 4 as written, and counting leaves the model's ``call`` intact."""
    model = kseg.models.build_model("segformer_mit_b0", num_classes=150)
    paper = count_flops(model, (512, 512, 3))
    executed = count_flops(model, (512, 512, 3), formulation="executed")
    assert "call" not in vars(model.decode_head)
    assert executed.reference_layers == []
    # Eq. 4's fuse conv on 4C channels at stride 4 (128*128*1024*256 MACs) is gone; the folded
    # per-stage products cost what the per-stage Linears cost.
    fuse = 128 * 128 * 1024 * 256
    assert paper.by_layer(2)["decode_head/linear_fuse"] == fuse
    fold = (32 + 64 + 160 + 256 + 4) * 256 * 256  # 4 kernels and 4 biases times U_i: weights only
    assert executed.weight_only_macs == fold
    assert executed.macs == paper.macs - fuse + fold
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False), model.decode_head.reference_call(
        model.encoder(model.normalize(x), training=False), training=False), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- ViT families, SegViT Tables 1/8 (ADE20K 512^2)


def test_segmenter_vit_b16_mask():
    """SegViT Table 1: Segmenter* ViT-Base (mask transformer) 129.6 G at 512x512."""
    _assert_close(_report("segmenter_vit_b16_mask", 512), 129.6, 0.05)


def test_setr_naive_vit_b16():
    """SegViT Table 8: ViT-B with the SETR (naive) head, 107.3 G at 512x512."""
    _assert_close(_report("setr_naive_vit_b16", 512), 107.3, 0.05)


# kseg's MLA head classifies with a 3x3 conv on the 4 x 128 concatenated channels at stride 4,
# like the official SETR ``VIT_MLAHead.cls``: 128*128*512*150*9 = 11.3 G. SegViT's SETR-MLA
# numbers are what the same model gives with a 1x1 classifier (mmseg's ``cls_seg``, 1.26 G):
# ViT-B 123.4 - 11.3 + 1.3 = 113.4 (113.5), ViT-L 378.7 - 11.3 + 1.3 = 368.6 (368.6).
_MLA_CLS_3X3 = ("kseg's SETR-MLA classifier is a 3x3 conv (official SETR), SegViT's count implies 1x1: "
                "+9.9 G (counted 123.4 G)")
_MLA_CLS_GFLOPS = 128 * 128 * 4 * 128 * 150 * (9 - 1) / 1e9  # 3x3 minus 1x1 classifier at 512x512


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=_MLA_CLS_3X3)
def test_setr_mla_vit_b16():
    """SegViT Table 1: SETR-MLA* ViT-Base 113.5 G at 512x512."""
    _assert_close(_report("setr_mla_vit_b16", 512), 113.5, 0.05)


def test_setr_mla_vit_b16_up_to_classifier_kernel():
    """The whole gap to SegViT's 113.5 G is the classifier kernel size (see above)."""
    report = _report("setr_mla_vit_b16", 512)
    assert report.gflops - _MLA_CLS_GFLOPS == pytest.approx(113.5, rel=0.005)


@pytest.mark.slow
def test_setr_mla_vit_l16():
    """SegViT Table 1: SETR-MLA ViT-Large 368.6 G at 512x512 (+2.7% here, the 3x3 classifier)."""
    report = _report("setr_mla_vit_l16", 512)
    _assert_close(report, 368.6, 0.05)
    assert report.gflops - _MLA_CLS_GFLOPS == pytest.approx(368.6, rel=0.005)


@pytest.mark.slow
def test_segmenter_vit_l16_mask_640():
    """SegViT Table 1: Segmenter ViT-Large (mask) 671.8 G at 640x640."""
    _assert_close(_report("segmenter_vit_l16_mask", 640), 671.8, 0.05)


def test_segvit_vit_b16():
    """SegViT Table 1: SegViT ViT-Base (3-layer ATM cascade) 120.9 G at 512x512, of which
    the authors' semantic inference at full resolution (K x Q MACs per pixel) is 5.9 G."""
    _require("segvit_vit_b16")
    report = _report("segvit_vit_b16", 512)
    _assert_close(report, 120.9, 0.05)
    assert report.by_layer(1)["semantic_inference"] == 150 * 150 * 512 * 512


def test_mask_classification_executed_semantic_inference_at_mask_stride():
    _require("segvit_vit_t16")
    model = kseg.models.build_model("segvit_vit_t16", num_classes=4)
    paper = count_flops(model, (64, 96, 3))
    executed = count_flops(model, (64, 96, 3), formulation="executed")
    assert paper.by_layer(1)["semantic_inference"] == 4 * 4 * 64 * 96
    assert executed.by_layer(1)["semantic_inference"] == 4 * 4 * 4 * 6  # stride 16
    assert paper.macs - executed.macs == 4 * 4 * (64 * 96 - 4 * 6)


def test_segvit_vit_b16_shrunk():
    """SegViT Table 8: Shrunk ViT-Base (QD + QU + ATM) 97.1 G at 512x512."""
    _require("segvit_vit_b16_shrunk")
    _assert_close(_report("segvit_vit_b16_shrunk", 512), 97.1, 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("variant,paper", [("segvit_vit_l16", 637.9), ("segvit_vit_l16_shrunk", 373.5)])
def test_segvit_vit_l16_640(variant, paper):
    """SegViT Table 1: ViT-Large 637.9 G, Shrunk ViT-Large 373.5 G at 640x640."""
    _require(variant)
    _assert_close(_report(variant, 640), paper, 0.05)


# ---------------------------------------------------------------- MaskFormer Table 1 (ADE20K, 150 classes)
# Loose anchors per maskformer.md (measurement protocol unstated), yet the counts land within 2%.


def test_maskformer_r50():
    """MaskFormer Table 1: R50 53 G at 512x512 (semantic inference at full resolution: 3.9 G)."""
    _require("maskformer_r50")
    _assert_close(_report("maskformer_r50", 512), 53.0, 0.03)


@pytest.mark.slow
@pytest.mark.parametrize("variant,size,paper", [
    ("maskformer_r101", 512, 73.0), ("maskformer_r101c", 512, 80.0), ("maskformer_swin_t", 512, 55.0),
    ("maskformer_swin_s", 512, 79.0), ("maskformer_swin_b", 640, 195.0), ("maskformer_swin_l", 640, 375.0),
])
def test_maskformer_table_1(variant, size, paper):
    _require(variant)
    _assert_close(_report(variant, size), paper, 0.03)


# ---------------------------------------------------------------- the CLI


def test_tool_prints_summary_and_writes_json(tmp_path, capsys):
    tool = _load_tool()
    out = tmp_path / "flops.json"
    report = tool.main(["--variant", "segformer_mit_b0", "--size", "64", "96", "--num-classes", "4",
                        "--by-layer", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "GFLOPs" in printed and "params" in printed and "encoder/block_0_0" in printed
    assert "executed" in printed
    data = json.loads(out.read_text())
    assert data["variant"] == "segformer_mit_b0" and data["input_shape"] == [64, 96, 3]
    assert data["macs"] == report.macs > 0
    assert data["gflops"] == pytest.approx(report.macs / 1e9)
    assert 0 < data["executed_gflops"] < data["gflops"]
    assert sum(data["by_layer"].values()) == data["macs"]


def test_tool_rejects_unknown_variant():
    tool = _load_tool()
    with pytest.raises(SystemExit, match="unknown model variant 'nope'.*segformer_mit_b0"):
        tool.main(["--variant", "nope"])
