#!/usr/bin/env python
"""Training curves of one or more kseg runs as a PNG: loss, learning rate and val mIoU
against the optimizer step, read from each work dir's TensorBoard logs.

Usage (from the repository root)::

    python tools/analyze_logs.py work_dirs/segformer_mit_b0_camvid --output curves.png
    python tools/analyze_logs.py work_dirs/a work_dirs/b --legend baseline "lr 2e-3" --output ab.png
    python tools/analyze_logs.py work_dirs/a --keys loss lr mIoU aAcc time data_time --output all.png

Keys: ``loss``, ``lr``, ``time``, ``data_time`` (``tensorboard/train``: ``train/<key>``,
every ``train.log_interval`` steps) and ``mIoU``, ``aAcc``, ``mAcc`` (``tensorboard/val``:
``val/<key>``, percent, every ``train.eval_interval`` steps); a full tag name also works.
One panel per key, one line per run. The tool also prints, per run, the last step, the
last logged loss and the best mIoU with its step. mmseg's
``tools/analysis_tools/analyze_logs.py plot_curve`` does the same from its JSON logs.
"""

import argparse
import glob
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TRAIN_KEYS = ("loss", "lr", "time", "data_time")
VAL_KEYS = ("mIoU", "aAcc", "mAcc")
LABELS = {"loss": "loss", "lr": "learning rate", "time": "s / step", "data_time": "data s / step",
          "mIoU": "val mIoU (%)", "aAcc": "val aAcc (%)", "mAcc": "val mAcc (%)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work_dirs", nargs="+", help="work dirs of kseg.train runs (each holds tensorboard/)")
    p.add_argument("--keys", nargs="+", default=["loss", "lr", "mIoU"],
                   help="curves to plot (default: loss lr mIoU)")
    p.add_argument("--legend", nargs="+", help="one name per work dir (default: the folder names)")
    p.add_argument("--output", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    if args.legend and len(args.legend) != len(args.work_dirs):
        p.error(f"--legend has {len(args.legend)} names for {len(args.work_dirs)} work dirs")
    if not args.output.lower().endswith(".png"):
        p.error(f"--output {args.output}: the curves are written as PNG; name it *.png")
    return args


def tag_of(key):
    if "/" in key:
        return key
    return f"train/{key}" if key in TRAIN_KEYS else f"val/{key}" if key in VAL_KEYS else key


def read_scalars(work_dir):
    """``{tag: (steps, values)}`` of every scalar in ``work_dir/tensorboard/*/events*``,
    sorted by step (the last value wins when a resumed run wrote a step twice).

    Raises:
      FileNotFoundError: ``work_dir`` holds no TensorBoard event file.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    paths = sorted(glob.glob(os.path.join(work_dir, "tensorboard", "*", "events*")))
    if not paths:
        raise FileNotFoundError(f"{work_dir}: no TensorBoard events under {work_dir}/tensorboard/*/; "
                                "pass the work dir of a kseg.train run")
    points = {}
    for path in paths:
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue
                points.setdefault(value.tag, {})[event.step] = float(tensor_util.make_ndarray(value.tensor))
    return {tag: (sorted(by_step), [by_step[s] for s in sorted(by_step)]) for tag, by_step in points.items()}


def plot(runs, keys, output):
    """Saves one panel per key with one line per run; ``runs`` is ``[(name, scalars)]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        tag = tag_of(key)
        for name, scalars in runs:
            if tag in scalars:
                steps, values = scalars[tag]
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
        ax.set_title(tag)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(LABELS.get(key, key))
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=100)


def describe(name, scalars):
    parts = [name + ":"]
    if "train/loss" in scalars:
        steps, values = scalars["train/loss"]
        parts.append(f"last step {steps[-1]}, loss {values[-1]:.4f}")
    if "val/mIoU" in scalars:
        steps, values = scalars["val/mIoU"]
        best = max(range(len(values)), key=values.__getitem__)
        parts.append(f"best mIoU {values[best]:.2f} at step {steps[best]} ({len(values)} evaluations)")
    return " ".join(parts) if len(parts) > 1 else f"{name}: no loss or mIoU logged"


def main(argv=None):
    args = parse_args(argv)
    names = args.legend or [os.path.basename(os.path.normpath(d)) for d in args.work_dirs]
    runs = [(name, read_scalars(d)) for name, d in zip(names, args.work_dirs)]
    missing = [k for k in args.keys if not any(tag_of(k) in s for _, s in runs)]
    if len(missing) == len(args.keys):
        known = sorted({t for _, s in runs for t in s})
        raise SystemExit(f"analyze_logs: none of the keys {args.keys} is logged; the runs hold {known}")
    plot(runs, args.keys, args.output)
    for name, scalars in runs:
        print(describe(name, scalars))
    print(f"wrote {args.output}" + (f" (not logged: {', '.join(missing)})" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
