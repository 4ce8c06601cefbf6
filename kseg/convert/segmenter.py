"""Segmenter checkpoints -> a kseg ``Segmenter`` (linear or mask-transformer decoder).

Accepted layouts (recognised from the keys; a leading ``module.`` is stripped):

- **Authors'** (github.com/rstrudel/segmenter, ``checkpoint.pth`` with the weights under
  ``"model"``, unwrapped by :func:`kseg.convert.common.read_state_dict`), names verified in
  ``segm/model/{vit,blocks,decoder}.py``:
  ``encoder.*`` = a timm-style ViT (``patch_embed.proj``, ``cls_token``, [``dist_token``],
  ``pos_embed``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``;
  its ImageNet ``head``/``head_dist`` are skipped);
  ``decoder.head`` (``DecoderLinear``) or, for ``MaskTransformer``: ``decoder.proj_dec``,
  ``decoder.cls_emb`` (1, K, d), ``decoder.blocks.{i}.*`` (same block as the encoder's),
  ``decoder.proj_patch`` / ``decoder.proj_classes`` (raw (d, d) Parameters applied as
  ``x @ W``, exactly kseg's ``proj_patch`` / ``proj_classes``: no transpose),
  ``decoder.decoder_norm``, ``decoder.mask_norm`` (LayerNorm over K).
- **MMSegmentation 1.x** (``configs/segmenter``; ``state_dict`` wrapper), names verified in
  ``mmseg/models/backbones/vit.py`` and ``decode_heads/segmenter_mask_head.py``:
  ``backbone.*`` = mmseg ``VisionTransformer`` (mapped by :mod:`kseg.convert.vit`: ``ln1`` /
  ``attn.attn.in_proj_*`` / ``ffn.layers.0.0`` ..., final ``ln1``);
  ``decode_head.*`` = ``SegmenterMaskTransformerHead``: ``dec_proj``, ``cls_emb``,
  ``layers.{i}`` (mmseg ``TransformerEncoderLayer``, same renames as the backbone),
  ``patch_proj.weight`` / ``classes_proj.weight`` (bias-free ``nn.Linear``, i.e. ``x @ W.T``:
  transposed into kseg's ``x @ W`` parameters), ``decoder_norm``, ``mask_norm``; or the
  linear decoder of ``segmenter_vit-s_fcn``: ``FCNHead(num_convs=0)`` whose only weight is
  ``decode_head.conv_seg`` (1x1 conv (K, D, 1, 1) == Linear(D, K)). A ``conv_seg`` left in a
  mask-head checkpoint by old mmseg versions is skipped (unused).
- **Encoder-only**: any ViT/DeiT checkpoint :func:`kseg.convert.vit.load_vit` reads (timm,
  Hugging Face, Google ``.npz``, mmseg backbone, e.g. the ``vit_*_p16_384`` pretraining
  weights): loaded into the encoder, the decoder left at initialisation (a note says so).

Both full layouts are first renamed to the authors' names (the canonical names used in
messages, with the stored name added), then bound to variables by walking the model
(``model.encoder.blocks[i]...``, ``model.decode_head.blocks[i]...``), never by position.
Every shape is checked before anything is assigned. Position embeddings stored for another
grid are resampled (see :mod:`kseg.convert.vit`).

Numerical notes: the authors' encoder uses PyTorch's LayerNorm epsilon 1e-5 (kseg's ViT: 1e-6,
timm/mmseg); the difference on trained weights is far below the logits' float32 noise.
"""

import re

import numpy as np

from kseg.convert.common import (
    LoadReport,
    ShapeMismatchError,
    Target,
    assign_all,
    check_shapes,
    dense_targets,
    identity,
    norm_targets,
)
from kseg.convert.vit import bind_encoder, block_targets, load_vit_state, read_vit_checkpoint, rename_key

AUTHORS, MMSEG, ENCODER_ONLY = "authors", "mmseg", "encoder"

# mmseg TransformerEncoderLayer -> timm/authors' Block names (inside decode_head.layers.{i}).
_MM_BLOCK = (
    (r"ln1\.", "norm1."),
    (r"ln2\.", "norm2."),
    (r"attn\.attn\.in_proj_(weight|bias)$", r"attn.qkv.\1"),
    (r"attn\.attn\.out_proj\.", "attn.proj."),
    (r"ffn\.layers\.0\.0\.", "mlp.fc1."),
    (r"ffn\.layers\.1\.", "mlp.fc2."),
)
_MM_BLOCK = tuple((re.compile(p), r) for p, r in _MM_BLOCK)
_NOT_WEIGHTS = re.compile(r"(^|\.)(num_batches_tracked|loss_decode\..*)$|^data_preprocessor\.")


