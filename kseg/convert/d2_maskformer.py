"""The authors' detectron2 MaskFormer checkpoints (facebookresearch/MaskFormer model zoo,
``model_final_*.pkl`` or a training ``.pth``) -> a kseg ``MaskFormer``.

The detectron2 keys are renamed to the HF Hub layout of :mod:`kseg.convert.hf_maskformer`
and bound with its :func:`~kseg.convert.hf_maskformer.head_targets`; the backbone keys
(``backbone.*``: official Swin with ``norm0..3``, or detectron2 ResNet) go to the backbone
converters with ``prefix="backbone."``. Renames (authors' ``BasePixelDecoder`` /
``TransformerPredictor`` / DETR ``TransformerDecoderLayer``)::

  sem_seg_head.pixel_decoder.layer_4[.norm]        -> fpn.stem.0 / fpn.stem.1      (res5, 3x3 + GN)
  sem_seg_head.pixel_decoder.adapter_{k}[.norm]    -> fpn.layers.{3-k}.proj.0 / .1 (k=3: res4 ... 1: res2)
  sem_seg_head.pixel_decoder.layer_{k}[.norm]      -> fpn.layers.{3-k}.block.0 / .1
  sem_seg_head.pixel_decoder.mask_features         -> mask_projection
  sem_seg_head.predictor.query_embed               -> transformer_module.queries_embedder
  sem_seg_head.predictor.input_proj                -> transformer_module.input_projection
  ...transformer.decoder.layers.{i}.self_attn.in_proj_{weight,bias}  -> self_attn.{q,k,v}_proj (split in 3)
  ...self_attn.out_proj / multihead_attn.*         -> self_attn.out_proj / encoder_attn.*
  ...linear1, linear2, norm1, norm2, norm3         -> fc1, fc2, self_attn_layer_norm,
                                                      encoder_attn_layer_norm, final_layer_norm
  ...transformer.decoder.norm                      -> transformer_module.decoder.layernorm
  sem_seg_head.predictor.class_embed / mask_embed.layers.{i} -> class_predictor / mask_embedder.{i}.0

Skipped with a reason: ``pixel_mean``/``pixel_std`` (kseg normalises in-graph; values other
than ImageNet's become the model's ``mean``/``std`` through
:func:`kseg.convert.maskformer.describe_checkpoint`, and a note when loading into a model
built otherwise) and ``criterion.empty_weight``. Checkpoints with a transformer *encoder* (the panoptic
"R50 + 6 Enc" models: ``TransformerEncoderPixelDecoder`` or ``ENC_LAYERS > 0``) are not the
semantic-segmentation MaskFormer and are refused.
"""

import re

import numpy as np

from kseg.backbones.normalization import IMAGENET_MEAN, IMAGENET_STD
from kseg.convert.hf_maskformer import (
    PIXEL_DECODER_PREFIX,
    TRANSFORMER_PREFIX,
    bind_heads,
)
from kseg.convert.loader import load

D2_PIXEL_DECODER = "sem_seg_head.pixel_decoder."
D2_PREDICTOR = "sem_seg_head.predictor."
D2_BACKBONE = "backbone."

_LAYER_RENAMES = (
    ("self_attn.out_proj.", "self_attn.out_proj."),
    ("multihead_attn.out_proj.", "encoder_attn.out_proj."),
    ("linear1.", "fc1."),
    ("linear2.", "fc2."),
    ("norm1.", "self_attn_layer_norm."),
    ("norm2.", "encoder_attn_layer_norm."),
    ("norm3.", "final_layer_norm."),
)


def _pixel_decoder_key(rest):
    m = re.match(r"^(layer|adapter)_(\d)\.(norm\.)?(weight|bias)$", rest)
    if m:
        kind, k, norm, param = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        part = "1" if norm else "0"
        if kind == "layer" and k == 4:
            return f"{PIXEL_DECODER_PREFIX}fpn.stem.{part}.{param}"
        if 1 <= k <= 3:
            sub = "proj" if kind == "adapter" else "block"
            return f"{PIXEL_DECODER_PREFIX}fpn.layers.{3 - k}.{sub}.{part}.{param}"
    m = re.match(r"^mask_features\.(weight|bias)$", rest)
    if m:
        return f"{PIXEL_DECODER_PREFIX}mask_projection.{m.group(1)}"
    return None


