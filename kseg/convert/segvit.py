"""SegViT checkpoints of the authors (github.com/zbwxp/SegVit, MMSegmentation 0.x) -> kseg ``SegViT``.

The released ``.pth`` files hold ``{"state_dict": {...}, "meta": ..., "optimizer": ...}`` with
mmseg key names (read by :func:`kseg.convert.common.read_state_dict`, which unwraps
``state_dict``):

Backbone (mmseg ``VisionTransformer`` / the authors' ``vit_shrink``; both have the same keys)::

    backbone.patch_embed.projection.{weight,bias}        -> encoder.patch_embed.proj   (conv)
    backbone.cls_token, backbone.pos_embed                -> encoder.cls_token / pos_embed
    backbone.layers.{i}.ln1.{weight,bias}                 -> encoder.blocks_{i}.norm1
    backbone.layers.{i}.attn.attn.in_proj_{weight,bias}   -> encoder.blocks_{i}.attn.qkv  (rows q, k, v)
    backbone.layers.{i}.attn.attn.out_proj.{weight,bias}  -> encoder.blocks_{i}.attn.proj
    backbone.layers.{i}.ln2.{weight,bias}                 -> encoder.blocks_{i}.norm2
    backbone.layers.{i}.ffn.layers.0.0.{weight,bias}      -> encoder.blocks_{i}.mlp.fc1
    backbone.layers.{i}.ffn.layers.1.{weight,bias}        -> encoder.blocks_{i}.mlp.fc2

Cascade head (``ATMHead``)::

    decode_head.q.weight (K, d), decode_head.class_embed.{weight,bias}
    decode_head.input_proj_{s}.*, decode_head.proj_norm_{s}.*            (s = 1..3)
    decode_head.decoder_{s}.layers.{j}.self_attn.{in_proj_weight,in_proj_bias,out_proj.*}
    decode_head.decoder_{s}.layers.{j}.multihead_attn.{q,k,v,proj}.*     (ATM ``Attention``)
    decode_head.decoder_{s}.layers.{j}.{linear1,linear2,norm1,norm2,norm3}.*

Shrunk head (``TPNATMHead``): ``decode_head.q.weight`` ((crop/16)^2, d), ``input_proj_{1,2}``,
``proj_norm_{1,2}``, ``decoder_{1,2}.layers.{j}`` (standard ``nn.TransformerDecoderLayer``:
its cross-attention is ``multihead_attn.in_proj_{weight,bias}`` (rows q, k, v) and
``multihead_attn.out_proj``, split/renamed onto kseg's ``q``, ``k``, ``v``, ``proj``), and the
single ATM under ``decode_head.atm.`` (``q``, ``class_embed``, ``decoder_1.layers.{j}``).

Skipped: ``*.loss_decode.*`` (the criterion's ``empty_weight`` buffer), ``backbone.ln1``
(final norm, unused by SegViT), optimizer state. Position embeddings and the QU token grid
stored for another crop (e.g. ViT-L at 512 / 480 into the 640 variant) are resampled to the
model's grid (bicubic by default, the model's ``pos_embed_interpolation``).

Layouts: Linear (out, in) -> Dense (in, out); Conv2d (out, in, kh, kw) -> (kh, kw, in, out).
"""

import re

import numpy as np

from kseg.convert.common import (
    LoadReport,
    ShapeMismatchError,
    Target,
    assign_all,
    check_shapes,
    conv_kernel,
    dense_targets,
    identity,
    linear_kernel,
    norm_targets,
    read_state_dict,
)
from kseg.layers.pos_embed import resample_pos_embed

_SKIP = (
    (re.compile(r"(^|\.)loss_decode\."), "loss buffer (criterion.empty_weight), not a weight"),
    (re.compile(r"^backbone\.ln1\."), "backbone final norm: SegViT runs the ViT with final_norm=False"),
    (re.compile(r"^decode_head\.conv_seg\."), "mmseg default classifier, deleted by the ATM heads"),
)


def _rows(start, stop, transform):
    """A transform taking rows [start, stop) of a stacked (3d, ...) torch tensor first."""
    return lambda a: transform(np.asarray(a)[start:stop])


