"""SETR checkpoints -> a kseg ``SETR`` (Naive, PUP or MLA decoder, with auxiliary heads).

Accepted layouts (recognised from the keys; a leading ``module.`` is stripped):

- **Authors'** (github.com/fudan-zvg/SETR, MMSegmentation 0.x; ``state_dict`` wrapper), names
  verified in ``mmseg/models/backbones/{vit,vit_mla}.py`` and
  ``mmseg/models/decode_heads/{vit_up_head,vit_mla_head,vit_mla_auxi_head,decode_head}.py``:
  ``backbone.*`` = timm-style ViT (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
  ``blocks.{i}.*``; no final norm); for MLA the neck lives inside the backbone (``VIT_MLA``):
  ``backbone.norm_{0..3}`` and ``backbone.mla.mla_p{2..5}_1x1.{0: conv, 1: BN}``,
  ``backbone.mla.mla_p{2..5}.{0,1}``.
  Naive/PUP heads (``VisionTransformerUpHead``): ``decode_head.norm``, ``conv_{i}``,
  ``syncbn_fc_{i}``, classifier ``conv_{1|4}``; auxiliary heads ``auxiliary_head.{j}.*`` alike
  (``num_conv=2``: ``conv_0`` + ``syncbn_fc_0`` + ``conv_1``).
  MLA head (``VIT_MLAHead``): ``decode_head.mlahead.head{2..5}.{0,1,3,4}`` (conv, BN, conv,
  BN), ``decode_head.cls``; MLA auxiliary heads (``VIT_MLA_AUXIHead``, in_channels 256):
  ``auxiliary_head.{j}.aux``. ``conv_seg`` (mmseg 0.x ``BaseDecodeHead``, never used by these
  heads) is skipped.
- **MMSegmentation 1.x** (``configs/setr``; ``state_dict`` wrapper), names verified in
  ``mmseg/models/backbones/vit.py``, ``necks/mla_neck.py``,
  ``decode_heads/{setr_up_head,setr_mla_head}.py``:
  ``backbone.*`` = mmseg ``VisionTransformer`` (renamed by :mod:`kseg.convert.vit`);
  ``SETRUPHead``: ``decode_head.norm``, ``up_convs.{i}.0.{conv,bn}`` (``ConvModule``: the conv
  has no bias next to its BN, kseg's conv bias is set to 0), classifier ``conv_seg``;
  ``MLANeck``: ``neck.norm.{i}``, ``neck.mla.channel_proj.{i}.{conv,bn}`` (tap i, shallow
  first), ``neck.mla.feat_extract.{j}.{conv,bn}``; ``SETRMLAHead``:
  ``decode_head.mlahead.head{2..5}.{0,1,3,4}``, 3x3 classifier ``conv_seg``; MLA auxiliary
  heads ``FCNHead(num_convs=0)``: ``auxiliary_head.{j}.conv_seg``.
  mmseg's ``MLAModule`` emits its streams deepest first (``feat_extract[j]`` smooths the sum
  of the ``4-j`` deepest taps; ``head2`` / ``in_index=0`` read the deepest-only stream) while
  the authors' and kseg's order is shallowest (all taps summed) first, so ``feat_extract.{j}``
  -> ``mla_p{5-j}``, ``head{k}`` -> ``head{7-k}``, ``auxiliary_head.{j}`` -> ``{3-j}`` (for the
  configs' ``in_index=j``), and the classifier's four 128-channel input blocks are reversed.
  The MLA ``FCNHead`` classifier has a bias that kseg's (authors') auxiliary head lacks: a zero
  bias is dropped silently, another one with a note (auxiliary heads only train).
  mmseg's ADE20K Naive/PUP configs use two-conv auxiliary heads (``num_convs=2``) that kseg's
  one-conv + classifier auxiliary heads cannot hold: they are skipped with a note (the main
  head, the only one used at inference, loads completely).

Keys are renamed to the authors' names (the names used in messages, with the stored name
added), then bound by walking the model (``model.mla_neck.reduce[i]``,
``model.decode_head.convs[i]``, ``model.aux[j]`` ...). BatchNorm ``running_mean``/
``running_var`` -> ``moving_mean``/``moving_variance`` (``num_batches_tracked`` skipped).

Settings that travel with every authors' and mmseg SETR checkpoint (:func:`describe_checkpoint`
``config``): the ImageNet mean/std (``img_norm_cfg`` of every dataset config; kseg's ViT
default is Google's 127.5 / 127.5), the position grid of the training crop, the head width,
bilinear position resampling (the authors' ``pos_embed_interp``, mmseg's
``interpolate_mode='bilinear'`` in ``_base_/models/setr_*.py``).
"""

