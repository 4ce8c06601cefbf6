"""Swin checkpoints -> kseg :class:`~kseg.backbones.swin.SwinTransformer` (renames + transposes).

Accepted layouts (a prefix such as ``backbone.``, ``swin.``, ``module.`` is stripped; or
pass ``prefix=`` to load only the keys under it, e.g. a whole MaskFormer checkpoint):

- **official** (microsoft/Swin-Transformer classification release, MaskFormer's
  ``D2SwinTransformer``): ``patch_embed.{proj,norm}``, ``layers.{i}.blocks.{j}.{norm1,
  attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``,
  ``layers.{i}.downsample.{norm,reduction}``, ``norm{i}`` (D2 stage norms). This is the
  canonical layout; the others are renamed into it.
- **transformers, Hub layout** (``SwinModel`` checkpoints, ``MaskFormerSwinModel`` /
  ``MaskFormerSwinBackbone``): ``embeddings.patch_embeddings.projection``,
  ``embeddings.norm``, ``encoder.layers.{i}.blocks.{j}.{layernorm_before,
  attention.self.{query,key,value,relative_position_bias_table}, attention.output.dense,
  layernorm_after, intermediate.dense, output.dense}``, ``encoder.layers.{i}.downsample``,
  and the backbone's ``hidden_states_norms.{i}`` -> ``norm{i}``. In a full HF MaskFormer
  checkpoint the backbone lives under ``model.pixel_level_module.encoder.``
  (:data:`HF_MASKFORMER_PREFIX`; :func:`hf_maskformer_backbone_state` extracts it).
- **detectron2 ``.pkl``** (MaskFormer's ``convert-pretrained-swin-model-to-d2.py`` output),
  official names, read with a numpy-only unpickler.
- **transformers 5.x in-memory layout** (``SwinModel().state_dict()``):
  ``attention.{q,k,v,o}_proj``, ``attention.relative_position_bias.relative_position_bias_table``,
  ``mlp.fc1/fc2``.

q/k/v are fused into ``qkv`` (rows q, k, v as in the official Linear). Buffers
(``relative_position_index``, ``attn_mask``) and classification parts (final ``norm`` /
``layernorm``, ``head``, ``classifier``, ``pooler``) are skipped with a reason: the
MaskFormer backbone has per-stage norms instead of the final one, and ImageNet weights
have none, so ``norm0..3`` stay at their initialisation (reported as missing, allowed).

A window-size mismatch (e.g. 224/window-7 weights into a window-12 model) is a shape
error naming ``relative_position_bias_table``; resampling bias tables is not done.
"""

import re

import numpy as np

from kseg.convert.common import (
    Target,
    conv_kernel,
    dense_targets,
    norm_targets,
    strip_prefixes,
    to_torch_layout,
)
from kseg.convert.io import read_state_dict
from kseg.convert.loader import Binding, apply_binding

HF_MASKFORMER_PREFIX = "model.pixel_level_module.encoder."