# --------------------------------------------------------------------------- shared helpers

def strip_module(state):
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def prefixed_encoder(encoder, state, prefix, report):
    """Binds the encoder part (``state`` keys already without ``prefix``) and returns
    ``(state, targets)`` keyed ``prefix + timm name``; the encoder's skips/notes/info go into
    ``report`` (``origin`` maps canonical -> stored names)."""
    enc_state, enc_targets, enc_report = bind_encoder(encoder, state)
    report.skipped.update({prefix + k: why for k, why in enc_report.skipped.items()})
    report.notes += enc_report.notes
    report.info["encoder"] = {k: v for k, v in enc_report.info.items() if not k.endswith("_desc")}
    report.info["encoder_desc"] = (enc_report.info["ckpt_desc"], enc_report.info["model_desc"])
    report.info["encoder_layout"] = enc_report.layout
    out_state = {prefix + k: v for k, v in enc_state.items()}
    out_targets = {prefix + k: Target(prefix + k, t.variable, t.transform) for k, t in enc_targets.items()}
    return out_state, out_targets


def finish_load(model, state, targets, report, strict, hint, what, origin=None, skip_keys=(), skip_reason=""):
    """Checks every present target, raises on mismatches / (strict) unknown or missing keys,
    then assigns. ``origin``: canonical -> stored key (for messages). Nothing is assigned
    when it raises."""
    origin = origin or {}
    for key in list(state):
        if key in skip_keys:
            report.skipped[origin.get(key, key)] = skip_reason
            state.pop(key)
    targets = {k: t for k, t in targets.items() if t.key not in skip_keys}
    wanted = {t.key for t in targets.values()}
    report.unexpected = sorted(origin.get(k, k) for k in state if k not in wanted)
    report.missing = sorted({t.key for t in targets.values() if t.key not in state})

    def full_hint(key, ckpt_shape, want):
        stored = f" (stored as {origin[key]!r})" if key in origin and origin[key] != key else ""
        return f"{hint(key, ckpt_shape, want)}{stored}"

    pairs = check_shapes([t for t in targets.values() if t.key in state], state, hint=full_hint)
    if strict and (report.unexpected or report.missing):
        raise ValueError(
            f"checkpoint does not match {what}: {len(report.unexpected)} unexpected keys "
            f"{report.unexpected[:4]}, {len(report.missing)} missing keys {report.missing[:4]}. "
            "Pass strict=False to load the matching keys."
        )
    assign_all(pairs)
    report.loaded = sorted({origin.get(t.key, t.key) for t, _ in pairs})
    assigned = {id(t.variable) for t, _ in pairs}
    report.untouched = [w.path for w in model.weights if id(w) not in assigned]
    return report


# --------------------------------------------------------------------------- layouts


def detect_layout(state):
    """``"authors"``, ``"mmseg"`` or ``"encoder"`` (no decoder keys: a bare ViT) from the keys."""
    keys = list(state)
    if any(k.startswith("decoder.") for k in keys):
        return AUTHORS
    if any(k.startswith("decode_head.") for k in keys):
        return MMSEG
    return ENCODER_ONLY


