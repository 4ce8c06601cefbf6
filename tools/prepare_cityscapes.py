#!/usr/bin/env python
"""Writes the Cityscapes ``*_gtFine_labelTrainIds.png`` maps that kseg (and mmseg) train on.

Usage (from the repository root)::

    python tools/prepare_cityscapes.py data/cityscapes
    python tools/prepare_cityscapes.py data/cityscapes --splits train val --workers 8
    python tools/prepare_cityscapes.py data/cityscapes --overwrite

ROOT holds ``leftImg8bit/`` and ``gtFine/`` (unpacked ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip``). Every official ``gtFine/<split>/<city>/*_gtFine_labelIds.png``
is mapped with the cityscapesScripts id -> trainId table
(:data:`kseg.data.cityscapes.CITYSCAPES_LABELS`: 19 classes 0..18, every id ignored in
evaluation -> 255) and saved next to it as ``*_gtFine_labelTrainIds.png`` (8-bit, mode L).
This is what cityscapesScripts' ``createTrainIdLabelImgs`` and mmseg's converter produce,
but from the id maps rather than the polygon JSON, so it needs neither package.

Existing outputs are kept unless ``--overwrite``. Progress shows as a bar on a terminal,
as plain lines otherwise (:mod:`kseg.utils.progress`). The run ends with
a summary (converted / skipped / failed per split, values outside the id table) and exits
1 if any file failed, 2 if ROOT or ``gtFine/`` is missing.
"""

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # importing kseg imports TensorFlow

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from kseg.data.cityscapes import (  # noqa: E402
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_SPLITS,
    LABEL_ID_SUFFIX,
    LABEL_SUFFIX,
    id_to_train_id_lut,
)
from kseg.utils.progress import ProgressTask  # noqa: E402


def find_label_id_maps(root, splits):
    """Sorted ``(split, path)`` of every ``*_gtFine_labelIds.png`` under ``gtFine/<split>/``."""
    out = []
    for split in splits:
        split_dir = os.path.join(root, "gtFine", split)
        if not os.path.isdir(split_dir):
            continue
        for dirpath, dirnames, filenames in os.walk(split_dir):
            dirnames.sort()
            out += [(split, os.path.join(dirpath, n)) for n in sorted(filenames)
                    if n.endswith(LABEL_ID_SUFFIX)]
    return out


def train_id_path(label_id_path):
    """``..._gtFine_labelIds.png`` -> ``..._gtFine_labelTrainIds.png``."""
    return label_id_path[: -len(LABEL_ID_SUFFIX)] + LABEL_SUFFIX


def convert_one(src, dst, lut):
    """Maps one id map to train ids and writes it.

    Returns:
      the sorted label values of ``src`` that are not Cityscapes ids (written as 255).

    Raises:
      ValueError: a multi-channel image (a colour map was given instead of the id map).
      OSError / PIL errors: unreadable file.
    """
    with Image.open(src) as im:
        im.load()
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(f"mode {im.mode}, expected a single-channel id map")
        ids = np.asarray(im)
    ids = ids.astype(np.int64)
    values = np.unique(ids)
    unknown = [int(v) for v in values if int(v) not in CITYSCAPES_ID_TO_TRAINID]
    train_ids = lut[np.clip(ids, 0, 255)]
    train_ids[(ids < 0) | (ids > 255)] = 255
    tmp = dst + ".tmp.png"
    Image.fromarray(train_ids.astype(np.uint8), mode="L").save(tmp)
    os.replace(tmp, dst)  # never leave a half-written label map behind
    return unknown


