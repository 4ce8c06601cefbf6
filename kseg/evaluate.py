"""``python -m kseg.evaluate --recipe R --checkpoint C [--mode whole|slide|ms_flip] [--split val]``.

Evaluates a checkpoint on whole images of a split the way the papers do: one int64
confusion matrix over the split; prints aAcc, mIoU, mAcc and a per-class IoU/Acc table
and writes them (with the matrix) as JSON.
"""

import argparse
import os
import sys

from kseg.config import load_recipe


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kseg.evaluate", description=__doc__.split("\n\n")[1])
    p.add_argument("--recipe", required=True)
    p.add_argument("--checkpoint", required=True, help=".weights.h5 written by kseg.train")
    p.add_argument("--mode", choices=["whole", "slide", "ms_flip"],
                   help="default: the recipe's eval.mode; ms_flip: multi-scale + flip (eval.ms_*)")
    p.add_argument("--split", help="default: the recipe's data.val_split")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--output", help="JSON path (default: beside the checkpoint)")
    p.add_argument("--max-images", type=int, help="evaluate only the first N images (quick look)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = list(args.set) + ([f"eval.mode={args.mode}"] if args.mode else [])
    recipe = load_recipe(args.recipe, overrides)
    split = args.split or recipe.data.val_split

    from kseg.data import build_dataset, get_dataset
    from kseg.inference import evaluate, save_results
    from kseg.metrics import format_table
    from kseg.models import build_from_recipe

    info = get_dataset(recipe.data.dataset, root=recipe.data.root, split=split,
                       reduce_zero_label=recipe.data.reduce_zero_label, folder_spec=recipe.data.folder_spec)
    dataset = build_dataset(recipe.data, split=split, training=False, batch_size=recipe.eval.batch_size)
    model = build_from_recipe(recipe, checkpoint=args.checkpoint)
    summary = evaluate(model, dataset, info.num_classes, recipe.eval, class_names=info.classes,
                       max_images=args.max_images)
    summary.update(checkpoint=os.path.abspath(args.checkpoint), split=split, mode=recipe.eval.mode)
    print(format_table(summary))
    print(f"{summary['num_images']} images in {summary['seconds']:.1f} s ({summary['images_per_second']:.2f} images/s)")
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.checkpoint)), f"eval_{split}_{recipe.eval.mode}.json"
    )
    save_results(summary, output)
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