import re

import numpy as np

from kseg.backbones.normalization import IMAGENET_MEAN, IMAGENET_STD
from kseg.convert import vit
from kseg.convert.common import batchnorm_targets, conv_targets, norm_targets
from kseg.convert.loader import (
    Binding,
    Converter,
    load,
    register_converter,
    strip_module,
)
from kseg.convert.segmenter import AUTHORS, ENCODER_ONLY, MMSEG, NOT_WEIGHTS


def detect_layout(state):
    """``"authors"``, ``"mmseg"`` or ``"encoder"`` (no SETR head/neck keys: a bare ViT)."""
    keys = list(state)
    if not any(k.startswith(("decode_head.", "auxiliary_head.", "neck.", "backbone.mla.", "backbone.norm_"))
               for k in keys):
        return ENCODER_ONLY
    if any(k.startswith(("neck.", "backbone.layers.", "backbone.patch_embed.projection.")) or ".up_convs." in k
           for k in keys):
        return MMSEG
    return AUTHORS


def _decoder_kind(state, layout):
    keys = set(state)
    if any(k.startswith(("backbone.mla.", "neck.", "decode_head.mlahead.")) for k in keys):
        return "mla"
    if layout == MMSEG:
        if any(k.startswith("decode_head.up_convs.3.") for k in keys):
            return "pup"
        return "naive" if any(k.startswith("decode_head.up_convs.") for k in keys) else None
    if "decode_head.conv_4.weight" in keys:
        return "pup"
    return "naive" if "decode_head.conv_1.weight" in keys else None


def describe_checkpoint(state):
    """``layout``, ``decoder`` (naive/pup/mla or None), ``num_classes``, ``num_aux`` of a SETR
    checkpoint, and for the registry ``config`` and ``summary``."""
    state = strip_module(dict(state))
    layout = detect_layout(state)
    kind = _decoder_kind(state, layout) if layout != ENCODER_ONLY else None
    cls = None
    if layout == AUTHORS:
        cls = {"mla": "decode_head.cls.weight", "pup": "decode_head.conv_4.weight",
               "naive": "decode_head.conv_1.weight"}.get(kind)
    elif layout == MMSEG:
        cls = "decode_head.conv_seg.weight"
    aux = {m.group(1) for k in state if (m := re.match(r"auxiliary_head\.(\d+)\.", k))}
    info = {"layout": layout, "decoder": kind, "num_aux": len(aux),
            "num_classes": int(np.shape(state[cls])[0]) if cls in state else None}
    prefix = "" if layout == ENCODER_ONLY else "backbone."
    enc = vit.normalize_keys({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)
                              and not re.match(r"backbone\.(mla\.|norm_\d)", k)})[0]
    config = vit.backbone_config(vit.describe_checkpoint(enc))
    if kind:
        config.update(decoder=kind, aux_heads=bool(aux), mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                      pos_embed_interpolation="bilinear")
        width = state.get("decode_head.conv_0.weight", state.get("decode_head.up_convs.0.0.conv.weight"))
        if kind != "mla" and width is not None:
            config["channels"] = int(np.shape(width)[0])
    info["config"] = config
    info["summary"] = f"{layout} layout, " + ("no decoder (encoder-only)" if kind is None else
                                              f"{kind} decoder, {info['num_classes']} classes, {len(aux)} auxiliary heads")
    return info