def prepare(root, splits=CITYSCAPES_SPLITS, overwrite=False, workers=4, progress=True):
    """Converts every id map of ``splits`` under ``root``; returns the summary dict.

    Summary keys: ``converted``, ``skipped`` (output existed), ``failed`` (per-split
    counts), ``failures`` (``(path, reason)``), ``unknown_values`` (value -> number of
    files holding it), ``seconds``.
    """
    start = time.time()
    lut = id_to_train_id_lut()
    items = find_label_id_maps(root, splits)
    summary = {"converted": {s: 0 for s in splits}, "skipped": {s: 0 for s in splits},
               "failed": {s: 0 for s in splits}, "failures": [], "unknown_values": {},
               "seconds": 0.0}
    todo = []
    for split, src in items:
        if not overwrite and os.path.isfile(train_id_path(src)):
            summary["skipped"][split] += 1
        else:
            todo.append((split, src))

    def work(item):
        split, src = item
        try:
            return split, src, convert_one(src, train_id_path(src), lut), None
        except Exception as e:  # reported in the summary, the run goes on
            return split, src, None, f"{type(e).__name__}: {e}"

    bar = ProgressTask("prepare_cityscapes", len(todo), "label maps") if progress and todo else None
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        for split, src, unknown, error in pool.map(work, todo):
            if error is None:
                summary["converted"][split] += 1
                for v in unknown:
                    summary["unknown_values"][v] = summary["unknown_values"].get(v, 0) + 1
            else:
                summary["failed"][split] += 1
                summary["failures"].append((src, error))
            if bar is not None:
                bar.update(advance=1)
    if bar is not None:
        bar.close()
    summary["seconds"] = time.time() - start
    return summary


def print_summary(root, summary):
    print(f"\nprepare_cityscapes summary for {root} ({summary['seconds']:.1f} s):")
    for split in summary["converted"]:
        c, s, f = (summary[k][split] for k in ("converted", "skipped", "failed"))
        if c or s or f:
            print(f"  {split:5s}: {c} written, {s} already present (kept), {f} failed")
    total = sum(summary["converted"].values()) + sum(summary["skipped"].values())
    print(f"  *{LABEL_SUFFIX} maps present: {total}")
    if summary["unknown_values"]:
        vals = ", ".join(f"{v} ({n} files)" for v, n in sorted(summary["unknown_values"].items()))
        print(f"  warning: values that are not Cityscapes label ids were written as 255: {vals}. "
              f"Check that the inputs are *{LABEL_ID_SUFFIX} maps (not colour or instance maps)")
    for path, reason in summary["failures"][:20]:
        print(f"  FAILED {path}: {reason}")
    if len(summary["failures"]) > 20:
        print(f"  ... and {len(summary['failures']) - 20} more failures")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Write Cityscapes *_gtFine_labelTrainIds.png (19 classes, 255 ignore) "
        "from the official *_gtFine_labelIds.png maps.")
    parser.add_argument("root", help="Cityscapes folder holding leftImg8bit/ and gtFine/")
    parser.add_argument("--splits", nargs="+", default=list(CITYSCAPES_SPLITS),
                        choices=list(CITYSCAPES_SPLITS), help="splits to convert (default all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite *_labelTrainIds.png maps that already exist")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads decoding and writing PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    root = os.path.abspath(os.path.expanduser(args.root))
    gt_dir = os.path.join(root, "gtFine")
    if not os.path.isdir(gt_dir):
        what = (f"no gtFine/ folder in {root}" if os.path.isdir(root)
                else f"folder not found: {root}")
        print(f"prepare_cityscapes: {what}. "
              "Fix: unpack gtFine_trainvaltest.zip into the Cityscapes folder and pass that "
              "folder (the one holding gtFine/ and leftImg8bit/)", file=sys.stderr)
        return 2
    summary = prepare(root, args.splits, overwrite=args.overwrite, workers=args.workers,
                      progress=not args.quiet)
    if not any(summary[k][s] for k in ("converted", "skipped", "failed") for s in args.splits):
        print(f"prepare_cityscapes: no *{LABEL_ID_SUFFIX} files under "
              f"{', '.join(os.path.join(gt_dir, s) for s in args.splits)}. Fix: check that "
              "gtFine_trainvaltest.zip is fully unpacked", file=sys.stderr)
        return 2
    print_summary(root, summary)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
