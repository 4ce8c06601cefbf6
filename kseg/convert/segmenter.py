"""Segmenter checkpoints -> a kseg ``Segmenter`` (linear or mask-transformer decoder).

Accepted layouts (recognised from the keys; a leading ``module.`` is stripped):

- **Authors'** (github.com/rstrudel/segmenter, ``checkpoint.pth`` with the weights under
  ``"model"``, unwrapped by :func:`kseg.convert.io.read_state_dict`), names verified in
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

Settings that travel with the authors' checkpoints (:func:`describe_checkpoint` ``config``):
the position grid of their training crop (``image_size`` 512 -> 32x32, so the model is built
with ``img_size=512`` and nothing is resampled), PyTorch's LayerNorm epsilon 1e-5 in the
encoder (``nn.LayerNorm(d_model)`` in ``segm/model/blocks.py``; kseg's ViT default is timm's
1e-6) and bilinear run-time resampling of the position embedding (``resize_pos_embed`` in
``segm/model/utils.py``). mmseg's Segmenter keeps 1e-6 and bicubic (its ``VisionTransformer``).
"""

import re

import numpy as np

from kseg.convert import vit
from kseg.convert.common import (
    ShapeMismatchError,
    Target,
    dense_targets,
    identity,
    norm_targets,
)
from kseg.convert.loader import (
    Binding,
    Converter,
    load,
    register_converter,
    strip_module,
)

AUTHORS, MMSEG, ENCODER_ONLY = "authors", "mmseg", "encoder"
NOT_WEIGHTS = re.compile(r"(^|\.)(num_batches_tracked|loss_decode\..*)$|^data_preprocessor\.")
# mmseg TransformerEncoderLayer -> timm/authors' Block names (inside decode_head.layers.{i}).
_MM_BLOCK = tuple((re.compile(p), r) for p, r in (
    (r"ln1\.", "norm1."),
    (r"ln2\.", "norm2."),
    (r"attn\.attn\.in_proj_(weight|bias)$", r"attn.qkv.\1"),
    (r"attn\.attn\.out_proj\.", "attn.proj."),
    (r"ffn\.layers\.0\.0\.", "mlp.fc1."),
    (r"ffn\.layers\.1\.", "mlp.fc2."),
))
CLASS_KEYS = {"decoder.head.weight", "decoder.head.bias", "decoder.cls_emb", "decoder.mask_norm.weight",
              "decoder.mask_norm.bias"}


def detect_layout(state):
    """``"authors"``, ``"mmseg"`` or ``"encoder"`` (no decoder keys: a bare ViT) from the keys."""
    if any(k.startswith("decoder.") for k in state):
        return AUTHORS
    if any(k.startswith("decode_head.") for k in state):
        return MMSEG
    return ENCODER_ONLY


def _mmseg_head_to_authors(state, skipped, origin):
    """``decode_head.*`` (mmseg) -> ``decoder.*`` (authors' names and layouts)."""
    out = {}
    mask = "decode_head.cls_emb" in state
    for key, value in state.items():
        name, value = key[len("decode_head."):], np.asarray(value)
        if name.startswith("conv_seg.") and mask:
            skipped[key] = "mmseg BaseDecodeHead.conv_seg: unused by SegmenterMaskTransformerHead"
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
        elif name.startswith("dec_proj."):
            new = "proj_dec." + name.split(".", 1)[1]
        elif m := re.match(r"layers\.(\d+)\.(.*)$", name):
            rest = m.group(2)
            rest = next((pat.sub(repl, rest) for pat, repl in _MM_BLOCK if pat.match(rest)), rest)
            new = f"blocks.{m.group(1)}.{rest}"
        else:
            new = name  # cls_emb, decoder_norm.*, mask_norm.* keep their names
        out["decoder." + new] = value
        origin["decoder." + new] = key
    return out


def describe_checkpoint(state):
    """What a Segmenter checkpoint holds: ``layout``, ``decoder`` ("linear" / "mask" / None for
    encoder-only), ``num_classes``, ``decoder_layers``, ``embed_dim``, ``depth``, and for the
    registry ``config`` (the kseg constructor settings it implies) and ``summary``."""
    state = strip_module(dict(state))
    layout = detect_layout(state)
    enc_prefix, head = {AUTHORS: ("encoder.", "decoder."), MMSEG: ("backbone.", "decode_head."),
                        ENCODER_ONLY: ("", None)}[layout]
    info = {"layout": layout, "decoder": None, "num_classes": None, "decoder_layers": None}
    cls = state.get(f"{head}cls_emb") if head else None
    linear = state.get("decoder.head.weight" if layout == AUTHORS else "decode_head.conv_seg.weight")
    if cls is not None:
        layers = {m.group(1) for k in state if (m := re.match(rf"{head}(?:blocks|layers)\.(\d+)\.", k))}
        info.update(decoder="mask", num_classes=int(np.shape(cls)[1]), decoder_layers=len(layers),
                    decoder_dim=int(np.shape(cls)[2]))
    elif linear is not None and layout != ENCODER_ONLY:
        info.update(decoder="linear", num_classes=int(np.shape(linear)[0]))
    if layout == ENCODER_ONLY and any(k.startswith(("encoder.blocks.", "encoder.patch_embed.")) for k in state):
        enc_prefix = "encoder."  # the authors' encoder alone
    enc, _, _, _ = vit.normalize_keys({k[len(enc_prefix):]: v for k, v in state.items() if k.startswith(enc_prefix)})
    arch = vit.describe_checkpoint(enc)
    info.update(embed_dim=arch["embed_dim"], depth=arch["depth"] or None)
    config = vit.backbone_config(arch)
    if info["decoder"]:
        config["decoder"] = info["decoder"]
    if info["decoder"] == "mask":
        config.update(decoder_layers=info["decoder_layers"], decoder_dim=info["decoder_dim"])
    if layout == AUTHORS:  # segm/model/blocks.py nn.LayerNorm (1e-5); utils.resize_pos_embed (bilinear)
        config.update(norm_epsilon=1e-5, pos_embed_interpolation="bilinear")
    info["config"] = config
    info["summary"] = (f"{layout} layout, encoder width {info['embed_dim']}, depth {info['depth']}, "
                       + ("no decoder (encoder-only)" if info["decoder"] is None
                          else f"{info['decoder']} decoder, {info['num_classes']} classes"))
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
        vit.block_targets(t, f"decoder.blocks.{i}", blk)
    t["decoder.proj_patch"] = Target("decoder.proj_patch", head.proj_patch, identity)
    t["decoder.proj_classes"] = Target("decoder.proj_classes", head.proj_classes, identity)
    norm_targets(t, "decoder.decoder_norm", head.decoder_norm)
    norm_targets(t, "decoder.mask_norm", head.mask_norm)
    return t


