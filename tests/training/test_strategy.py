"""Strategy selection, the per-replica batch check and chief election (no devices needed)."""

import json

import pytest

from kseg.training.strategy import (StrategyError, build_strategy, is_chief, per_replica_batch,
                                    resolve_strategy_name)


def test_auto_picks_multi_worker_from_tf_config(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert resolve_strategy_name("auto") == "multi_worker"
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:0"], "worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief()


def test_auto_on_one_cpu_is_single_device(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    assert resolve_strategy_name("auto") in ("default", "tpu")  # a TPU VM would say tpu
    assert resolve_strategy_name("auto", cpu_replicas=2) in ("mirrored", "tpu")
    assert build_strategy("one_device").num_replicas_in_sync == 1
    assert is_chief()


def test_unknown_strategy_and_tpu_absent(monkeypatch):
    with pytest.raises(StrategyError, match="valid strategies"):
        resolve_strategy_name("horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="TF_CONFIG"):
        build_strategy("multi_worker")


def test_per_replica_batch_is_derived_and_checked():
    assert per_replica_batch(16, 8) == 2
    assert per_replica_batch(16, 2, accumulate_steps=4) == 2
    with pytest.raises(StrategyError) as e:
        per_replica_batch(6, 4)
    assert "global_batch_size=6" in str(e.value) and "multiple of 4" in str(e.value)
    assert "4 or 8" in str(e.value)
    with pytest.raises(StrategyError, match="multiple of 8"):
        per_replica_batch(4, 2, accumulate_steps=4)