def _mmseg_head_to_authors(state, report, origin):
    """``decode_head.*`` (mmseg) -> ``decoder.*`` (authors' names and layouts)."""
    out = {}
    mask = "decode_head.cls_emb" in state
    for key, value in state.items():
        name = key[len("decode_head."):]
        value = np.asarray(value)
        if name.startswith("conv_seg.") and mask:
            report.skipped[key] = "mmseg BaseDecodeHead.conv_seg: unused by SegmenterMaskTransformerHead"
            continue
        if name.startswith("conv_seg."):  # FCNHead(num_convs=0): a 1x1 conv == the linear head
            new = "head." + name[len("conv_seg."):]
            if value.ndim == 4:
                if value.shape[2:] != (1, 1):
                    raise ShapeMismatchError(
                        f"checkpoint key {key!r} has shape {value.shape}: a {value.shape[2]}x{value.shape[3]} "
                        "conv, but Segmenter's linear decoder is a 1x1 conv (FCNHead num_convs=0, kernel_size=1)")
                value = value[:, :, 0, 0]
        elif name in ("patch_proj.weight", "classes_proj.weight"):
            new = "proj_patch" if name.startswith("patch") else "proj_classes"
            value = value.T  # nn.Linear computes x @ W.T; the authors' / kseg parameter is used as x @ P
        elif name == "dec_proj.weight" or name == "dec_proj.bias":
            new = "proj_dec." + name.split(".", 1)[1]
        elif m := re.match(r"layers\.(\d+)\.(.*)$", name):
            rest = m.group(2)
            for pat, repl in _MM_BLOCK:
                if pat.match(rest):
                    rest = pat.sub(repl, rest)
                    break
            new = f"blocks.{m.group(1)}.{rest}"
        else:
            new = name  # cls_emb, decoder_norm.*, mask_norm.* keep their names
        out["decoder." + new] = value
        origin["decoder." + new] = key
    return out


def _split(state):
    """Authors'/mmseg state -> ``(layout, encoder part without prefix, decoder part keyed
    decoder.*, report, origin)``."""
    layout = detect_layout(state)
    report, origin = LoadReport(), {}
    for key in [k for k in state if _NOT_WEIGHTS.search(k)]:
        report.skipped[key] = "not a weight (BatchNorm counter, loss buffer, preprocessor)"
        state.pop(key)
    enc_prefix = "encoder." if layout == AUTHORS else "backbone."
    enc = {k[len(enc_prefix):]: v for k, v in state.items() if k.startswith(enc_prefix)}
    rest = {k: v for k, v in state.items() if not k.startswith(enc_prefix)}
    if layout == MMSEG:
        heads = {k: v for k, v in rest.items() if k.startswith("decode_head.")}
        dec = _mmseg_head_to_authors(heads, report, origin)
        other = {k: v for k, v in rest.items() if not k.startswith("decode_head.")}
    else:
        dec = {k: np.asarray(v) for k, v in rest.items() if k.startswith("decoder.")}
        other = {k: v for k, v in rest.items() if not k.startswith("decoder.")}
    dec.update(other)  # anything else: reported as unexpected
    return layout, enc, dec, report, origin


def describe_checkpoint(state):
    """What a Segmenter checkpoint holds: ``layout``, ``decoder`` ("linear" / "mask" / None for
    encoder-only), ``num_classes``, ``decoder_layers``, ``embed_dim``, ``depth``."""
    state = strip_module(dict(state))
    layout = detect_layout(state)
    info = {"layout": layout, "decoder": None, "num_classes": None, "decoder_layers": None}
    if layout == AUTHORS:
        cls, head, blk = "decoder.cls_emb", "decoder.head.weight", r"decoder\.blocks\.(\d+)\."
        enc = "encoder."
    elif layout == MMSEG:
        cls, head, blk = "decode_head.cls_emb", "decode_head.conv_seg.weight", r"decode_head\.layers\.(\d+)\."
        enc = "backbone."
    else:
        cls = head = blk = None
        enc = ""
    if cls and cls in state:
        info.update(decoder="mask", num_classes=int(np.shape(state[cls])[1]),
                    decoder_layers=len({m.group(1) for k in state if (m := re.match(blk, k))}))
    elif head and head in state:
        info.update(decoder="linear", num_classes=int(np.shape(state[head])[0]))
    depth = {m.group(1) for k in state if (m := re.match(re.escape(enc) + r"(?:blocks|layers)\.(\d+)\.", k))}
    proj = next((v for k, v in state.items() if k in (enc + "patch_embed.proj.weight",
                                                        enc + "patch_embed.projection.weight")), None)
    info["depth"] = len(depth) or None
    info["embed_dim"] = None if proj is None else int(np.shape(proj)[0])
    return info


def decoder_targets(model):
    """``{authors' key: Target}`` for every variable of the model's decode head."""
    head, t = model.decode_head, {}
    if model.decoder == "linear":
        dense_targets(t, "decoder.head", head.head)
        return t
    t["decoder.cls_emb"] = Target("decoder.cls_emb", head.cls_emb, identity)
    dense_targets(t, "decoder.proj_dec", head.proj_dec)
    for i, blk in enumerate(head.blocks):
        block_targets(t, f"decoder.blocks.{i}", blk)
    t["decoder.proj_patch"] = Target("decoder.proj_patch", head.proj_patch, identity)
    t["decoder.proj_classes"] = Target("decoder.proj_classes", head.proj_classes, identity)
    norm_targets(t, "decoder.decoder_norm", head.decoder_norm)
    norm_targets(t, "decoder.mask_norm", head.mask_norm)
    return t


