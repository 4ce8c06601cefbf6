"""Hugging Face ``MaskFormerForInstanceSegmentation`` checkpoints -> a kseg ``MaskFormer``.

Accepted layouts (a DDP ``module.`` prefix is stripped):

(a) the Hub layout (``facebook/maskformer-swin-*-ade``, ``facebook/maskformer-resnet*``,
    and what transformers 5.x's ``save_pretrained`` writes)::

      model.pixel_level_module.encoder.*                      the backbone (Swin or ResNet)
      model.pixel_level_module.decoder.fpn.stem.{0,1}         3x3 conv, GroupNorm on res5
      model.pixel_level_module.decoder.fpn.layers.{i}.proj.{0,1}   lateral 1x1 conv, GN (i=0: res4)
      model.pixel_level_module.decoder.fpn.layers.{i}.block.{0,1}  3x3 conv, GN
      model.pixel_level_module.decoder.mask_projection        3x3 conv (bias)
      model.transformer_module.queries_embedder.weight        (Q, d) query positions
      model.transformer_module.input_projection               1x1 conv (when C5 != d)
      model.transformer_module.decoder.layers.{i}.{self_attn,encoder_attn}.{q,k,v,out}_proj
      model.transformer_module.decoder.layers.{i}.{self_attn_layer_norm,
          encoder_attn_layer_norm,fc1,fc2,final_layer_norm}
      model.transformer_module.decoder.layernorm
      class_predictor, mask_embedder.{0,1,2}.0

(b) transformers 5.x's in-memory layout (``model.state_dict()``): ``o_proj`` for
    ``out_proj`` and ``mlp.fc1``/``mlp.fc2`` for ``fc1``/``fc2`` (:data:`RENAMES`).

The backbone part is delegated to the backbone converters (``kseg.convert.swin``,
``kseg.convert.resnet``, keys under ``model.pixel_level_module.encoder.``);
this module binds the heads by walking the kseg model's attributes, never by position.
Transposes: Linear (out, in) -> Dense (in, out); Conv2d (out, in, kh, kw) -> (kh, kw, in,
out); GroupNorm/LayerNorm weight/bias -> gamma/beta. Skipped: ``criterion.empty_weight``
(a loss buffer, rebuilt by the criterion).
"""

import re

from kseg.convert import resnet, swin
from kseg.convert.common import (
    Target,
    conv_targets,
    dense_targets,
    identity,
    norm_targets,
)
from kseg.convert.loader import Binding, load

BACKBONE_PREFIX = "model.pixel_level_module.encoder."
PIXEL_DECODER_PREFIX = "model.pixel_level_module.decoder."
TRANSFORMER_PREFIX = "model.transformer_module."
CLASSIFIER_KEYS = ("class_predictor.weight", "class_predictor.bias")

# (transformers 5.x in-memory fragment, Hub fragment)
RENAMES = (
    (re.compile(r"\.(self_attn|encoder_attn)\.o_proj\."), r".\1.out_proj."),
    (re.compile(r"\.mlp\.(fc[12])\."), r".\1."),
)


def normalize_keys(state):
    """Any accepted layout -> ``(Hub-layout state, layout name)``.

    Raises: ValueError when two keys collapse onto one name (a mixed checkpoint).
    """
    out, layout = {}, "Hub"
    for key, value in state.items():
        name = key.removeprefix("module.")
        if not name.startswith(BACKBONE_PREFIX):
            for pattern, repl in RENAMES:
                new = pattern.sub(repl, name)
                if new != name:
                    name, layout = new, "transformers 5.x"
        if name in out:
            raise ValueError(f"checkpoint keys collide after renaming: {key!r} -> {name!r} appears twice")
        out[name] = value
    return out, layout


