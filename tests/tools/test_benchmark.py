"""Smoke test of tools/benchmark.py: a tiny run with the keras-hub peer, no timed assertions."""

import importlib.util
import json
import os

import pytest

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "benchmark.py")


def _load_tool():
    spec = importlib.util.spec_from_file_location("kseg_tools_benchmark", os.path.abspath(_TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_benchmark_tiny_with_peer(tmp_path, capsys):
    pytest.importorskip("keras_hub")
    from kseg.data import find_data_root

    tool = _load_tool()
    out = tmp_path / "bench.json"
    tool.main(
        ["--variant", "segformer_mit_b0", "--size", "64", "64", "--num-classes", "4",
         "--repeats", "1", "--warmup", "0", "--no-modes", "--gemm-size", "256",
         "--eval-images", "2", "--json", str(out)]
    )
    data = json.loads(out.read_text())
    assert data["variant"] == "segformer_mit_b0" and data["size"] == [64, 64]
    assert set(data["models"]) == {"kseg", "keras_hub"}
    both = ("forward_ms", "label_map_ms", "train_step_ms", "tflite_ms")
    for name in ("kseg", "keras_hub"):
        numbers = data["models"][name]
        for key in both:
            assert numbers[key] > 0, (name, key)
            assert len(numbers[key + "_all"]) == 1
        assert numbers["params"] > 0
    assert data["models"]["kseg"]["label_map_whole_ms"] > 0  # kseg only
    assert "label_map_whole_ms" not in data["models"]["keras_hub"]
    # Same architecture on both sides: identical parameter counts.
    assert data["models"]["kseg"]["params"] == data["models"]["keras_hub"]["params"]
    assert data["models"]["kseg"]["forward_output_shapes"] == [[1, 16, 16, 4]]
    assert data["models"]["keras_hub"]["forward_output_shapes"] == [[1, 64, 64, 4]]
    for key in both:
        assert data["ratios"][key] > 0
    limit = data["limit"]
    assert limit["gemm_gflops"] > 0 and limit["model_gflop"] > 0
    assert limit["forward_ms"] == pytest.approx(1e3 * limit["model_gflop"] / limit["gemm_gflops"])
    assert limit["train_step_ms"] == pytest.approx(6 * limit["forward_ms"])  # 3x, batch 2
    find_data_root("camvid")  # the evaluation ran on the real split
    ev = data["evaluation"]
    assert ev["images"] == 2 and ev["images_per_second"] > 0 and ev["num_classes"] == 11
    assert ev["first_image_size"] == [360, 480] and ev["inference_size"] == [180, 240]
    printed = capsys.readouterr().out
    for text in ("kseg/keras-hub", "parameters", "x limit", "GEMM peak", "TFLite fp32",
                 "evaluation camvid/val (images/s)", "% of the forward"):
        assert text in printed, text


def test_any_family_runs_without_peer(capsys):
    """A plain-ViT family (SETR-PUP, ViT-T): no keras-hub peer; the label-map modes."""
    tool = _load_tool()
    result = tool.main(
        ["--variant", "setr_pup_vit_t16", "--size", "64", "48", "--num-classes", "3",
         "--repeats", "1", "--warmup", "0", "--no-train", "--no-tflite", "--no-eval",
         "--ms-ratios", "0.5", "1.0", "--gemm-size", "128"]
    )
    assert set(result["models"]) == {"kseg"} and "SegFormer" in result["peer_skipped"]
    assert result["slide_crop"] == [32, 32] and result["slide_stride"] == [32, 24] and result["slide_windows"] == 4
    assert result["ms_passes"] == 4
    for key in ("forward_ms", "label_map_ms", "label_map_whole_ms", "label_map_slide_ms", "label_map_ms_flip_ms"):
        assert result["models"]["kseg"][key] > 0, key
    printed = capsys.readouterr().out
    assert "keras-hub peer: not run" in printed and "label map ms_flip (4 passes)" in printed


def test_peer_skipped_for_non_square_input():
    tool = _load_tool()
    import kseg

    model = kseg.build_model("segformer_mit_b0", num_classes=3)
    assert tool.peer_unavailable_reason(model, (64, 64)) is None
    assert "square" in tool.peer_unavailable_reason(model, (64, 96))
    assert "divisible" in tool.peer_unavailable_reason(model, (80, 80))