def _decoder_layer(t, p, layer, fused_cross):
    sa = layer.self_attn
    t[f"{p}.self_attn.in_proj_weight"] = Target(f"{p}.self_attn.in_proj_weight", sa.in_proj.kernel, linear_kernel)
    t[f"{p}.self_attn.in_proj_bias"] = Target(f"{p}.self_attn.in_proj_bias", sa.in_proj.bias)
    dense_targets(t, f"{p}.self_attn.out_proj", sa.out_proj)
    ca = layer.multihead_attn
    if fused_cross:
        # Three kseg variables read one stacked checkpoint tensor: their table keys get a
        # "#q/#k/#v" suffix; Target.key is the checkpoint key.
        d = ca.dim
        for n, (i, sub) in enumerate((("q", ca.q), ("k", ca.k), ("v", ca.v))):
            lo, hi = n * d, (n + 1) * d
            t[f"{p}.multihead_attn.in_proj_weight#{i}"] = Target(
                f"{p}.multihead_attn.in_proj_weight", sub.kernel, _rows(lo, hi, linear_kernel))
            t[f"{p}.multihead_attn.in_proj_bias#{i}"] = Target(
                f"{p}.multihead_attn.in_proj_bias", sub.bias, _rows(lo, hi, identity))
        dense_targets(t, f"{p}.multihead_attn.out_proj", ca.proj)
    else:
        for n in ("q", "k", "v", "proj"):
            dense_targets(t, f"{p}.multihead_attn.{n}", getattr(ca, n))
    for n in ("linear1", "linear2"):
        dense_targets(t, f"{p}.{n}", getattr(layer, n))
    for n in ("norm1", "norm2", "norm3"):
        norm_targets(t, f"{p}.{n}", getattr(layer, n))


def _atm(t, p, head):
    t[f"{p}.q.weight"] = Target(f"{p}.q.weight", head.q)
    dense_targets(t, f"{p}.class_embed", head.class_embed)
    for s, (proj, norm) in enumerate(zip(head.input_proj, head.proj_norm), start=1):
        dense_targets(t, f"{p}.input_proj_{s}", proj)
        norm_targets(t, f"{p}.proj_norm_{s}", norm)
    for s, dec in enumerate(head.decoder, start=1):
        for j, layer in enumerate(dec.layers):
            _decoder_layer(t, f"{p}.decoder_{s}.layers.{j}", layer, fused_cross=False)


def segvit_targets(model):
    """``{checkpoint key[#part]: Target}`` for every variable of a built kseg ``SegViT``."""
    enc, head = model.encoder, model.decode_head
    t = {}
    t["backbone.patch_embed.projection.weight"] = Target("backbone.patch_embed.projection.weight",
                                                         enc.patch_embed.proj.kernel, conv_kernel)
    t["backbone.patch_embed.projection.bias"] = Target("backbone.patch_embed.projection.bias",
                                                       enc.patch_embed.proj.bias)
    t["backbone.cls_token"] = Target("backbone.cls_token", enc.cls_token)
    t["backbone.pos_embed"] = Target("backbone.pos_embed", enc.pos_embed)
    for i, blk in enumerate(enc.blocks):
        p = f"backbone.layers.{i}"
        norm_targets(t, f"{p}.ln1", blk.norm1)
        t[f"{p}.attn.attn.in_proj_weight"] = Target(f"{p}.attn.attn.in_proj_weight", blk.attn.qkv.kernel,
                                                    linear_kernel)
        t[f"{p}.attn.attn.in_proj_bias"] = Target(f"{p}.attn.attn.in_proj_bias", blk.attn.qkv.bias)
        dense_targets(t, f"{p}.attn.attn.out_proj", blk.attn.proj)
        norm_targets(t, f"{p}.ln2", blk.norm2)
        dense_targets(t, f"{p}.ffn.layers.0.0", blk.mlp.fc1)
        dense_targets(t, f"{p}.ffn.layers.1", blk.mlp.fc2)
    if model.shrunk:
        t["decode_head.q.weight"] = Target("decode_head.q.weight", head.q)
        for s, (proj, norm, dec) in enumerate(zip(head.input_proj, head.proj_norm, head.decoder), start=1):
            dense_targets(t, f"decode_head.input_proj_{s}", proj)
            norm_targets(t, f"decode_head.proj_norm_{s}", norm)
            for j, layer in enumerate(dec.layers):
                _decoder_layer(t, f"decode_head.decoder_{s}.layers.{j}", layer, fused_cross=True)
        _atm(t, "decode_head.atm", head.atm)
    else:
        _atm(t, "decode_head", head)
    return t


def _resample_square(table, new_side, method, prefix=0):
    """(prefix + g*g, C) or (1, prefix + g*g, C) square-grid table -> new_side x new_side."""
    arr = np.asarray(table, np.float32)
    squeeze = arr.ndim == 2
    arr = arr[None] if squeeze else arr
    out = resample_pos_embed(arr, (new_side, new_side), num_prefix_tokens=prefix, method=method)
    return out[0] if squeeze else out