CLASS_KEYS = ("decoder.head.weight", "decoder.head.bias", "decoder.cls_emb", "decoder.mask_norm.weight",
              "decoder.mask_norm.bias")


def load_segmenter(model, source, strict=True, skip_classifier=False):
    """Loads a Segmenter (or bare ViT) checkpoint into a kseg ``Segmenter``, in place.

    Args:
      model: a ``kseg.models.Segmenter`` (built first if needed) of the checkpoint's
        architecture: encoder width/depth/patch, decoder kind (linear / mask), decoder layers,
        number of classes.
      source: a ``.pth`` / ``.safetensors`` / folder / ``.npz`` path or ``{key: array or tensor}``
        mapping in a layout of the module docstring.
      strict: raise on checkpoint keys that map to nothing or model keys it lacks.
      skip_classifier: leave the class-count dependent weights (linear ``head``; mask
        ``cls_emb`` and ``mask_norm``) at initialisation, e.g. to fine-tune on other classes.
    Returns: :class:`LoadReport` (``layout``; ``info``: :func:`describe_checkpoint`).
    Raises: ValueError: a decoder kind that differs from the model's; a
      ``ShapeMismatchError`` naming the key, both shapes and the likely cause (another
      variant or class count); with ``strict``, unexpected/missing keys. Nothing is assigned
      when it raises.
    """
    if not model.built:
        model.build((None, None, None, 3))
    state, is_jax = read_vit_checkpoint(source)
    state = strip_module(state)
    info = describe_checkpoint(state)
    if info["layout"] == ENCODER_ONLY:
        if any(k.startswith(("encoder.blocks.", "encoder.patch_embed.proj.")) for k in state):
            state = {k[len("encoder."):] if k.startswith("encoder.") else k: v for k, v in state.items()}
        report = load_vit_state(model, state, is_jax, strict)
        report.info["checkpoint"] = info
        return report
    model_desc = (f"{model.variant or 'segmenter_' + model.backbone_name} ({model.decoder} decoder, "
                  f"{model.num_classes} classes, encoder depth {model.encoder.depth}"
                  + (f", {model.decoder_layers} decoder layers)" if model.decoder == "mask" else ")"))
    if info["decoder"] is not None and info["decoder"] != model.decoder:
        raise ValueError(
            f"checkpoint has a {info['decoder']} decoder but the model is {model_desc}; build a "
            f"segmenter_*_{info['decoder']} variant")
    layout, enc, dec, report, origin = _split(state)
    report.layout = ("Segmenter, authors' layout (rstrudel/segmenter)" if layout == AUTHORS
                     else "Segmenter, MMSegmentation 1.x layout")
    report.info["checkpoint"] = info
    enc_state, enc_targets = prefixed_encoder(model.encoder, enc, "encoder.", report)
    if layout == MMSEG:
        for k in enc:
            name = "encoder." + rename_key(k)[0]
            origin.setdefault(name, "backbone." + k)
    ckpt_enc, model_enc = report.info.pop("encoder_desc")
    state = {**enc_state, **dec}
    targets = {**enc_targets, **decoder_targets(model)}
    n_ckpt = info["num_classes"]

    def hint(key, ckpt_shape, want):
        if key in CLASS_KEYS:
            return (f"another class count: the checkpoint has {n_ckpt} classes, the model {model.num_classes}; "
                    f"build the model with num_classes={n_ckpt}, or pass skip_classifier=True to fine-tune a "
                    "fresh classifier")
        if key.startswith("encoder."):
            return f"another encoder (checkpoint: {ckpt_enc}; model: {model_enc})"
        return f"another decoder (model: {model_desc}; checkpoint: {info['decoder_layers']} decoder layers)"

    finish_load(model, state, targets, report, strict, hint, model_desc, origin,
                skip_keys=CLASS_KEYS if skip_classifier else (),
                skip_reason="class-dependent weights skipped (skip_classifier): left at initialisation")
    return report


__all__ = ["load_segmenter", "describe_checkpoint", "detect_layout", "decoder_targets", "ShapeMismatchError"]
