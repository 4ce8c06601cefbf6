#!/usr/bin/env python
"""A PNG grid of what a recipe's training pipeline feeds the model: augmented crops with
their labels.

Usage (from the repository root)::

    python tools/browse_dataset.py --recipe recipes/segformer_mit_b0_camvid.yaml --output browse.png
    python tools/browse_dataset.py --recipe R --num 12 --cols 3 --seed 1 --output browse.png
    python tools/browse_dataset.py --recipe R --split val --no-augment --output val.png

Each sample is two panels: the crop as the model receives it (after random resize, crop
with ``cat_max_ratio``, flip, photometric distortion and padding) and its label map in the
dataset's palette, with ``ignore_index`` (255: void and padding) in black. Sizes are
W x H; each label panel's title gives the number of classes it holds and the ignored
share; a legend lists every class with its colour. mmseg's ``tools/analysis_tools/browse_dataset.py`` does the same for its
pipelines.
"""

import argparse
import dataclasses
import math
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="recipe YAML whose data section builds the pipeline")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe field (repeatable), e.g. --set data.crop_size=[256,256]")
    p.add_argument("--split", help="split to read (default: the recipe's data.train_split)")
    p.add_argument("--num", type=int, default=8, help="number of samples (default 8)")
    p.add_argument("--cols", type=int, default=4, help="samples per row (default 4)")
    p.add_argument("--seed", type=int, default=0, help="shuffling and augmentation seed (default 0)")
    p.add_argument("--no-augment", action="store_true",
                   help="whole images in split order, as evaluation reads them")
    p.add_argument("--output", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    if args.num < 1 or args.cols < 1:
        p.error(f"--num and --cols must be >= 1, got {args.num} and {args.cols}")
    if not args.output.lower().endswith(".png"):
        p.error(f"--output {args.output}: the grid is written as PNG; name it *.png")
    return args


def read_samples(recipe, split, num, seed, augment):
    """``num`` pairs (image uint8 [H, W, 3], label int32 [H, W]) from the pipeline, and the
    dataset's :class:`kseg.data.DatasetInfo`."""
    import numpy as np

    from kseg.data import build_dataset, get_dataset

    # Without the in-memory cache only the shown images are decoded (the cache's shuffle
    # buffer would decode most of the split first); the augmentation is the same.
    d = dataclasses.replace(recipe.data, cache=False)
    info = get_dataset(d.dataset, root=d.root, split=split, reduce_zero_label=d.reduce_zero_label,
                       folder_spec=d.folder_spec, skip_bad_samples=d.skip_bad_samples)
    ds = build_dataset(d, split=split, training=augment, batch_size=1, seed=seed, info=info)
    samples = [(np.clip(np.rint(image[0].numpy()), 0, 255).astype(np.uint8), label[0].numpy())
               for image, label, *_ in ds.take(num)]
    return samples, info


def draw_grid(samples, class_names, palette, cols, title, ignore_index=255):
    """A matplotlib figure: per sample an image panel and a label panel, then a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    from kseg.data import colorize

    cols = min(cols, len(samples))
    rows = math.ceil(len(samples) / cols)
    legend_rows = math.ceil((len(class_names) + 1) / 6)
    legend_in = 0.25 * legend_rows + 0.2
    height = 2.7 * 2 * rows + 0.5 + legend_in
    fig, axes = plt.subplots(2 * rows, cols, figsize=(3.2 * cols, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, label) in enumerate(samples):
        r, c = divmod(i, cols)
        present = [int(v) for v in np.unique(label) if v != ignore_index]
        ignored = float(np.mean(label == ignore_index)) * 100
        axes[2 * r, c].imshow(image)
        axes[2 * r, c].set_title(f"#{i}  {image.shape[1]}x{image.shape[0]}", fontsize=9)
        axes[2 * r + 1, c].imshow(colorize(label, palette, ignore_index), interpolation="nearest")
        axes[2 * r + 1, c].set_title(f"{len(present)} classes, {ignored:.0f}% ignored", fontsize=8)
    handles = [Patch(facecolor=np.asarray(palette[k]) / 255.0, edgecolor="grey", label=name)
               for k, name in enumerate(class_names)]
    handles.append(Patch(facecolor="black", edgecolor="grey", label=f"ignore ({ignore_index})"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1 - 0.4 / height))
    return fig


def main(argv=None):
    args = parse_args(argv)
    from kseg.config import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    split = args.split or recipe.data.train_split
    augment = not args.no_augment
    samples, info = read_samples(recipe, split, args.num, args.seed, augment)
    d = recipe.data
    what = (f"crop {d.crop_size[1]}x{d.crop_size[0]}, scale {d.scale[0]}x{d.scale[1]} x "
            f"{d.ratio_range[0]}-{d.ratio_range[1]}, seed {args.seed}" if augment else "whole images")
    title = f"{os.path.basename(args.recipe)}: {info.name}/{split}, {what}"
    fig = draw_grid(samples, info.classes, info.palette, args.cols, title)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}: {len(samples)} samples of {info.name}/{split} ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
