"""kseg.utils.progress: plain lines in a pipe, a rich bar on a terminal, nothing when off."""

import pytest

from kseg.utils import progress
from kseg.utils.progress import ProgressTask, format_seconds, phase, track


def test_mode_follows_the_environment(monkeypatch):
    monkeypatch.delenv("KSEG_PROGRESS", raising=False)
    assert progress.mode() == "lines"  # pytest captures stdout: not a terminal
    for value in ("bar", "lines", "off"):
        monkeypatch.setenv("KSEG_PROGRESS", value)
        assert progress.mode() == value
    monkeypatch.setenv("KSEG_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="KSEG_PROGRESS='fancy'"):
        progress.mode()


def test_format_seconds():
    assert [format_seconds(s) for s in (None, 0.4, 42, 185, 3723)] == ["?", "0 s", "42 s", "3:05", "1:02:03"]


def test_lines_mode_prints_periodic_lines_and_a_summary(monkeypatch, capsys):
    monkeypatch.setenv("KSEG_PROGRESS", "lines")
    items = list(track(range(3), "scanning camvid/train", unit="files", line_every=0, min_seconds=0))
    assert items == [0, 1, 2]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "scanning camvid/train: 1/3 files", "scanning camvid/train: 2/3 files", "scanning camvid/train: 3/3 files"]
    assert "eta" not in lines[0] and "eta" in lines[1]  # the first unit (tracing) is not a rate
    assert lines[-1].startswith("scanning camvid/train: 3 files in ")

    with phase("converting to TFLite", min_seconds=0):
        pass
    assert capsys.readouterr().out.splitlines() == ["converting to TFLite ...", "converting to TFLite: in 0 s"]

    with ProgressTask("quick", 5, min_seconds=60) as task:  # short phases leave no line
        task.update(5, info="mIoU 41.00")
    assert capsys.readouterr().out == ""


def test_bar_mode_draws_nested_rows_and_prints_above(monkeypatch, capsys):
    monkeypatch.setenv("KSEG_PROGRESS", "bar")
    with ProgressTask("train", 4, "steps", min_seconds=None) as outer:
        for step in range(1, 5):
            for _ in track(range(2), "evaluating", unit="batches", min_seconds=0):
                pass
            outer.update(step, info=f"loss {step:.4f}")
        outer.print_line("[eval @ step 4] mIoU 12.00")
    out = capsys.readouterr().out
    assert "\x1b[" in out and "train" in out and "evaluating" in out
    assert "[eval @ step 4] mIoU 12.00" in out and "evaluating: 2 batches in 0 s" in out
    assert progress._live["progress"] is None and progress._live["open"] == 0  # display closed


def test_off_mode_is_silent(monkeypatch, capsys):
    monkeypatch.setenv("KSEG_PROGRESS", "off")
    assert sum(track(range(4), "x", line_every=0, min_seconds=0)) == 6
    assert capsys.readouterr().out == ""
