#!/usr/bin/env python
"""Convert a foreign checkpoint (SegFormer, Segmenter, SETR, SegViT) into kseg ``.weights.h5``.

Usage (from the repository root, or anywhere with kseg importable)::

    python tools/convert_weights.py SRC DST.weights.h5 --variant VARIANT \
        [--num-classes K] [--skip-classifier] [--non-strict]

The converter is chosen by the variant's family (the id's first word); the checkpoint's
layout is recognised from its keys:

==========  ===================================================  =================================
family      accepted SRC layouts                                 converter
==========  ===================================================  =================================
segformer   Hugging Face SegFormer / MiT (Hub or transformers    ``kseg.convert.load_hf_segformer``
            5.x layout), e.g. ``nvidia/segformer-b0-finetuned-
            ade-512-512`` or the encoder-only ``nvidia/mit-b0``
segmenter   authors' ``checkpoint.pth`` (rstrudel/segmenter),    ``kseg.convert.load_segmenter``
            MMSegmentation 1.x Segmenter; or a bare ViT/DeiT
            (timm, HF, Google ``.npz``, mmseg backbone) into
            the encoder, decoder left fresh
setr        authors' (fudan-zvg/SETR) or MMSegmentation 1.x      ``kseg.convert.load_setr``
            SETR; or a bare ViT into the encoder
segvit      authors' SegViT (zbwxp/SegVit) ``.pth``              ``kseg.convert.segvit.load_segvit``
==========  ===================================================  =================================

SRC: a model folder (``model.safetensors`` or ``pytorch_model.bin``), or one
``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` file (``.npz`` for Google ViT weights).
Training checkpoints wrapping the weights in ``state_dict`` / ``model`` are unwrapped.

The model is ``kseg.build_model(VARIANT, num_classes=K)``. K defaults to the checkpoint's
class count (read off its classifier); for encoder-only checkpoints it defaults to 150
(ADE20K) and the decoder stays freshly initialised. An explicit ``--num-classes`` that differs
from the checkpoint's is an error unless ``--skip-classifier`` is given, which loads
everything but the class-dependent weights (fine-tuning on a new label set; not available
for SegViT, whose class embeddings are in every decoder layer). DST is written with
``model.save_weights`` and must end in ``.weights.h5``; load it with
``kseg.build_model(VARIANT, num_classes=K).load_weights(DST)``.

Exit status: 0 on success, 2 on a usage error or a checkpoint that does not fit
(message on stderr names the key, both shapes and the likely cause / fix).
"""

import argparse
import os
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENCODER_ONLY_DEFAULT_CLASSES = 150  # ADE20K, the papers' main benchmark
FAMILIES = ("segformer", "segmenter", "setr", "segvit")


def _import_kseg():
    try:
        import kseg  # noqa: F401
    except ImportError:
        sys.path.insert(0, _REPO_ROOT)
        import kseg  # noqa: F401


def build_parser():
    p = argparse.ArgumentParser(
        prog="convert_weights.py",
        description="Convert a SegFormer / Segmenter / SETR / SegViT checkpoint to kseg .weights.h5.",
    )
    p.add_argument("src", help="model folder, or a .safetensors / .bin / .pth / .npz file")
    p.add_argument("dst", help="output path ending in .weights.h5")
    p.add_argument("--variant", required=True,
                   help="kseg variant id, e.g. segformer_mit_b0, segmenter_vit_b16_mask, setr_pup_vit_l16, "
                        "segvit_vit_l16")
    p.add_argument(
        "--num-classes", type=int, default=None,
        help="classes of the kseg model (default: the checkpoint's classifier size, or "
        f"{ENCODER_ONLY_DEFAULT_CLASSES} for encoder-only checkpoints)",
    )
    p.add_argument(
        "--skip-classifier", action="store_true",
        help="do not load the class-dependent weights (keep fresh ones, for fine-tuning on new classes)",
    )
    p.add_argument(
        "--non-strict", action="store_true",
        help="load the matching keys even if some are unexpected or missing (shapes must still match)",
    )
    return p


# --------------------------------------------------------------------------- per family


def _segformer(state):
    from kseg.convert import describe_checkpoint, load_hf_segformer

    info = describe_checkpoint(state)
    head = ("encoder-only (no decode head)" if info["encoder_only"]
            else f"decoder dim {info['decoder_dim']}, {info['num_classes']} classes")
    desc = f"hidden sizes {info['hidden_sizes']}, depths {info['depths']}, {head}"

    def load(model, strict, skip_classifier):
        return load_hf_segformer(model, state, strict=strict, skip_classifier=skip_classifier)

    return info["num_classes"], desc, load


