"""SegViT checkpoints of the authors (github.com/zbwxp/SegVit, MMSegmentation 0.x) -> kseg ``SegViT``.

The released ``.pth`` files hold ``{"state_dict": {...}, "meta": ..., "optimizer": ...}`` with
mmseg key names (read by :func:`kseg.convert.io.read_state_dict`, which unwraps
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

The backbone keys are mapped by :mod:`kseg.convert.vit` (its mmseg rules). Skipped:
``*.loss_decode.*`` (the criterion's ``empty_weight`` buffer), ``backbone.ln1`` (final norm,
unused by SegViT), optimizer state. Position embeddings and the QU token grid stored for
another crop are resampled to the model's grid (the model's ``pos_embed_interpolation``);
models built through the registry get the checkpoint's own grid (:func:`describe_checkpoint`
``config["img_size"]``), so nothing is resampled.

Layouts: Linear (out, in) -> Dense (in, out); Conv2d (out, in, kh, kw) -> (kh, kw, in, out).
"""

import re

import numpy as np

from kseg.convert import vit
from kseg.convert.common import (
    ShapeMismatchError,
    Target,
    dense_targets,
    identity,
    linear_kernel,
    norm_targets,
)
from kseg.convert.loader import (
    Binding,
    Converter,
    load,
    register_converter,
    strip_module,
)
from kseg.layers.pos_embed import resample_pos_embed

_SKIP = (
    (re.compile(r"(^|\.)loss_decode\."), "loss buffer (criterion.empty_weight), not a weight"),
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


def head_targets(model):
    """``{checkpoint key[#part]: Target}`` for every decode-head variable of a built kseg ``SegViT``."""
    head, t = model.decode_head, {}
    if not model.shrunk:
        _atm(t, "decode_head", head)
        return t
    t["decode_head.q.weight"] = Target("decode_head.q.weight", head.q)
    for s, (proj, norm, dec) in enumerate(zip(head.input_proj, head.proj_norm, head.decoder), start=1):
        dense_targets(t, f"decode_head.input_proj_{s}", proj)
        norm_targets(t, f"decode_head.proj_norm_{s}", norm)
        for j, layer in enumerate(dec.layers):
            _decoder_layer(t, f"decode_head.decoder_{s}.layers.{j}", layer, fused_cross=True)
    _atm(t, "decode_head.atm", head.atm)
    return t


def describe_checkpoint(state):
    """``shrunk``, ``num_classes``, ``decoder_dim``, ``decoder_layers`` and the encoder of an
    authors' SegViT checkpoint, with ``config`` and ``summary`` for the registry."""
    state = strip_module(dict(state))
    shrunk = any(k.startswith("decode_head.atm.") for k in state)
    head = "decode_head.atm." if shrunk else "decode_head."
    cls = state.get(f"{head}class_embed.weight")
    enc = vit.normalize_keys({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})[0]
    config = vit.backbone_config(vit.describe_checkpoint(enc))
    layers = {m.group(1) for k in state if (m := re.match(rf"{re.escape(head)}decoder_1\.layers\.(\d+)\.", k))}
    info = {"layout": "authors", "shrunk": shrunk, "num_classes": None if cls is None else int(np.shape(cls)[0]) - 1,
            "decoder_dim": None if cls is None else int(np.shape(cls)[1]), "decoder_layers": len(layers) or None}
    if cls is not None:
        config.update(shrunk=shrunk, decoder_dim=info["decoder_dim"], decoder_layers=info["decoder_layers"])
    info["config"] = config
    info["summary"] = (f"SegViT ({'Shrunk' if shrunk else 'cascade'}), "
                       + (f"{info['num_classes']} classes" if cls is not None else "no ATM head found"))
    return info


def bind(model, state):
    """Binds an authors' SegViT checkpoint to a kseg ``SegViT`` (cascade or Shrunk).

    Raises: ValueError for a cascade checkpoint into a Shrunk model or the reverse.
    """
    state = strip_module(state)
    skipped = {}
    for key in [k for k in state if any(p.search(k) for p, _ in _SKIP)]:
        skipped[key] = next(why for p, why in _SKIP if p.search(key))
        state.pop(key)
    what = (f"{model.variant or model.backbone_name} ({'Shrunk' if model.shrunk else 'cascade'}, "
            f"{model.num_classes} classes, decoder dim {model.decoder_dim})")
    ckpt_shrunk = any(k.startswith("decode_head.atm.") for k in state)
    ckpt_cascade = "decode_head.class_embed.weight" in state
    if (model.shrunk and ckpt_cascade) or (not model.shrunk and ckpt_shrunk):
        kind = "a Shrunk checkpoint (decode_head.atm.*)" if ckpt_shrunk else "a cascade checkpoint (decode_head.class_embed)"
        raise ValueError(f"checkpoint is {kind} but the model is {what}; use the matching "
                         "segvit_*_shrunk / segvit_* variant")
    rest = {k: np.asarray(v) for k, v in state.items() if not k.startswith("backbone.")}
    notes = []
    if model.shrunk:
        q, g = rest.get("decode_head.q.weight"), model.decode_head.grid_size
        side = round(q.shape[0] ** 0.5) if q is not None and q.ndim == 2 else 0
        if side > 0 and side * side == q.shape[0] and q.shape[-1] == model.decoder_dim and side != g:
            rest["decode_head.q.weight"] = resample_pos_embed(q[None].astype("float32"), (g, g), num_prefix_tokens=0,
                                                             method=model.pos_embed_interpolation)[0]
            notes.append(f"QU tokens decode_head.q.weight resampled from {side}x{side} to {g}x{g}")
    b = Binding(rest, head_targets(model), layout="SegViT (zbwxp/SegVit, mmseg) keys", skipped=skipped, notes=notes,
                what=what, info={"checkpoint": describe_checkpoint(state)},
                hints=[("decode_head.", lambda key, *_: (
                    f"another class count or decoder width (model: {what})"
                    if "class_embed" in key or key.endswith("q.weight") else f"another variant (model: {what})"))])
    enc = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return b.add(vit.bind_encoder(model.encoder, enc), "backbone.")


def load_segvit(model, source, strict=True):
    """:func:`kseg.convert.load` into a kseg ``SegViT`` (no ``skip_classifier``: the class
    embeddings feed every decoder layer). Raises ValueError for cascade vs Shrunk."""
    return load(model, source, CONVERTER, strict)


def detect(state):
    """An authors' SegViT checkpoint: ATM class embeddings in the decode head."""
    return any(re.match(r"(module\.)?decode_head\.(atm\.)?class_embed\.weight$", k) for k in state)


CONVERTER = register_converter(Converter(
    family="segvit", bind=bind, describe=describe_checkpoint, detect=detect,
    layouts="authors' SegViT (zbwxp/SegVit, Akide/SegViTv1 on the Hub) .pth"))

__all__ = ["ShapeMismatchError", "head_targets", "load_segvit"]