# --------------------------------------------------------------------------- mmseg -> authors' names


def _mmseg_to_authors(state, kind, num_levels, skipped, notes, origin):
    """mmseg 1.x head/neck keys -> authors' names (arrays permuted where the orders differ)."""
    out = {}

    def put(new, value, old):
        out[new] = np.asarray(value)
        origin[new] = old

    aux_convs = {}
    for key in state:
        if m := re.match(r"auxiliary_head\.(\d+)\.up_convs\.(\d+)\.", key):
            aux_convs.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    for key, value in state.items():
        value = np.asarray(value)
        if m := re.match(r"neck\.norm\.(\d+)\.(weight|bias)$", key):
            put(f"backbone.norm_{m.group(1)}.{m.group(2)}", value, key)
        elif m := re.match(r"neck\.mla\.(channel_proj|feat_extract)\.(\d+)\.(conv|bn)\.(\w+)$", key):
            i = int(m.group(2))
            k = i + 2 if m.group(1) == "channel_proj" else num_levels + 1 - i
            name = f"mla_p{k}_1x1" if m.group(1) == "channel_proj" else f"mla_p{k}"
            put(f"backbone.mla.{name}.{0 if m.group(3) == 'conv' else 1}.{m.group(4)}", value, key)
        elif m := re.match(r"decode_head\.mlahead\.head(\d+)\.(.+)$", key):
            put(f"decode_head.mlahead.head{num_levels + 3 - int(m.group(1))}.{m.group(2)}", value, key)
        elif kind == "mla" and key.startswith("decode_head.conv_seg."):
            if key.endswith(".weight"):
                blocks = np.split(value, num_levels, axis=1)  # (K, 4*C, 3, 3): reverse the input blocks
                value = np.concatenate(blocks[::-1], axis=1)
            put("decode_head.cls." + key.rsplit(".", 1)[1], value, key)
        elif m := re.match(r"auxiliary_head\.(\d+)\.conv_seg\.(weight|bias)$", key) if kind == "mla" else None:
            j = num_levels - 1 - int(m.group(1))
            if m.group(2) == "bias":
                if np.any(value != 0):
                    notes.append(f"{key}: non-zero bias dropped (kseg's MLA auxiliary head, like the "
                                        "authors' VIT_MLA_AUXIHead, has none; auxiliary heads only train)")
                skipped[key] = "bias of mmseg's FCNHead auxiliary classifier (kseg's has none)"
                continue
            put(f"auxiliary_head.{j}.aux.weight", value, key)
        elif m := re.match(r"(decode_head|auxiliary_head\.\d+)\.(norm|up_convs|conv_seg)\.(.+)$", key):
            head, part, rest = m.groups()
            n_convs = (len({int(x.group(1)) for k in state if (x := re.match(r"decode_head\.up_convs\.(\d+)\.", k))})
                       if head == "decode_head" else len(aux_convs.get(int(head.split(".")[1]), ())))
            if head != "decode_head" and n_convs != 1:
                skipped[key] = (f"mmseg SETRUPHead auxiliary head with num_convs={n_convs}: kseg's auxiliary "
                                       "heads (the authors') have one conv + classifier; left at initialisation")
                continue
            if part == "norm":
                put(f"{head}.norm.{rest}", value, key)
            elif part == "conv_seg":
                put(f"{head}.conv_{n_convs}.{rest}", value, key)
            else:
                i, sub, leaf = re.match(r"(\d+)\.0\.(conv|bn)\.(\w+)$", rest).groups()
                if sub == "conv":
                    put(f"{head}.conv_{i}.{leaf}", value, key)
                    if f"{head}.conv_{i}.bias" not in out:  # ConvModule: no bias before its BN
                        out[f"{head}.conv_{i}.bias"] = np.zeros(value.shape[0], value.dtype)
                        origin[f"{head}.conv_{i}.bias"] = f"{key} (no bias in mmseg's ConvModule: zeros)"
                else:
                    put(f"{head}.syncbn_fc_{i}.{leaf}", value, key)
        else:
            put(key, value, key)  # unknown: reported as unexpected under its own name
    return out