def _predictor_keys(rest, value):
    """``[(hub key, array)]`` for one predictor key (in_proj splits into three), or None."""
    simple = {
        "query_embed.weight": f"{TRANSFORMER_PREFIX}queries_embedder.weight",
        "input_proj.weight": f"{TRANSFORMER_PREFIX}input_projection.weight",
        "input_proj.bias": f"{TRANSFORMER_PREFIX}input_projection.bias",
        "transformer.decoder.norm.weight": f"{TRANSFORMER_PREFIX}decoder.layernorm.weight",
        "transformer.decoder.norm.bias": f"{TRANSFORMER_PREFIX}decoder.layernorm.bias",
        "class_embed.weight": "class_predictor.weight",
        "class_embed.bias": "class_predictor.bias",
    }
    if rest in simple:
        return [(simple[rest], value)]
    m = re.match(r"^mask_embed\.layers\.(\d+)\.(weight|bias)$", rest)
    if m:
        return [(f"mask_embedder.{m.group(1)}.0.{m.group(2)}", value)]
    m = re.match(r"^transformer\.decoder\.layers\.(\d+)\.(.+)$", rest)
    if not m:
        return None
    prefix, tail = f"{TRANSFORMER_PREFIX}decoder.layers.{m.group(1)}.", m.group(2)
    m = re.match(r"^(self_attn|multihead_attn)\.in_proj_(weight|bias)$", tail)
    if m:
        attn = "self_attn" if m.group(1) == "self_attn" else "encoder_attn"
        parts = np.split(np.asarray(value), 3, axis=0)  # rows: q, k, v (torch nn.MultiheadAttention)
        return [(f"{prefix}{attn}.{p}_proj.{m.group(2)}", a) for p, a in zip("qkv", parts)]
    for old, new in _LAYER_RENAMES:
        if tail.startswith(old):
            return [(prefix + new + tail[len(old):], value)]
    return None


def to_hub_keys(state):
    """Detectron2 head keys -> ``(HF Hub-layout head state, backbone state, skipped, notes)``.

    Raises: ValueError for a transformer-encoder checkpoint (panoptic "+6 Enc" models).
    """
    heads, backbone, skipped, notes = {}, {}, {}, []
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith(D2_BACKBONE):
            backbone[name] = value
        elif name in ("pixel_mean", "pixel_std"):
            skipped[key] = "input normalisation buffer (kseg normalises in-graph)"
            ref = IMAGENET_MEAN if name == "pixel_mean" else IMAGENET_STD
            if not np.allclose(np.asarray(value).reshape(-1), ref, atol=1e-3):
                notes.append(f"{name} is {np.asarray(value).reshape(-1).tolist()}, not ImageNet's {list(ref)}: "
                             "build the model with these mean/std (kseg.from_pretrained does)")
        elif name == "criterion.empty_weight":
            skipped[key] = "loss buffer (no-object weight), rebuilt by the criterion"
        elif name.startswith(D2_PIXEL_DECODER + "transformer.") or ".transformer.encoder.layers." in name:
            raise ValueError(f"{key!r}: this checkpoint has a transformer encoder (a panoptic "
                             "'+6 Enc' MaskFormer), which kseg's semantic MaskFormer does not implement")
        elif name.startswith(D2_PIXEL_DECODER):
            new = _pixel_decoder_key(name[len(D2_PIXEL_DECODER):])
            if new is None:
                heads[key] = value  # reported as unexpected
            else:
                heads[new] = value
        elif name.startswith(D2_PREDICTOR):
            pairs = _predictor_keys(name[len(D2_PREDICTOR):], value)
            if pairs is None:
                heads[key] = value
            else:
                heads.update(pairs)
        else:
            heads[key] = value
    return heads, backbone, skipped, notes


def bind(model, state):
    """Binds a detectron2 MaskFormer state dict to a kseg ``MaskFormer``.

    Raises: ValueError for a transformer-encoder checkpoint (panoptic "+6 Enc" models).
    """
    heads, backbone, skipped, notes = to_hub_keys(state)
    backbone = {k[len(D2_BACKBONE):]: v for k, v in backbone.items()}
    return bind_heads(model, heads, backbone, D2_BACKBONE, "detectron2 MaskFormer keys", skipped, notes)


def load_d2_maskformer(model, source, strict=True, skip_classifier=False):
    """:func:`kseg.convert.load` of a detectron2 checkpoint (``.pkl`` / ``.pth``) into a kseg
    ``MaskFormer`` of its configuration (e.g. ``maskformer_swin_l``, 150 classes, for
    ``maskformer_swin_large_IN21k_384_bs16_160k_res640``)."""
    from kseg.convert.maskformer import CONVERTER

    return load(model, source, CONVERTER, strict, skip_classifier)