def head_targets(model):
    """``{Hub key: Target}`` for every non-backbone variable of a kseg ``MaskFormer``."""
    t = {}
    pd, p = model.pixel_decoder, PIXEL_DECODER_PREFIX
    conv_targets(t, f"{p}fpn.stem.0", pd.stem.conv)
    norm_targets(t, f"{p}fpn.stem.1", pd.stem.norm)
    for i, layer in enumerate(pd.fpn_layers):
        conv_targets(t, f"{p}fpn.layers.{i}.proj.0", layer.proj_conv)
        norm_targets(t, f"{p}fpn.layers.{i}.proj.1", layer.proj_norm)
        conv_targets(t, f"{p}fpn.layers.{i}.block.0", layer.block.conv)
        norm_targets(t, f"{p}fpn.layers.{i}.block.1", layer.block.norm)
    conv_targets(t, f"{p}mask_projection", pd.mask_projection)
    tm, p = model.transformer_module, TRANSFORMER_PREFIX
    t[f"{p}queries_embedder.weight"] = Target(f"{p}queries_embedder.weight", tm.query_embed, identity)
    if tm.input_projection is not None:
        conv_targets(t, f"{p}input_projection", tm.input_projection)
    for i, layer in enumerate(tm.decoder_layers):
        q = f"{p}decoder.layers.{i}"
        for attn_name in ("self_attn", "encoder_attn"):
            attn = getattr(layer, attn_name)
            for proj in ("q_proj", "k_proj", "v_proj"):
                dense_targets(t, f"{q}.{attn_name}.{proj}", getattr(attn, proj))
            dense_targets(t, f"{q}.{attn_name}.out_proj", attn.o_proj)
        norm_targets(t, f"{q}.self_attn_layer_norm", layer.self_attn_layer_norm)
        norm_targets(t, f"{q}.encoder_attn_layer_norm", layer.encoder_attn_layer_norm)
        dense_targets(t, f"{q}.fc1", layer.fc1)
        dense_targets(t, f"{q}.fc2", layer.fc2)
        norm_targets(t, f"{q}.final_layer_norm", layer.final_layer_norm)
    norm_targets(t, f"{p}decoder.layernorm", tm.layernorm)
    dense_targets(t, "class_predictor", model.class_predictor)
    for i, layer in enumerate(model.mask_embedder.dense_layers):
        dense_targets(t, f"mask_embedder.{i}.0", layer)
    return t


def bind_heads(model, state, backbone, backbone_prefix, layout, skipped=None, notes=()):
    """The model's binding: its heads (``state`` in Hub names) plus the backbone keys
    (``backbone``, under ``backbone_prefix`` in the checkpoint) bound by the Swin or ResNet
    converter."""
    what = (f"the MaskFormer ({model.backbone_name}, {model.num_queries} queries, d {model.hidden_size}, "
            f"{model.decoder_layers} decoder layers, FPN {model.fpn_feature_size}, mask dim "
            f"{model.mask_feature_size}, {model.num_classes} classes)")
    b = Binding(state, head_targets(model), layout=layout, skipped=dict(skipped or {}), notes=list(notes), what=what,
                classifier=set(CLASSIFIER_KEYS),
                hints=[("", lambda key, *_: f"another MaskFormer configuration ({what})"),
                       ("class_predictor.", lambda *_: "another class count (set num_classes, or skip_classifier=True "
                                                       "to fine-tune)")])
    converter = swin if model.backbone_name.startswith("swin") else resnet
    return b.add(converter.bind(model.backbone, backbone, prefix=""), backbone_prefix)


def bind(model, state):
    """Binds a HF MaskFormer state dict (layout (a) or (b)) to a kseg ``MaskFormer``."""
    state, layout = normalize_keys(state)
    heads = {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}
    backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    skipped = {}
    if heads.pop("criterion.empty_weight", None) is not None:
        skipped["criterion.empty_weight"] = "loss buffer (no-object weight), rebuilt by the criterion"
    return bind_heads(model, heads, backbone, BACKBONE_PREFIX, f"{layout} MaskFormerForInstanceSegmentation keys",
                      skipped)


def load_hf_maskformer(model, source, strict=True, skip_classifier=False):
    """:func:`kseg.convert.load` of a transformers checkpoint into a kseg ``MaskFormer`` of its
    configuration (``skip_classifier``: ``class_predictor``)."""
    from kseg.convert.maskformer import CONVERTER

    return load(model, source, CONVERTER, strict, skip_classifier)


