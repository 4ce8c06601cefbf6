#!/usr/bin/env python
"""FLOPs (multiply-accumulates) and parameters of a kseg model variant.

Usage (from the repository root)::

    python tools/get_flops.py --variant segformer_mit_b0 --size 512 512
    python tools/get_flops.py --variant segformer_mit_b5 --size 640 640 --by-layer --depth 3
    python tools/get_flops.py --variant segmenter_vit_b16_mask --size 512 512 --json out.json
    python tools/get_flops.py --list

One FLOP = one multiply-add, counted on the contraction ops (matmuls incl. attention,
einsums, convolutions) of ``model(images, training=False)`` traced at batch 1 and the
given size, as the papers' tables do (mmcv + attention for SegFormer, fvcore for SegViT);
see :mod:`kseg.utils.flops` for the convention and its sources. The graph is traced, not
run, so even the largest variants take seconds.

``--formulation paper`` (default) counts layers that run an optimised but equivalent form
of their paper's formula (SegFormer's All-MLP decoder) as the paper writes them, and the
semantic inference of mask-classification models (SegViT, MaskFormer) at the input
resolution as the authors' code runs it, which is what the tables count; the tool then
also prints what kseg actually executes when that differs.
"""

import argparse
import json
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
    p.add_argument("--variant", help="a registered variant id (see --list)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(512, 512),
                   help="input height and width (default 512 512)")
    p.add_argument("--num-classes", type=int, default=150, help="K (default 150, ADE20K)")
    p.add_argument("--formulation", choices=("paper", "executed"), default="paper",
                   help="paper: layers' reference (paper) form; executed: what call() runs")
    p.add_argument("--by-layer", action="store_true", help="print a per-layer breakdown")
    p.add_argument("--depth", type=int, default=2, help="layer-path depth of --by-layer (default 2)")
    p.add_argument("--json", metavar="OUT", help="also write the numbers to this JSON file")
    p.add_argument("--list", action="store_true", help="list the registered variants and exit")
    args = p.parse_args(argv)
    if not args.list and not args.variant:
        p.error("--variant is required (or --list)")
    if min(args.size) < 1 or args.num_classes < 1:
        p.error(f"--size and --num-classes must be positive, got {args.size} and {args.num_classes}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import kseg
    from kseg.utils.flops import count_flops

    if args.list:
        print("\n".join(kseg.models.list_variants()))
        return None
    if args.variant not in kseg.models.list_variants():
        raise SystemExit(f"get_flops: unknown model variant {args.variant!r}. Registered variants: "
                         f"{', '.join(kseg.models.list_variants())} (--list)")
    model = kseg.models.build_model(args.variant, num_classes=args.num_classes)
    h, w = args.size
    report = count_flops(model, (h, w, 3), formulation=args.formulation)
    print(report.summary(by_layer=args.by_layer, depth=args.depth))
    executed = None
    if args.formulation == "paper":
        executed = count_flops(model, (h, w, 3), formulation="executed")
        if executed.macs != report.macs:
            why = [f"{name} in its optimised, equivalent form" for name in report.reference_layers]
            if "semantic_inference" in report.by_layer(1):
                why.append("semantic inference at the mask stride")
            print(f"executed     {executed.gflops:.2f} GFLOPs as kseg runs it "
                  f"({'; '.join(why) or 'see --formulation'})")
    if args.json:
        data = report.as_dict(args.depth)
        data["variant"], data["num_classes"] = args.variant, args.num_classes
        if executed is not None:
            data["executed_gflops"] = executed.gflops
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
    return report


if __name__ == "__main__":
    main()
