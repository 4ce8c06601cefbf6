#!/usr/bin/env python
"""A confusion-matrix picture (PNG) from a kseg evaluation JSON.

Usage (from the repository root)::

    python -m kseg.evaluate --recipe R --checkpoint C --output eval.json
    python tools/confusion_matrix.py eval.json --output confusion.png
    python tools/confusion_matrix.py work_dirs/run/eval/step_2800.json --normalize none --output counts.png

Reads ``confusion_matrix`` (int [K, K], rows = ground truth, columns = prediction, pixels
with ``ignore_index`` not counted) and the class names (the keys of ``IoU``) from any JSON
kseg writes: ``kseg.evaluate --output``, ``eval/step_N.json`` of a training run. With
``--normalize true`` (default) each row is divided by its ground-truth pixel count, so the
diagonal is each class's accuracy (Acc) in percent and a row shows where that class's
pixels went; ``--normalize none`` shows pixel counts. Rows of classes absent from the
ground truth are left empty. mmseg's ``tools/analysis_tools/confusion_matrix.py`` draws
the same picture.
"""

import argparse
import json
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("eval_json", help="evaluation JSON holding confusion_matrix and IoU")
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--normalize", choices=("true", "none"), default="true",
                   help="true: percent of each ground-truth row (default); none: pixel counts")
    p.add_argument("--title", help="figure title (default: the JSON's file name, mIoU and aAcc)")
    args = p.parse_args(argv)
    if not args.output.lower().endswith(".png"):
        p.error(f"--output {args.output}: the matrix is written as PNG; name it *.png")
    return args


def load(path):
    """``(cm int64 [K, K], class names [K], eval dict)`` from an evaluation JSON.

    Raises:
      SystemExit: the file is missing, not JSON, or lacks a square ``confusion_matrix``.
    """
    import numpy as np

    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"confusion_matrix: cannot read {path}: {e}") from None
    if not isinstance(result, dict) or "confusion_matrix" not in result:
        raise SystemExit(f"confusion_matrix: {path} has no 'confusion_matrix'; pass a JSON written "
                         "by kseg.evaluate --output or a training run's eval/step_N.json")
    cm = np.asarray(result["confusion_matrix"], dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise SystemExit(f"confusion_matrix: {path}: confusion_matrix has shape {cm.shape}, not [K, K]")
    names = list(result.get("IoU", {})) or [str(k) for k in range(cm.shape[0])]
    if len(names) != cm.shape[0]:
        names = [str(k) for k in range(cm.shape[0])]
    return cm, names, result


def draw(cm, names, normalize=True, title=""):
    """A matplotlib figure of the matrix: rows = ground truth, columns = prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    if normalize:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(rows > 0, cm / np.maximum(rows, 1) * 100.0, np.nan)
    else:
        values = cm.astype(np.float64)
    size = max(5.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="% of the ground-truth class's pixels" if normalize else "pixels")
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if k <= 40:  # numbers stay readable up to ~40 classes
        top = np.nanmax(values) if np.isfinite(values).any() else 0.0
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                if np.isnan(v) or (normalize and v < 0.05):
                    continue
                text = f"{v:.1f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=6 if k > 20 else 7,
                        color="white" if v > 0.6 * top else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def main(argv=None):
    args = parse_args(argv)
    cm, names, result = load(args.eval_json)
    normalize = args.normalize == "true"
    title = args.title
    if title is None:
        title = os.path.basename(args.eval_json)
        scores = [f"{key} {result[key]:.2f}" for key in ("mIoU", "aAcc") if isinstance(result.get(key), float)]
        title += (": " + ", ".join(scores) if scores else "") + (" (row-normalised %)" if normalize else "")
    fig = draw(cm, names, normalize, title)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}: {cm.shape[0]} classes, {int(cm.sum())} pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
