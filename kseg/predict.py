"""``python -m kseg.predict --recipe R --checkpoint C --input IMAGE_OR_DIR --output DIR``.

Writes, for every input image NAME.ext, ``DIR/NAME.png`` (the label map, palette PNG:
pixel value = class id, shown in the dataset's colours) and ``DIR/NAME_overlay.png``
(the prediction blended over the image).
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
    p.add_argument("--recipe", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--output", required=True, help="folder for label PNGs and overlays")
    p.add_argument("--mode", choices=["whole", "slide", "ms_flip"], help="default: the recipe's eval.mode")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from kseg.config import load_recipe

    recipe = load_recipe(args.recipe, list(args.set) + ([f"eval.mode={args.mode}"] if args.mode else []))
    files = list_images(args.input)

    from kseg.data import get_dataset, load_image
    from kseg.inference import inference_kwargs, overlay, predict_labels, save_png
    from kseg.models import build_from_recipe
    from kseg.utils.progress import track

    # Only the class names and palette are needed: skip checking the split's files.
    info = get_dataset(recipe.data.dataset, root=recipe.data.root, split=recipe.data.val_split,
                       reduce_zero_label=recipe.data.reduce_zero_label, folder_spec=recipe.data.folder_spec,
                       check=False)
    model = build_from_recipe(recipe, checkpoint=args.checkpoint)
    kwargs = inference_kwargs(recipe.eval)
    os.makedirs(args.output, exist_ok=True)
    for path in track(files, "predicting", unit="images"):
        image = load_image(path)
        labels = predict_labels(model, image[None].astype("float32"), **kwargs)[0].numpy()
        stem = os.path.splitext(os.path.basename(path))[0]
        save_png(labels.astype("uint8"), os.path.join(args.output, f"{stem}.png"), palette=info.palette)
        save_png(overlay(image, labels, info.palette, alpha=args.alpha),
                 os.path.join(args.output, f"{stem}_overlay.png"))
    print(f"wrote {len(files)} label maps and overlays to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