_B = r"^(?:encoder\.)?layers\.(\d+)\.blocks\.(\d+)\."
_RULES = tuple((re.compile(p), r) for p, r in (
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (_B + r"layernorm_before\.", r"layers.\1.blocks.\2.norm1."),
    (_B + r"layernorm_after\.", r"layers.\1.blocks.\2.norm2."),
    (_B + r"attention\.self\.(query|key|value)\.", r"layers.\1.blocks.\2.attn.\3."),
    (_B + r"attention\.(q|k|v)_proj\.", r"layers.\1.blocks.\2.attn.\3."),
    (_B + r"attention\.self\.relative_position_bias_table$", r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (_B + r"attention\.relative_position_bias\.relative_position_bias_table$",
     r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (_B + r"attention\.output\.dense\.", r"layers.\1.blocks.\2.attn.proj."),
    (_B + r"attention\.o_proj\.", r"layers.\1.blocks.\2.attn.proj."),
    (_B + r"intermediate\.dense\.", r"layers.\1.blocks.\2.mlp.fc1."),
    (_B + r"output\.dense\.", r"layers.\1.blocks.\2.mlp.fc2."),
    (_B + r"mlp\.(fc[12])\.", r"layers.\1.blocks.\2.mlp.\3."),
    (r"^encoder\.layers\.(\d+)\.downsample\.", r"layers.\1.downsample."),
    (r"^hidden_states_norms\.(\d+)\.", r"norm\1."),
))
_SKIP = tuple((re.compile(p), why) for p, why in (
    (r"(relative_position_index|attn_mask)$", "buffer (recomputed in-graph)"),
    (r"^(head|classifier|pooler)\.", "ImageNet classification head"),
    (r"^(norm|layernorm)\.", "final LayerNorm of the classifier (MaskFormer uses per-stage norm0..3)"),
))
_PREFIXES = ("module.", "backbone.", "swin.", "model.")
_QKV = re.compile(r"^(layers\.\d+\.blocks\.\d+\.attn)\.(query|q)\.(weight|bias)$")


def _strip(key):
    return strip_prefixes(key, _PREFIXES)


def hf_maskformer_backbone_state(state, prefix=HF_MASKFORMER_PREFIX):
    """The Swin backbone part of a HF ``MaskFormerModel`` / ``MaskFormerForInstanceSegmentation``
    state dict, in the official layout: ``{official key: np.ndarray}``.

    Args: state: any mapping accepted by ``read_state_dict`` (or a path); prefix: where the
      backbone sits (``model.pixel_level_module.encoder.``).
    Raises: ValueError when no key starts with ``prefix``.
    """
    out, _, _ = normalize_keys(select_prefix(read_state_dict(state), prefix))
    return out


def auto_prefix(state):
    """The backbone prefix of a whole segmentation checkpoint, or ``""``.

    HF MaskFormer: :data:`HF_MASKFORMER_PREFIX`; official MaskFormer / detectron2
    (``backbone.*`` beside ``sem_seg_head.*``): ``"backbone."``.
    """
    if any(k.startswith(HF_MASKFORMER_PREFIX) for k in state):
        return HF_MASKFORMER_PREFIX
    if any(k.startswith("sem_seg_head.") for k in state) and any(k.startswith("backbone.") for k in state):
        return "backbone."
    return ""


def select_prefix(state, prefix):
    if prefix is None:
        prefix = auto_prefix(state)
    if not prefix:
        return state
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not picked:
        raise ValueError(f"no checkpoint key starts with {prefix!r} (first keys: {list(state)[:4]})")
    return picked


def normalize_keys(state):
    """Any accepted layout -> ``(official-layout state with fused qkv, layout name, skipped)``.

    Raises: ValueError when two keys collapse onto one name or a q/k/v triple is incomplete.
    """
    out, skipped, layout = {}, {}, "official Swin"
    for key, value in state.items():
        name = _strip(key)
        reason = next((why for pat, why in _SKIP if pat.search(name)), None)
        if reason:
            skipped[key] = reason
            continue
        for pat, repl in _RULES:
            new = pat.sub(repl, name)
            if new != name:
                name, layout = new, "transformers Swin"
                break
        if name in out:
            raise ValueError(f"checkpoint keys collide after renaming: {key!r} -> {name!r} appears twice")
        out[name] = np.asarray(value)
    for key in sorted(k for k in out if _QKV.match(k)):
        base, q, suffix = _QKV.match(key).groups()
        names = ("query", "key", "value") if q == "query" else ("q", "k", "v")
        parts = [f"{base}.{n}.{suffix}" for n in names]
        if not all(p in out for p in parts):
            raise ValueError(f"checkpoint has {key!r} but not all of {parts}")
        out[f"{base}.qkv.{suffix}"] = np.concatenate([out.pop(p) for p in parts], axis=0)
    return out, layout, skipped


def backbone_targets(backbone):
    """``{official key: Target}`` for every variable of a built kseg ``SwinTransformer``."""
    t = {
        "patch_embed.proj.weight": Target("patch_embed.proj.weight", backbone.patch_embed.proj.kernel, conv_kernel),
        "patch_embed.proj.bias": Target("patch_embed.proj.bias", backbone.patch_embed.proj.bias),
    }
    norm_targets(t, "patch_embed.norm", backbone.patch_embed.norm)
    for i, stage in enumerate(backbone.layers):
        for j, blk in enumerate(stage.blocks):
            p = f"layers.{i}.blocks.{j}"
            norm_targets(t, f"{p}.norm1", blk.norm1)
            dense_targets(t, f"{p}.attn.qkv", blk.attn.qkv)
            dense_targets(t, f"{p}.attn.proj", blk.attn.proj)
            key = f"{p}.attn.relative_position_bias_table"
            t[key] = Target(key, blk.attn.relative_position_bias_table)
            norm_targets(t, f"{p}.norm2", blk.norm2)
            dense_targets(t, f"{p}.mlp.fc1", blk.mlp.fc1)
            dense_targets(t, f"{p}.mlp.fc2", blk.mlp.fc2)
        if stage.downsample is not None:
            norm_targets(t, f"layers.{i}.downsample.norm", stage.downsample.norm)
            dense_targets(t, f"layers.{i}.downsample.reduction", stage.downsample.reduction)
    for i in backbone.norm_indices:
        norm_targets(t, f"norm{i}", getattr(backbone, f"norm{i}"))
    return t


def export_state(backbone):
    """The backbone as an official-layout ``{key: np.ndarray}`` in PyTorch shapes (inverse of loading)."""
    return to_torch_layout(backbone_targets(backbone))


def describe_checkpoint(state):
    """embed_dim, depths, heads, window size read off an official-layout state."""
    depths = {}
    for k in state:
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            depths[int(m.group(1))] = max(depths.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    heads, window = [], None
    for i in sorted(depths):
        table = state.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
        if table is not None:
            heads.append(int(table.shape[1]))
            window = round((table.shape[0] ** 0.5 + 1) / 2)
    proj = state.get("patch_embed.proj.weight")
    return {"embed_dim": None if proj is None else int(proj.shape[0]),
            "depths": [depths[i] for i in sorted(depths)], "num_heads": heads, "window_size": window}


def bind(backbone, state, prefix=None):
    """Binds a Swin state dict (any layout of the module docstring) to a built kseg backbone.

    ``prefix``: bind only the keys under it (see :func:`load_swin`).
    """
    if prefix is None:
        prefix = auto_prefix(state)
    state, layout, skipped = normalize_keys(select_prefix(state, prefix))
    info = describe_checkpoint(state)
    targets = backbone_targets(backbone)
    model_desc = (f"embed_dim {backbone.embed_dim}, depths {backbone.depths}, heads {backbone.num_heads}, "
                  f"window {backbone.window_size}")
    ckpt_desc = (f"embed_dim {info['embed_dim']}, depths {info['depths']}, heads {info['num_heads']}, "
                 f"window {info['window_size']}")
    b = Binding(state, targets, layout=f"{layout} keys", skipped=skipped, info=info, require_match=True,
                optional={k for k in targets if re.match(r"norm\d\.", k)}, what=f"the Swin backbone ({model_desc})",
                hints=[("", lambda *_: f"another Swin variant (checkpoint: {ckpt_desc}; model: {model_desc})")])
    if prefix:
        b.notes.append(f"loaded the keys under {prefix!r}; other keys ignored")
    if b.optional - set(state):
        b.notes.append("stage norms norm0..3 not in the checkpoint (ImageNet weights): left at init")
    return b


def load_swin(backbone, source, prefix=None, strict=True):
    """Loads a Swin checkpoint (any layout of the module docstring) into a kseg
    ``SwinTransformer`` (or a model's ``backbone``), in place.

    ``prefix``: load only the keys under it, e.g. :data:`HF_MASKFORMER_PREFIX` or
    ``"backbone."``; ``None`` detects whole MaskFormer checkpoints (:func:`auto_prefix`), ``""``
    takes every key. ``strict`` allows the stage norms ``norm0..3`` to be missing (ImageNet
    weights have none). Raises as :func:`kseg.convert.loader.apply_binding`, and ValueError
    for an empty prefix selection.
    """
    backbone = getattr(backbone, "backbone", backbone)
    if not backbone.built:
        backbone.build((None, None, None, 3))
    return apply_binding(backbone, bind(backbone, read_state_dict(source), prefix), strict)