# --------------------------------------------------------------------------- binding


def _up_head(t, key, head):
    norm_targets(t, f"{key}.norm", head.norm)
    for i, (conv, bn) in enumerate(zip(head.convs, head.bns)):
        conv_targets(t, f"{key}.conv_{i}", conv)
        batchnorm_targets(t, f"{key}.syncbn_fc_{i}", bn)
    conv_targets(t, f"{key}.conv_{len(head.convs)}", head.cls)


def head_targets(model):
    """``{authors' key: Target}`` for the neck, decode head and auxiliary heads of a kseg SETR."""
    t = {}
    if model.decoder == "mla":
        neck = model.mla_neck
        for i in range(neck.num_levels):
            k = i + 2
            norm_targets(t, f"backbone.norm_{i}", neck.norms[i])
            conv_targets(t, f"backbone.mla.mla_p{k}_1x1.0", neck.reduce[i])
            batchnorm_targets(t, f"backbone.mla.mla_p{k}_1x1.1", neck.reduce_bn[i])
            conv_targets(t, f"backbone.mla.mla_p{k}.0", neck.smooth[i])
            batchnorm_targets(t, f"backbone.mla.mla_p{k}.1", neck.smooth_bn[i])
        head = model.decode_head
        for i, (convs, bns) in enumerate(zip(head.convs, head.bns)):
            p = f"decode_head.mlahead.head{i + 2}"
            conv_targets(t, f"{p}.0", convs[0])
            batchnorm_targets(t, f"{p}.1", bns[0])
            conv_targets(t, f"{p}.3", convs[1])
            batchnorm_targets(t, f"{p}.4", bns[1])
        conv_targets(t, "decode_head.cls", head.cls)
        for j, aux in enumerate(model.aux):
            conv_targets(t, f"auxiliary_head.{j}.aux", aux.aux)
    else:
        _up_head(t, "decode_head", model.decode_head)
        for j, aux in enumerate(model.aux):
            _up_head(t, f"auxiliary_head.{j}", aux)
    return t


def class_keys(model):
    """Authors' key prefixes of the class-dependent classifiers (main and auxiliary)."""
    if model.decoder == "mla":
        return {"decode_head.cls."} | {f"auxiliary_head.{j}.aux." for j in range(len(model.aux))}
    keys = {f"decode_head.conv_{len(model.decode_head.convs)}."}
    return keys | {f"auxiliary_head.{j}.conv_{len(a.convs)}." for j, a in enumerate(model.aux)}