def _segmenter(state):
    from kseg.convert.segmenter import describe_checkpoint, load_segmenter

    info = describe_checkpoint(state)
    desc = (f"{info['layout']} layout, encoder width {info['embed_dim']}, depth {info['depth']}, "
            + ("no decoder (encoder-only)" if info["decoder"] is None
               else f"{info['decoder']} decoder, {info['num_classes']} classes"))

    def load(model, strict, skip_classifier):
        return load_segmenter(model, state, strict=strict, skip_classifier=skip_classifier)

    return info["num_classes"], desc, load


def _setr(state):
    from kseg.convert.setr import describe_checkpoint, load_setr

    info = describe_checkpoint(state)
    desc = (f"{info['layout']} layout, "
            + ("no decoder (encoder-only)" if info["decoder"] is None
               else f"{info['decoder']} decoder, {info['num_classes']} classes, {info['num_aux']} auxiliary heads"))

    def load(model, strict, skip_classifier):
        return load_setr(model, state, strict=strict, skip_classifier=skip_classifier)

    return info["num_classes"], desc, load


def _segvit(state):
    import numpy as np

    from kseg.convert.segvit import load_segvit

    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    cls = next((state[k] for k in ("decode_head.class_embed.weight", "decode_head.atm.class_embed.weight")
                if k in state), None)
    num_classes = None if cls is None else int(np.shape(cls)[0]) - 1  # K + 1 rows (no-object class)
    shrunk = any(k.startswith("decode_head.atm.") for k in state)
    desc = (f"SegViT ({'Shrunk' if shrunk else 'cascade'}), "
            + (f"{num_classes} classes" if num_classes is not None else "no ATM head found"))

    def load(model, strict, skip_classifier):
        if skip_classifier:
            raise ValueError("--skip-classifier is not supported for segvit: its class embeddings feed every "
                             "decoder layer; build the variant with the checkpoint's --num-classes and fine-tune")
        return load_segvit(model, state, strict=strict)

    return num_classes, desc, load


_FAMILY_READERS = {"segformer": _segformer, "segmenter": _segmenter, "setr": _setr, "segvit": _segvit}


def _read(src, family):
    if family in ("segmenter", "setr"):
        from kseg.convert.vit import read_vit_checkpoint

        return read_vit_checkpoint(src)[0]  # also reads Google .npz ViT weights
    from kseg.convert import read_state_dict

    return read_state_dict(src)


def convert(src, dst, variant, num_classes=None, skip_classifier=False, strict=True, log=print):
    """Builds ``variant``, loads ``src`` into it, saves ``dst``; returns ``(model, report)``.

    Raises: ValueError for a DST without ``.weights.h5``, a family without a converter, a
    ``num_classes`` differing from the checkpoint's classifier without ``skip_classifier``, or a
    checkpoint that does not fit the variant; FileNotFoundError for a missing SRC; KeyError for
    an unknown variant.
    """
    _import_kseg()
    import kseg
    from kseg.models.registry import variant_spec

    if not str(dst).endswith(".weights.h5"):
        raise ValueError(f"DST {dst!r} must end in .weights.h5 (Keras save_weights format)")
    variant_spec(variant)  # KeyError listing the registered variants
    family = variant.split("_", 1)[0]
    if family not in _FAMILY_READERS:
        raise ValueError(f"--variant {variant!r}: no checkpoint converter for the {family!r} family; "
                         f"supported families: {', '.join(FAMILIES)}")
    state = _read(src, family)
    ckpt_classes, desc, load = _FAMILY_READERS[family](state)
    if num_classes is None:
        num_classes = ckpt_classes if ckpt_classes is not None else ENCODER_ONLY_DEFAULT_CLASSES
    elif ckpt_classes is not None and num_classes != ckpt_classes and not skip_classifier:
        raise ValueError(
            f"--num-classes {num_classes} differs from the checkpoint's classifier ({ckpt_classes} classes): "
            f"drop --num-classes to keep the checkpoint's classes, or add --skip-classifier to load "
            f"everything else and fine-tune a fresh {num_classes}-class classifier"
        )

    model = kseg.build_model(variant, num_classes=num_classes)
    report = load(model, strict, skip_classifier)
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    model.save_weights(dst)

    log(f"source: {src}")
    log(f"checkpoint: {desc}")
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
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"convert_weights.py: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