def encoder_only(model, state, info):
    """Binds a bare ViT (keys optionally under ``encoder.``) to ``model.encoder``."""
    if any(k.startswith(("encoder.blocks.", "encoder.patch_embed.")) for k in state):
        state = {k.removeprefix("encoder."): v for k, v in state.items()}
    b = vit.bind_encoder(model.encoder, state)
    b.notes.append("encoder loaded; decode heads left at initialisation")
    b.info["checkpoint"] = info
    return b


def bind(model, state):
    """Binds an authors' / mmseg Segmenter checkpoint (or a bare ViT) to a kseg ``Segmenter``.

    Raises: ValueError for a decoder kind that differs from the model's (naming the variant
    to build); ShapeMismatchError for a linear head stored as a wider conv.
    """
    state = strip_module(state)
    info = describe_checkpoint(state)
    if info["layout"] == ENCODER_ONLY:
        return encoder_only(model, state, info)
    what = (f"{model.variant or 'segmenter_' + model.backbone_name} ({model.decoder} decoder, {model.num_classes} "
            f"classes, encoder depth {model.encoder.depth}"
            + (f", {model.decoder_layers} decoder layers)" if model.decoder == "mask" else ")"))
    if info["decoder"] is not None and info["decoder"] != model.decoder:
        raise ValueError(f"checkpoint has a {info['decoder']} decoder but the model is {what}; build a "
                         f"segmenter_*_{info['decoder']} variant")
    skipped, origin = {}, {}
    for key in [k for k in state if NOT_WEIGHTS.search(k)]:
        skipped[key] = "not a weight (BatchNorm counter, loss buffer, preprocessor)"
        state.pop(key)
    enc_prefix = "encoder." if info["layout"] == AUTHORS else "backbone."
    enc = {k[len(enc_prefix):]: v for k, v in state.items() if k.startswith(enc_prefix)}
    rest = {k: v for k, v in state.items() if not k.startswith(enc_prefix)}
    if info["layout"] == MMSEG:
        heads = {k: v for k, v in rest.items() if k.startswith("decode_head.")}
        rest = {**{k: v for k, v in rest.items() if k not in heads}, **_mmseg_head_to_authors(heads, skipped, origin)}
    n_ckpt = info["num_classes"]

    def decoder_hint(key, ckpt_shape, want):
        if key in CLASS_KEYS:
            return (f"another class count: the checkpoint has {n_ckpt} classes, the model {model.num_classes}; build "
                    f"the model with num_classes={n_ckpt}, or pass skip_classifier=True to fine-tune a fresh classifier")
        return f"another decoder (model: {what}; checkpoint: {info['decoder_layers']} decoder layers)"

    b = Binding(rest, decoder_targets(model), skipped=skipped, origin=origin, info={"checkpoint": info},
                classifier=CLASS_KEYS, hints=[("decoder.", decoder_hint)], what=what,
                layout=("Segmenter, authors' layout (rstrudel/segmenter)" if info["layout"] == AUTHORS
                        else "Segmenter, MMSegmentation 1.x layout"))
    return b.add(vit.bind_encoder(model.encoder, enc), "encoder.", enc_prefix)


def load_segmenter(model, source, strict=True, skip_classifier=False):
    """:func:`kseg.convert.load` into a kseg ``Segmenter`` (``skip_classifier``: the linear
    ``head``; the mask decoder's ``cls_emb`` and ``mask_norm``). Raises ValueError for a checkpoint
    of the other decoder kind, naming the variant to build."""
    return load(model, source, CONVERTER, strict, skip_classifier)


def detect(state):
    """A full Segmenter checkpoint (authors' or mmseg's; a bare ViT is no family's)."""
    keys = set(strip_module(dict.fromkeys(state)))
    if any(k.startswith("decoder.") for k in keys) and any(k.startswith("encoder.") for k in keys):
        return True
    head = {k for k in keys if k.startswith("decode_head.")}
    return "decode_head.cls_emb" in head or (
        bool(head) and head <= {"decode_head.conv_seg.weight", "decode_head.conv_seg.bias"}
        and any(k.startswith("backbone.layers.") for k in keys))


CONVERTER = register_converter(Converter(
    family="segmenter", bind=bind, describe=describe_checkpoint, detect=detect,
    layouts="authors' checkpoint.pth (rstrudel/segmenter), MMSegmentation Segmenter; or a bare ViT/DeiT (timm, HF, "
            "Google .npz, mmseg backbone) into the encoder, decoder left fresh"))