def bind(model, state):
    """Binds an authors' / mmseg SETR checkpoint (or a bare ViT) to a kseg ``SETR``.

    Raises: ValueError for a decoder kind that differs from the model's.
    """
    state = strip_module(state)
    info = describe_checkpoint(state)
    if info["layout"] == ENCODER_ONLY:
        b = vit.bind_encoder(model.encoder, state)
        b.notes.append("encoder loaded; decode heads left at initialisation")
        b.info["checkpoint"] = info
        return b
    aux_desc = f", {len(model.aux)} auxiliary heads" if model.aux else ", no auxiliary heads"
    what = (f"{model.variant or 'setr_' + model.decoder + '_' + model.backbone_name} ({model.decoder} "
            f"decoder, {model.num_classes} classes, encoder depth {model.depth}{aux_desc})")
    if info["decoder"] is not None and info["decoder"] != model.decoder:
        raise ValueError(f"checkpoint has a {info['decoder'].upper()} decoder but the model is {what}; "
                         f"build a setr_{info['decoder']}_* variant")
    skipped, notes, origin = {}, [], {}
    for key in [k for k in state if NOT_WEIGHTS.search(k) or (
            info["layout"] == AUTHORS and re.match(r"(decode_head|auxiliary_head\.\d+)\.conv_seg\.", k))]:
        skipped[key] = ("not a weight (BatchNorm counter, loss buffer, preprocessor)" if NOT_WEIGHTS.search(key)
                        else "mmseg 0.x BaseDecodeHead.conv_seg: never used by the SETR heads")
        state.pop(key)
    neck_re = re.compile(r"^backbone\.(mla\.|norm_\d+\.)")
    enc = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.") and not neck_re.match(k)}
    rest = {k: np.asarray(v) for k, v in state.items() if not k.startswith("backbone.") or neck_re.match(k)}
    if info["layout"] == MMSEG:
        num_levels = len(model.mla_layers) if model.decoder == "mla" else 4
        rest = _mmseg_to_authors(rest, info["decoder"], num_levels, skipped, notes, origin)
    if not model.aux:
        for key in [k for k in rest if k.startswith("auxiliary_head.")]:
            skipped[origin.get(key, key)] = "auxiliary head: the model is built without them (aux_heads=False)"
            rest.pop(key)
    targets = head_targets(model)
    # Auxiliary heads mmseg builds differently (num_convs=2) were skipped: their kseg
    # counterparts stay at initialisation instead of being reported missing.
    dropped = sorted({int(m.group(1)) for k, why in skipped.items()
                      if (m := re.match(r"auxiliary_head\.(\d+)\.", k)) and "num_convs" in why})
    targets = {k: t for k, t in targets.items() if not any(k.startswith(f"auxiliary_head.{j}.") for j in dropped)}
    if dropped:
        notes.append(f"auxiliary heads {dropped} not loaded (mmseg two-conv heads)")
    cls_prefixes = tuple(class_keys(model))
    n_ckpt = info["num_classes"]

    def head_hint(key, ckpt_shape, want):
        if key.startswith(cls_prefixes) and ckpt_shape[0] != want[-1]:
            return (f"another class count: the checkpoint has {n_ckpt} classes, the model {model.num_classes}; "
                    f"build the model with num_classes={n_ckpt}, or pass skip_classifier=True")
        return f"other head widths or kernels (model: {what})"

    b = Binding(rest, targets, skipped=skipped, notes=notes, origin=origin, info={"checkpoint": info}, what=what,
                classifier={k for k in set(rest) | {t.key for t in targets.values()} if k.startswith(cls_prefixes)},
                hints=[("", head_hint)],
                layout=("SETR, authors' layout (fudan-zvg/SETR, mmseg 0.x)" if info["layout"] == AUTHORS
                        else "SETR, MMSegmentation 1.x layout"))
    return b.add(vit.bind_encoder(model.encoder, enc), "backbone.")


def load_setr(model, source, strict=True, skip_classifier=False):
    """:func:`kseg.convert.load` into a kseg ``SETR`` (``skip_classifier``: the main and auxiliary
    classifiers). Raises ValueError for a checkpoint of another decoder, naming the variant."""
    return load(model, source, CONVERTER, strict, skip_classifier)


def detect(state):
    """A full SETR checkpoint (authors' or mmseg's)."""
    keys = strip_module(dict.fromkeys(state))
    layout = detect_layout(keys)
    return layout != ENCODER_ONLY and _decoder_kind(keys, layout) is not None


CONVERTER = register_converter(Converter(
    family="setr", bind=bind, describe=describe_checkpoint, detect=detect,
    layouts="authors' (fudan-zvg/SETR) or MMSegmentation SETR; or a bare ViT into the encoder"))
