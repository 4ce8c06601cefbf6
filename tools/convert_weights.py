#!/usr/bin/env python
"""Convert a foreign checkpoint of any kseg family into kseg ``.weights.h5`` (+ a JSON sidecar).

Usage (from the repository root, or anywhere with kseg importable)::

    python tools/convert_weights.py SRC DST.weights.h5 [--variant VARIANT] \
        [--num-classes K] [--skip-classifier] [--non-strict]

SRC is anything ``kseg.from_pretrained`` takes: a local file or folder, a preset name
(``python -c "import kseg.pretrained as p; print(p.list_presets())"``), a Hugging Face repo id
or an http(s) URL. Its family and layout are recognised from the keys, or from ``--variant``
(needed for an encoder-only checkpoint such as an ImageNet ViT); the converter registered for
the family does the mapping:

==========  =====================================================================
family      accepted SRC layouts
==========  =====================================================================
segformer   Hugging Face SegFormer / MiT (Hub or transformers 5.x layout)
segmenter   authors' ``checkpoint.pth`` (rstrudel/segmenter), MMSegmentation; a bare ViT/DeiT
setr        authors' (fudan-zvg/SETR) or MMSegmentation SETR; a bare ViT
segvit      authors' SegViT (zbwxp/SegVit) ``.pth``
maskformer  transformers ``MaskFormerForInstanceSegmentation``, detectron2 ``.pkl`` / ``.pth``
==========  =====================================================================

The model is the variant built with the settings the checkpoint implies (its position grid,
LayerNorm epsilon, normalisation, widths), which the sidecar ``DST.json`` records with the
class names and palette; ``kseg.from_pretrained("DST.weights.h5")`` rebuilds it. K defaults
to the checkpoint's class count (150 for encoder-only checkpoints, whose decoder stays
freshly initialised); a different ``--num-classes`` needs ``--skip-classifier``, which loads
everything but the class-dependent weights.

Exit status: 0 on success, 2 on a usage error or a checkpoint that does not fit (message on
stderr names the key, both shapes and the likely cause / fix).
"""

import argparse
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("segformer", "segmenter", "setr", "segvit", "maskformer")  # kseg.convert.list_converters()


def _import_kseg():
    # The kseg beside this tool first (a checkout may differ from an installed kseg).
    if os.path.isdir(os.path.join(_REPO_ROOT, "kseg")) and _REPO_ROOT not in sys.path:
        sys.path.insert(0, _REPO_ROOT)
    import kseg  # noqa: F401


def build_parser():
    p = argparse.ArgumentParser(prog="convert_weights.py",
                                description="Convert a checkpoint of any kseg family to kseg .weights.h5.")
    p.add_argument("src", help="a checkpoint file or folder, a preset name, a Hugging Face repo id or a URL")
    p.add_argument("dst", help="output path ending in .weights.h5 (a .json sidecar is written beside it)")
    p.add_argument("--variant", help="kseg variant id, e.g. segformer_mit_b0, segmenter_vit_b16_mask, setr_pup_vit_l16, "
                                     "segvit_vit_l16, maskformer_swin_b (default: recognised from the checkpoint)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the kseg model (default: the checkpoint's classifier size, or 150 for "
                        "encoder-only checkpoints)")
    p.add_argument("--skip-classifier", action="store_true",
                   help="do not load the class-dependent weights (keep fresh ones, for fine-tuning on new classes)")
    p.add_argument("--non-strict", action="store_true",
                   help="load the matching keys even if some are unexpected or missing (shapes must still match)")
    return p


def convert(src, dst, variant=None, num_classes=None, skip_classifier=False, strict=True, log=print):
    """Converts ``src`` into ``variant``, saves ``dst`` and its sidecar; returns ``(model, report)``.

    Raises: ValueError for a DST without ``.weights.h5``, a class count differing from the
    checkpoint's without ``skip_classifier``, or a checkpoint that does not fit; KeyError for
    an unknown variant; FileNotFoundError for a missing SRC (see ``kseg.from_pretrained``).
    """
    _import_kseg()
    from kseg.models.registry import variant_spec
    from kseg.pretrained.api import convert_checkpoint
    from kseg.pretrained.cache import save, sidecar_of

    if not str(dst).endswith(".weights.h5"):
        raise ValueError(f"DST {dst!r} must end in .weights.h5 (Keras save_weights format)")
    if variant:
        variant_spec(variant)  # KeyError listing the registered variants
    try:
        model, meta, report = convert_checkpoint(src, variant=variant, num_classes=num_classes, strict=strict,
                                                 skip_classifier=skip_classifier, log=log)
    except ValueError as err:
        if str(err).startswith("num_classes "):  # the option's name in this tool
            raise ValueError("--num-classes " + str(err)[len("num_classes "):]) from err
        raise
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save(model, meta, str(dst))
    config = ", ".join(f"{k}={v}" for k, v in meta["config"].items())
    log(f"source: {src}")
    log(f"checkpoint: {meta['checkpoint']}")
    log(f"model: {meta['variant']}, num_classes={meta['num_classes']}" + (f" ({config})" if config else ""))
    log(report.summary())
    log(f"saved: {dst} (+ {sidecar_of(str(dst))}); load with kseg.from_pretrained({str(dst)!r})")
    return model, report


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        convert(args.src, args.dst, args.variant, args.num_classes, skip_classifier=args.skip_classifier,
                strict=not args.non_strict)
    except (ValueError, KeyError, TypeError, OSError, ImportError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"convert_weights.py: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
