#!/usr/bin/env python
"""Convert a Hugging Face SegFormer / MiT checkpoint into kseg ``.weights.h5``.

Usage (from the repository root, or anywhere with kseg importable)::

    python tools/convert_weights.py SRC DST.weights.h5 --variant segformer_mit_b0 \
        [--num-classes K] [--skip-classifier] [--non-strict]

SRC: a HF model folder (``model.safetensors`` or ``pytorch_model.bin``, e.g. a local
snapshot of ``nvidia/segformer-b0-finetuned-ade-512-512`` or ``nvidia/mit-b0``), or one
``.safetensors`` / ``.bin`` file, in the original Hub layout or transformers 5.x's.

The model is ``kseg.build_model(VARIANT, num_classes=K)``. K defaults to the size of
the checkpoint's ``decode_head.classifier``; for encoder-only checkpoints (``nvidia/mit-b*``)
it defaults to 150 (ADE20K) and the decode head stays freshly initialised. An explicit
``--num-classes`` that differs from the checkpoint's classifier is an error unless
``--skip-classifier`` is given, which loads everything but the classifier (fine-tuning on
a new label set). DST is written with ``model.save_weights`` and must end in
``.weights.h5``; load it with ``kseg.build_model(VARIANT, num_classes=K).load_weights(DST)``.

Exit status: 0 on success, 2 on a usage error or a checkpoint that does not fit
(message on stderr names the key, both shapes and the likely cause).
"""

import argparse
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENCODER_ONLY_DEFAULT_CLASSES = 150  # ADE20K, the paper's main benchmark


def _import_kseg():
    try:
        import kseg  # noqa: F401
    except ImportError:
        sys.path.insert(0, _REPO_ROOT)
        import kseg  # noqa: F401


def build_parser():
    p = argparse.ArgumentParser(
        prog="convert_weights.py",
        description="Convert a Hugging Face SegFormer/MiT checkpoint to kseg .weights.h5.",
    )
    p.add_argument("src", help="HF model folder, or a .safetensors / .bin file")
    p.add_argument("dst", help="output path ending in .weights.h5")
    p.add_argument("--variant", required=True, help="kseg variant id, e.g. segformer_mit_b0")
    p.add_argument(
        "--num-classes", type=int, default=None,
        help="classes of the kseg model (default: the checkpoint's classifier size, or "
        f"{ENCODER_ONLY_DEFAULT_CLASSES} for encoder-only checkpoints)",
    )
    p.add_argument(
        "--skip-classifier", action="store_true",
        help="do not load decode_head.classifier (keep a fresh one, for fine-tuning on new classes)",
    )
    p.add_argument(
        "--non-strict", action="store_true",
        help="load the matching keys even if some are unexpected or missing (shapes must still match)",
    )
    return p


def convert(src, dst, variant, num_classes=None, skip_classifier=False, strict=True, log=print):
    """Builds ``variant``, loads ``src`` into it, saves ``dst``; returns ``(model, report)``.

    Raises: ValueError for a DST without ``.weights.h5``, a ``num_classes`` differing from
    the checkpoint's classifier without ``skip_classifier``, or a checkpoint that does not
    fit the variant; FileNotFoundError for a missing SRC; KeyError for an unknown variant.
    """
    _import_kseg()
    import kseg
    from kseg.convert import describe_checkpoint, load_hf_segformer, read_state_dict

    if not str(dst).endswith(".weights.h5"):
        raise ValueError(f"DST {dst!r} must end in .weights.h5 (Keras save_weights format)")
    if not variant.startswith("segformer_"):
        raise ValueError(f"--variant {variant!r}: this converter handles Hugging Face SegFormer "
                         "checkpoints only (variants segformer_mit_b0..b5)")
    state = read_state_dict(src)
    info = describe_checkpoint(state)
    ckpt_classes = info["num_classes"]
    if num_classes is None:
        num_classes = ckpt_classes if ckpt_classes is not None else ENCODER_ONLY_DEFAULT_CLASSES
    elif ckpt_classes is not None and num_classes != ckpt_classes and not skip_classifier:
        raise ValueError(
            f"--num-classes {num_classes} differs from the checkpoint's classifier "
            f"(decode_head.classifier.weight has {ckpt_classes} classes): drop --num-classes to "
            f"keep the checkpoint's classes, or add --skip-classifier to load everything else "
            f"and fine-tune a fresh {num_classes}-class classifier"
        )

    model = kseg.build_model(variant, num_classes=num_classes)
    report = load_hf_segformer(model, state, strict=strict, skip_classifier=skip_classifier)
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    model.save_weights(dst)

    log(f"source: {src}")
    head = ("encoder-only (no decode head)" if info["encoder_only"]
            else f"decoder dim {info['decoder_dim']}, {ckpt_classes} classes")
    log(f"checkpoint: hidden sizes {info['hidden_sizes']}, depths {info['depths']}, {head}")
    log(f"model: {variant}, num_classes={num_classes}")
    log(report.summary())
    log(f"saved: {dst}")
    return model, report


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        convert(args.src, args.dst, args.variant, args.num_classes,
                skip_classifier=args.skip_classifier, strict=not args.non_strict)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as err:
        print(f"convert_weights.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
