#!/usr/bin/env python3
"""Segment images with a kseg TFLite model, using ai-edge-litert, numpy and pillow only.

No TensorFlow and no kseg are needed: this is the reference for what an app does with
the exported file.

    python export/tflite_predict.py MODEL.tflite IMAGE_OR_DIR [--output DIR] [--threads N]

For every image NAME.ext it writes, at the image's original size:

- ``DIR/NAME.png``: the label map as a palette PNG (pixel value = class index, shown in
  the class colours; 255 = ignore, black);
- ``DIR/NAME_overlay.png``: the colours blended over the image.

Steps per image: decode (RGB) -> resize the whole image to the model's input size
(bilinear; the aspect ratio is not kept, as in the export's verification) -> run the
``serving_default`` signature on uint8 pixels (normalisation is inside the model) ->
``labels`` [1, H, W] -> resize to the original size (nearest) -> PNGs.

Class names and palette come from the sidecar ``MODEL.json`` that ``python -m
kseg.export`` writes beside ``MODEL.tflite``; without it, names are ``class_<i>`` and the
palette is generated (with a warning).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SIGNATURE = "serving_default"


def list_images(path):
    """Image files of a file or folder (sorted). Raises FileNotFoundError."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such image file or folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def generated_palette(num_classes):
    """PASCAL VOC bit-interleaved colours from index 1 (no class is black): uint8 [K, 3]."""
    out = np.zeros((num_classes, 3), np.uint8)
    for k in range(num_classes):
        c, rgb = k + 1, [0, 0, 0]
        for bit in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - bit)
            c >>= 3
        out[k] = rgb
    return out


def load_metadata(model_path):
    """The sidecar JSON of ``model_path`` (``x.tflite`` -> ``x.json``), or None."""
    path = os.path.splitext(model_path)[0] + ".json"
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


class Segmenter:
    """A kseg ``.tflite`` in ai-edge-litert's Interpreter.

    ``segment(image)``: uint8 [H, W, 3] RGB, any size -> int32 [H, W] class indices.

    Raises:
      FileNotFoundError: missing model. ValueError: no ``serving_default`` signature with
      an ``images`` input and a ``labels`` output (not a kseg export).
    """

    def __init__(self, model_path, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"model {model_path} does not exist")
        self.interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        sigs = self.interpreter.get_signature_list()
        sig = sigs.get(SIGNATURE, {})
        if "images" not in sig.get("inputs", []) or "labels" not in sig.get("outputs", []):
            raise ValueError(f"{model_path} is not a kseg segmentation export (signatures "
                             f"{sigs}); export it with python -m kseg.export --format tflite")
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        spec = self.runner.get_input_details()["images"]
        self.height, self.width = int(spec["shape"][1]), int(spec["shape"][2])
        self.input_dtype = np.dtype(spec["dtype"])
        out = self.runner.get_output_details()
        self.num_classes = int(out["logits"]["shape"][-1]) if "logits" in out else None

    def segment(self, image):
        h, w = image.shape[:2]
        x = np.asarray(Image.fromarray(image).resize((self.width, self.height), Image.BILINEAR))
        labels = self.runner(images=x[None].astype(self.input_dtype))["labels"][0]
        label_img = Image.fromarray(labels.astype(np.uint8))
        return np.asarray(label_img.resize((w, h), Image.NEAREST)).astype(np.int32)


def overlay(image, labels, palette, alpha=0.5, ignore_index=255):
    """uint8 [H, W, 3]: ``(1 - alpha) * image + alpha * colour``; ignored pixels unchanged."""
    lut = np.zeros((256, 3), np.float32)
    lut[: len(palette)] = palette
    blend = (1 - alpha) * image.astype(np.float32) + alpha * lut[labels]
    blend = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    ignored = labels == ignore_index
    blend[ignored] = image[ignored]
    return blend


def save_label_png(labels, palette, path):
    """Palette PNG: indices kept, class colours in the palette, 255 black."""
    img = Image.fromarray(labels.astype(np.uint8))  # mode "L"
    pal = np.zeros((256, 3), np.uint8)
    pal[: min(len(palette), 255)] = palette[:255]
    img.putpalette(pal.flatten().tolist())
    img.save(path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a .tflite written by python -m kseg.export")
    p.add_argument("input", help="an image or a folder of images")
    p.add_argument("--output", default="predictions",
                   help="folder for label PNGs and overlays (default: ./predictions)")
    p.add_argument("--threads", type=int, help="interpreter threads (default: the export's, or 2)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the colours")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        files = list_images(args.input)
        meta = load_metadata(args.model) or {}
        threads = args.threads or int(meta.get("threads", 2))
        seg = Segmenter(args.model, num_threads=threads)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if meta:
        classes, palette = meta["classes"], np.asarray(meta["palette"], np.uint8)
    else:
        k = seg.num_classes or 256
        print(f"warning: no {os.path.splitext(args.model)[0]}.json beside the model; using "
              "generated colours and class_<i> names", file=sys.stderr)
        classes, palette = [f"class_{i}" for i in range(k)], generated_palette(k)
    os.makedirs(args.output, exist_ok=True)
    print(f"{args.model}: input {seg.height}x{seg.width} {seg.input_dtype}, {len(classes)} "
          f"classes, {threads} threads")
    for path in files:
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except Exception as e:  # a corrupt image: report it, go on with the others
            print(f"error: cannot read {path}: {e}", file=sys.stderr)
            continue
        t = time.perf_counter()
        labels = seg.segment(image)
        ms = 1e3 * (time.perf_counter() - t)
        stem = os.path.splitext(os.path.basename(path))[0]
        save_label_png(labels, palette, os.path.join(args.output, f"{stem}.png"))
        Image.fromarray(overlay(image, labels, palette, args.alpha)).save(
            os.path.join(args.output, f"{stem}_overlay.png"))
        ids, counts = np.unique(labels, return_counts=True)
        top = sorted(zip(counts, ids), reverse=True)[:3]
        shares = ", ".join(f"{classes[i] if i < len(classes) else i} {100 * c / labels.size:.0f}%"
                           for c, i in top)
        print(f"{path}: {image.shape[1]}x{image.shape[0]}, {ms:.0f} ms: {shares}")
    print(f"wrote label maps and overlays to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
