"""``python -m kseg.predict --recipe R --checkpoint C --input IMAGE_OR_DIR --output DIR``,
or ``python -m kseg.predict --pretrained NAME --input IMAGE_OR_DIR --output DIR``.

Writes, for every input image NAME.ext, ``DIR/NAME.png`` (the label map, palette PNG:
pixel value = class id, shown in the dataset's colours) and ``DIR/NAME_overlay.png``
(the prediction blended over the image).

``--pretrained`` takes anything ``kseg.from_pretrained`` does (a preset such as
``segformer_b0_ade20k_512``, a Hub id, a URL, a converted ``.weights.h5``): the class names and
palette come with the weights, so no recipe or dataset folder is needed (whole-image
inference at the input size unless ``--mode`` / ``--set eval.*`` say otherwise). With
``--recipe`` too, the recipe's model and eval settings apply and ``--pretrained`` replaces
``model.pretrained``.
"""

import argparse
import os
import sys

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path):
    """Image files under ``path`` (a file or a folder, sorted). Raises FileNotFoundError."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"--input {path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m kseg.predict", description=__doc__.split("\n\n")[1])
    p.add_argument("--recipe", help="the recipe of --checkpoint (optional with --pretrained)")
    p.add_argument("--checkpoint", help=".weights.h5 written by kseg.train")
    p.add_argument("--pretrained", help="preset name, Hub id, URL or checkpoint path (see kseg.from_pretrained)")
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="folder for label PNGs and overlays")
    p.add_argument("--mode", choices=["whole", "slide", "ms_flip"], help="default: the recipe's eval.mode")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return p.parse_args(argv)


def load_model(args):
    """``(model, recipe, palette)`` for the arguments (see the module docstring).

    Raises: ValueError when neither ``--pretrained`` nor ``--recipe`` with ``--checkpoint`` is
    given; the recipe / checkpoint / pretrained errors (RecipeError, FileNotFoundError, ...).
    """
    import dataclasses

    from kseg.config import EvalConfig, Recipe, apply_overrides, load_recipe
    from kseg.models import build_from_recipe

    sets = list(args.set) + ([f"eval.mode={args.mode}"] if args.mode else [])
    if args.recipe:
        recipe = load_recipe(args.recipe, sets)
        if args.pretrained:
            recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, pretrained=args.pretrained))
        elif not args.checkpoint:
            raise ValueError("--recipe needs --checkpoint (the .weights.h5 kseg.train wrote) or --pretrained NAME")
        model = build_from_recipe(recipe, checkpoint=args.checkpoint if not args.pretrained else None)
    elif args.pretrained:
        import kseg

        if args.checkpoint:
            raise ValueError("--checkpoint needs the --recipe it was trained with; --pretrained alone needs neither")
        model = kseg.from_pretrained(args.pretrained)
        recipe = apply_overrides(Recipe(eval=EvalConfig(mode="whole", scale=None)), sets)
    else:
        raise ValueError("name the model: --pretrained NAME (a preset, Hub id, URL or checkpoint), or --recipe R "
                         "--checkpoint C")
    info = getattr(model, "pretrained_info", None)
    if info and info.get("num_classes") == model.num_classes and (args.pretrained or not args.recipe):
        return model, recipe, info["palette"]
    from kseg.data import get_dataset

    # Only the class names and palette are needed: skip checking the split's files.
    data = get_dataset(recipe.data.dataset, root=recipe.data.root, split=recipe.data.val_split,
                       reduce_zero_label=recipe.data.reduce_zero_label, folder_spec=recipe.data.folder_spec,
                       check=False)
    return model, recipe, data.palette


def main(argv=None):
    args = parse_args(argv)
    files = list_images(args.input)
    model, recipe, palette = load_model(args)

    import numpy as np

    from kseg.data import load_image
    from kseg.inference import inference_kwargs, overlay, predict_images, save_png
    from kseg.utils.progress import track

    palette = np.asarray(palette, np.uint8)
    kwargs = inference_kwargs(recipe.eval)
    os.makedirs(args.output, exist_ok=True)
    for path in track(files, "predicting", unit="images"):
        image = load_image(path)
        labels = predict_images(model, image, **kwargs)  # one compiled graph for every size
        stem = os.path.splitext(os.path.basename(path))[0]
        save_png(labels.astype("uint8"), os.path.join(args.output, f"{stem}.png"), palette=palette)
        save_png(overlay(image, labels, palette, alpha=args.alpha), os.path.join(args.output, f"{stem}_overlay.png"))
    print(f"wrote {len(files)} label maps and overlays to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
