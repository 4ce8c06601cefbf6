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
    tool = _load_tool()
    out = tmp_path / "bench.json"
    tool.main(
        ["--variant", "segformer_mit_b0", "--size", "64", "64", "--num-classes", "4",
         "--repeats", "1", "--warmup", "1", "--json", str(out)]
    )
    data = json.loads(out.read_text())
    assert data["variant"] == "segformer_mit_b0" and data["size"] == [64, 64]
    assert set(data["models"]) == {"kseg", "keras_hub"}
    for name in ("kseg", "keras_hub"):
        numbers = data["models"][name]
        for key in ("forward_ms", "label_map_ms", "train_step_ms"):
            assert numbers[key] > 0, (name, key)
            assert len(numbers[key + "_all"]) == 1
        assert numbers["params"] > 0
    # Same architecture on both sides: identical parameter counts.
    assert data["models"]["kseg"]["params"] == data["models"]["keras_hub"]["params"]
    assert data["models"]["kseg"]["forward_output_shape"] == [1, 16, 16, 4]
    assert data["models"]["keras_hub"]["forward_output_shape"] == [1, 64, 64, 4]
    for key in ("forward", "label_map", "train_step"):
        assert data["ratios"][key] > 0
    printed = capsys.readouterr().out
    assert "kseg/keras-hub" in printed and "parameters" in printed


def test_peer_skipped_for_non_square_input():
    tool = _load_tool()
    import kseg

    model = kseg.build_model("segformer_mit_b0", num_classes=3)
    assert tool.peer_unavailable_reason(model, (64, 64)) is None
    assert "square" in tool.peer_unavailable_reason(model, (64, 96))
    assert "divisible" in tool.peer_unavailable_reason(model, (80, 80))
