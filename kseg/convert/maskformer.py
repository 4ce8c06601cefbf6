"""The MaskFormer family's converter: transformers (:mod:`kseg.convert.hf_maskformer`) or
detectron2 (:mod:`kseg.convert.d2_maskformer`) checkpoints, Swin or ResNet backbones.

The layout is recognised from the keys (detectron2's ``sem_seg_head.*`` vs transformers'
``model.pixel_level_module.*``); :func:`describe_checkpoint` reads the backbone variant,
query count, widths, decoder depth, class count and (detectron2) the pixel statistics.
"""

import re

import numpy as np

from kseg.backbones.resnet import RESNET_VARIANTS
from kseg.backbones.swin import SWIN_VARIANTS
from kseg.convert import d2_maskformer, hf_maskformer, resnet, swin
from kseg.convert.loader import Converter, register_converter, strip_module

TM = hf_maskformer.TRANSFORMER_PREFIX
PD = hf_maskformer.PIXEL_DECODER_PREFIX


def is_detectron2(state):
    return any(re.match(r"(module\.)?sem_seg_head\.", k) for k in state)


def bind(model, state):
    """Binds either layout to a kseg ``MaskFormer`` (see the layout modules)."""
    return (d2_maskformer if is_detectron2(state) else hf_maskformer).bind(model, state)


def _hub_parts(state):
    """(heads in Hub names, backbone state without its prefix, extra facts)."""
    if is_detectron2(state):
        heads, backbone, _, _ = d2_maskformer.to_hub_keys(state)
        backbone = {k[len(d2_maskformer.D2_BACKBONE):]: v for k, v in backbone.items()}
        stats = {k: np.asarray(v).reshape(-1).tolist() for k, v in strip_module(state).items()
                 if k in ("pixel_mean", "pixel_std")}
        return heads, backbone, "detectron2", stats
    state, layout = hf_maskformer.normalize_keys(state)
    prefix = hf_maskformer.BACKBONE_PREFIX
    heads = {k: v for k, v in state.items() if not k.startswith(prefix)}
    return heads, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, f"transformers {layout}", {}


def _backbone_name(backbone):
    if any("relative_position_bias_table" in k or "attention.self" in k or "attn.qkv" in k for k in backbone):
        arch = swin.describe_checkpoint(swin.normalize_keys(backbone)[0])
        for name, row in SWIN_VARIANTS.items():
            if (row["embed_dim"], list(row["depths"]), row["window_size"]) == (
                    arch["embed_dim"], arch["depths"], arch["window_size"]):
                return name, arch
        return None, arch
    arch = resnet.describe_checkpoint(resnet.normalize_keys(backbone)[0])
    for name, row in RESNET_VARIANTS.items():
        if (list(row["depths"]), row["stem_type"]) == (arch["depths"], arch["stem_type"]):
            return name, arch
    return None, arch


def describe_checkpoint(state):
    """``layout``, ``backbone``, ``num_queries``, ``hidden_size``, ``decoder_layers``,
    ``num_classes`` and for the registry ``config`` (with detectron2's ``pixel_mean`` /
    ``pixel_std`` as ``mean`` / ``std`` when they are not ImageNet's) and ``summary``."""
    heads, backbone, layout, stats = _hub_parts(state)
    name, arch = _backbone_name(backbone)
    queries = heads.get(f"{TM}queries_embedder.weight")
    cls = heads.get("class_predictor.weight")
    fc1 = heads.get(f"{TM}decoder.layers.0.fc1.weight")
    stem = heads.get(f"{PD}fpn.stem.0.weight")
    mask = heads.get(f"{PD}mask_projection.weight")
    layers = {m.group(1) for k in heads if (m := re.match(rf"{re.escape(TM)}decoder\.layers\.(\d+)\.", k))}
    shape = lambda a, i: None if a is None else int(np.shape(a)[i])
    info = {"layout": layout, "backbone": name, "backbone_arch": arch, "num_queries": shape(queries, 0),
            "hidden_size": shape(queries, 1), "decoder_layers": len(layers) or None, "ffn_dim": shape(fc1, 0),
            "fpn_feature_size": shape(stem, 0), "mask_feature_size": shape(mask, 0),
            "num_classes": None if cls is None else shape(cls, 0) - 1}
    config = {k: info[k] for k in ("backbone", "num_queries", "hidden_size", "decoder_layers", "ffn_dim",
                                   "fpn_feature_size", "mask_feature_size") if info[k] is not None}
    if name is None and arch.get("num_heads"):  # a Swin of no listed size (tiny configs)
        config["backbone"] = "swin_t"
        config["backbone_kwargs"] = {k: arch[k] for k in ("embed_dim", "depths", "num_heads", "window_size")}
    imagenet = {"pixel_mean": d2_maskformer.IMAGENET_MEAN, "pixel_std": d2_maskformer.IMAGENET_STD}
    for key, value in stats.items():
        if not np.allclose(value, imagenet[key], atol=1e-3):
            config[key[len("pixel_"):]] = value
    info["config"] = config
    info["summary"] = (f"{layout} MaskFormer, backbone {name or arch}, {info['num_queries']} queries, "
                       f"{info['num_classes']} classes")
    return info


def detect(state):
    return is_detectron2(state) or any(k.startswith(("model.pixel_level_module.", "module.model.pixel_level_module."))
                                       for k in state)


CONVERTER = register_converter(Converter(
    family="maskformer", bind=bind, describe=describe_checkpoint, detect=detect,
    layouts="transformers MaskFormerForInstanceSegmentation (facebook/maskformer-*), detectron2 model-zoo .pkl / "
            "training .pth; Swin or ResNet backbones"))