def load_segvit(model, source, strict=True):
    """Loads an authors' SegViT checkpoint into a kseg ``SegViT`` (cascade or Shrunk), in place.

    Args:
      model: a ``kseg.models.SegViT`` (built first if needed) of the checkpoint's variant:
        same backbone, ``shrunk`` flag, decoder width and number of classes.
      source: a ``.pth`` path / folder / ``{key: array or tensor}`` mapping
        (:func:`kseg.convert.common.read_state_dict`); a ``module.`` prefix is stripped.
      strict: raise on unknown checkpoint keys or model variables the checkpoint lacks.
    Returns: :class:`LoadReport` (notes say which grids were resampled).
    Raises: ValueError (``ShapeMismatchError``) naming the key, both shapes and the likely cause
      (another variant, class count, or cascade vs Shrunk); with ``strict``, unexpected/missing
      keys. Nothing is assigned when it raises.
    """
    if not model.built:
        model.build((None, None, None, 3))
    state = read_state_dict(source)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    report = LoadReport(layout="SegViT (zbwxp/SegVit, mmseg) keys")
    for key in list(state):
        for pattern, why in _SKIP:
            if pattern.search(key):
                report.skipped[key] = why
                state.pop(key)
                break
    kind = "Shrunk" if model.shrunk else "cascade"
    model_desc = (f"{model.variant or model.backbone_name} ({kind}, {model.num_classes} classes, decoder dim "
                  f"{model.decoder_dim})")
    ckpt_shrunk = any(k.startswith("decode_head.atm.") for k in state)
    ckpt_cascade = "decode_head.class_embed.weight" in state
    if (model.shrunk and ckpt_cascade) or (not model.shrunk and ckpt_shrunk):
        what = ("a Shrunk checkpoint (decode_head.atm.*)" if ckpt_shrunk
                else "a cascade checkpoint (decode_head.class_embed)")
        raise ValueError(f"checkpoint is {what} but the model is {model_desc}; use the matching "
                         "segvit_*_shrunk / segvit_* variant")
    enc = model.encoder
    method = model.pos_embed_interpolation
    pos = state.get("backbone.pos_embed")
    if pos is not None and pos.ndim == 3 and pos.shape[-1] == enc.embed_dim and pos.shape[1] != enc.pos_embed.shape[1]:
        side = int(round((pos.shape[1] - 1) ** 0.5))
        if side * side + 1 == pos.shape[1]:  # otherwise the shape check reports it
            state["backbone.pos_embed"] = _resample_square(pos, enc.grid_size, method, prefix=1)
            g = enc.grid_size
            report.notes.append(f"backbone.pos_embed resampled from {side}x{side} to {g}x{g}")
    if model.shrunk:
        q = state.get("decode_head.q.weight")
        g = model.decode_head.grid_size
        side = int(round(q.shape[0] ** 0.5)) if q is not None and q.ndim == 2 else 0
        if side > 0 and side * side == q.shape[0] and q.shape[-1] == model.decoder_dim and side != g:
            state["decode_head.q.weight"] = _resample_square(q, g, method)
            report.notes.append(f"QU tokens decode_head.q.weight resampled from {side}x{side} to {g}x{g}")
    targets = segvit_targets(model)
    wanted = {tgt.key for tgt in targets.values()}
    report.unexpected = sorted(k for k in state if k not in wanted)
    report.missing = sorted({tgt.key for tgt in targets.values() if tgt.key not in state})

    def hint(key, ckpt_shape, want):
        if "class_embed" in key or key.endswith("atm.q.weight") or key == "decode_head.q.weight":
            return f"another class count or decoder width (model: {model_desc})"
        return f"another variant (model: {model_desc})"

    present = [tgt for tgt in targets.values() if tgt.key in state]
    pairs = check_shapes(present, state, hint=hint)
    if strict and (report.unexpected or report.missing):
        raise ValueError(
            f"checkpoint does not match {model_desc}: {len(report.unexpected)} unexpected keys "
            f"{report.unexpected[:4]}, {len(report.missing)} missing keys {report.missing[:4]}. "
            "Pass strict=False to load the matching keys."
        )
    assign_all(pairs)
    report.loaded = sorted({tgt.key for tgt, _ in pairs})
    assigned = {id(tgt.variable) for tgt, _ in pairs}
    report.untouched = [w.path for w in model.weights if id(w) not in assigned]
    return report


__all__ = ["load_segvit", "segvit_targets", "ShapeMismatchError"]
