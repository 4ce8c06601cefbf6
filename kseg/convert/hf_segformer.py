"""Hugging Face SegFormer checkpoints -> a kseg ``SegFormer`` (or a bare ``MiT`` encoder).

Two key layouts are accepted and normalised to one before mapping:

(a) the original Hub layout, used by every ``nvidia/mit-b*`` and
    ``nvidia/segformer-b*-finetuned-*`` checkpoint and still what transformers 5.x's
    ``save_pretrained`` writes (it reverts its in-memory renames on save)::

      segformer.encoder.patch_embeddings.{i}.proj / .layer_norm
      segformer.encoder.block.{i}.{j}.layer_norm_1 / .layer_norm_2
      segformer.encoder.block.{i}.{j}.attention.self.{query,key,value,sr,layer_norm}
      segformer.encoder.block.{i}.{j}.attention.output.dense
      segformer.encoder.block.{i}.{j}.mlp.{dense1,dwconv.dwconv,dense2}
      segformer.encoder.layer_norm.{i}
      decode_head.linear_c.{i}.proj, decode_head.linear_fuse, decode_head.batch_norm,
      decode_head.classifier

    Encoder-only checkpoints (``SegformerModel``: no ``segformer.`` prefix;
    ``SegformerForImageClassification``: with it, plus an ImageNet ``classifier``) are
    recognised too.

(b) transformers 5.x's in-memory layout (``model.state_dict()`` of the installed
    ``SegformerForSemanticSegmentation``, or a ``torch.save`` of it)::

      segformer.stages.{i}.patch_embeddings, stages.{i}.blocks.{j}.layernorm_before,
      attention.{q,k,v,o}_proj, attention.sequence_reduction.{sequence_reduction,layer_norm},
      mlp.{fc1,dwconv.dwconv,fc2}, layernorm_after, stages.{i}.layer_norm,
      decode_head.linear_projections.{i}.proj

    :data:`RENAMES` maps (b) to (a), mirroring transformers' ``conversion_mapping.py``.

Layout (a) keys are then bound to kseg variables by walking the model's attributes
(``model.encoder.block[i][j].attention.query.kernel``...), never by position, and
transposed: Linear (out, in) -> Dense (in, out); Conv2d (out, in, kh, kw) -> (kh, kw,
in, out); depth-wise Conv2d (C, 1, 3, 3) -> (3, 3, C, 1); LayerNorm weight/bias ->
gamma/beta; BatchNorm weight/bias/running_mean/running_var -> gamma/beta/
moving_mean/moving_variance (``num_batches_tracked`` is dropped).

Numerics: HF's SegFormer uses LayerNorm epsilon 1e-5 everywhere, whereas kseg follows
the authors' code (1e-6 inside blocks and at stage ends). Converted weights therefore
give logits that differ slightly from HF's (see tests/convert/test_hf_segformer.py).
"""

import re

from kseg.backbones.mit import MIT_VARIANTS
from kseg.convert.common import (
    batchnorm_targets,
    conv_targets,
    dense_targets,
    depthwise_kernel,
    norm_targets,
)
from kseg.convert.loader import Binding, Converter, load, register_converter

# (original Hub fragment, transformers 5.x fragment); "{i}" is a stage index. A fragment
# matches at the start of a key or right after a dot.
RENAMES = (
    ("encoder.patch_embeddings.{i}.", "stages.{i}.patch_embeddings."),
    ("encoder.block.{i}.", "stages.{i}.blocks."),
    ("encoder.layer_norm.{i}.", "stages.{i}.layer_norm."),
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.self.sr.", "attention.sequence_reduction.sequence_reduction."),
    ("attention.self.layer_norm.", "attention.sequence_reduction.layer_norm."),
    ("attention.output.dense.", "attention.o_proj."),
    ("mlp.dense1.", "mlp.fc1."),
    ("mlp.dense2.", "mlp.fc2."),
    ("layer_norm_1.", "layernorm_before."),
    ("layer_norm_2.", "layernorm_after."),
    ("decode_head.linear_c.", "decode_head.linear_projections."),
)

ENCODER_PREFIX = "segformer.encoder."
HEAD_PREFIX = "decode_head."
CLASSIFIER_KEYS = ("decode_head.classifier.weight", "decode_head.classifier.bias")


def _compile(fragment):
    pattern = re.escape(fragment).replace(re.escape("{i}"), r"(\d+)")
    return re.compile(r"(?:^|(?<=\.))" + pattern)


def _template(fragment):
    return fragment.replace("{i}", r"\1")


_TO_LEGACY = [(_compile(new), _template(old)) for old, new in RENAMES]
_TO_V5 = [(_compile(old), _template(new)) for old, new in RENAMES]


def to_legacy_key(key):
    """Renames a transformers 5.x key to the original Hub layout (identity on Hub keys)."""
    for pattern, repl in _TO_LEGACY:
        key = pattern.sub(repl, key)
    return key


def to_v5_key(key):
    """Renames an original-Hub key to transformers 5.x's in-memory layout (the inverse)."""
    for pattern, repl in _TO_V5:
        key = pattern.sub(repl, key)
    return key


def normalize_keys(state):
    """Brings any accepted layout to the original Hub layout with the full prefix.

    Strips a DDP ``module.`` prefix, applies :data:`RENAMES` backwards, and prefixes
    bare-encoder keys (``encoder.*`` from ``SegformerModel``) with ``segformer.``.

    Returns: ``(state, layout)`` with ``layout`` one of ``"hub"``, ``"transformers-5"``.
    Raises: ValueError when two keys collapse onto one name (a mixed checkpoint).
    """
    out, layout = {}, "hub"
    for key, value in state.items():
        name = key.removeprefix("module.")
        legacy = to_legacy_key(name)
        if legacy != name:
            layout = "transformers-5"
        if legacy.startswith("encoder."):
            legacy = "segformer." + legacy
        if legacy in out:
            raise ValueError(f"checkpoint keys collide after renaming: {key!r} -> {legacy!r} appears twice")
        out[legacy] = value
    return out, layout


def describe_checkpoint(state):
    """Architecture facts read off a state dict (any accepted layout).

    Returns: dict with ``hidden_sizes`` and ``depths`` (per stage), ``decoder_dim`` and
    ``num_classes`` (None for encoder-only checkpoints), ``encoder_only``,
    ``imagenet_classes`` (size of an ImageNet classifier, or None), ``layout``,
    ``variants`` (the ``segformer_mit_b*`` ids of that encoder), and for the registry
    ``config`` (``backbone``, ``decoder_dim``) and ``summary``.
    """
    state, layout = normalize_keys(state)  # idempotent on normalised keys
    hidden_sizes, depths = [], []
    i = 0
    while f"{ENCODER_PREFIX}patch_embeddings.{i}.proj.weight" in state:
        hidden_sizes.append(int(state[f"{ENCODER_PREFIX}patch_embeddings.{i}.proj.weight"].shape[0]))
        blocks = {m.group(1) for k in state if (m := re.match(rf"{re.escape(ENCODER_PREFIX)}block\.{i}\.(\d+)\.", k))}
        depths.append(len(blocks))
        i += 1
    fuse = state.get("decode_head.linear_fuse.weight")
    cls = state.get("decode_head.classifier.weight")
    imagenet = state.get("classifier.weight")
    backbones = [n for n, a in MIT_VARIANTS.items() if list(a["hidden_sizes"]) == hidden_sizes
                 and list(a["depths"]) == depths]
    info = {
        "hidden_sizes": hidden_sizes,
        "depths": depths,
        "decoder_dim": None if fuse is None else int(fuse.shape[0]),
        "num_classes": None if cls is None else int(cls.shape[0]),
        "encoder_only": not any(k.startswith(HEAD_PREFIX) for k in state),
        "imagenet_classes": None if imagenet is None else int(imagenet.shape[0]),
        "layout": layout,
        "variants": [f"segformer_{n}" for n in backbones],
        "config": {"backbone": backbones[0]} if backbones else {},
    }
    widths = [n for n, a in MIT_VARIANTS.items() if list(a["hidden_sizes"]) == hidden_sizes]
    if not backbones and widths and all(depths):  # a variant's widths at other depths (tiny configs)
        info["config"] = {"backbone": widths[0], "depths": depths}
    if info["decoder_dim"] is not None and info["config"]:
        info["config"]["decoder_dim"] = info["decoder_dim"]
    info["summary"] = _describe_ckpt(info)
    return info


# --------------------------------------------------------------------------- the key map


def encoder_targets(encoder, prefix=ENCODER_PREFIX):
    """``{hub key: Target}`` for every variable of a kseg ``MiT`` encoder."""
    t = {}
    for i, embed in enumerate(encoder.patch_embeddings):
        conv_targets(t, f"{prefix}patch_embeddings.{i}.proj", embed.proj)
        norm_targets(t, f"{prefix}patch_embeddings.{i}.layer_norm", embed.layer_norm)
        for j, blk in enumerate(encoder.block[i]):
            p = f"{prefix}block.{i}.{j}"
            attn = blk.attention
            norm_targets(t, f"{p}.layer_norm_1", blk.layer_norm_1)
            dense_targets(t, f"{p}.attention.self.query", attn.query)
            dense_targets(t, f"{p}.attention.self.key", attn.key)
            dense_targets(t, f"{p}.attention.self.value", attn.value)
            if attn.sr_ratio > 1:
                conv_targets(t, f"{p}.attention.self.sr", attn.sr)
                norm_targets(t, f"{p}.attention.self.layer_norm", attn.layer_norm)
            dense_targets(t, f"{p}.attention.output.dense", attn.dense)
            norm_targets(t, f"{p}.layer_norm_2", blk.layer_norm_2)
            dense_targets(t, f"{p}.mlp.dense1", blk.mlp.dense1)
            conv_targets(t, f"{p}.mlp.dwconv.dwconv", blk.mlp.dwconv, depthwise_kernel)
            dense_targets(t, f"{p}.mlp.dense2", blk.mlp.dense2)
        norm_targets(t, f"{prefix}layer_norm.{i}", encoder.layer_norm[i])
    return t


def head_targets(head, prefix=HEAD_PREFIX):
    """``{hub key: Target}`` for every variable of a kseg ``SegFormerHead``."""
    t = {}
    for i, layer in enumerate(head.linear_c):
        dense_targets(t, f"{prefix}linear_c.{i}.proj", layer)
    conv_targets(t, f"{prefix}linear_fuse", head.linear_fuse)
    batchnorm_targets(t, f"{prefix}batch_norm", head.batch_norm)
    conv_targets(t, f"{prefix}classifier", head.classifier)
    return t


# --------------------------------------------------------------------------- loading


def _describe_ckpt(info):
    desc = f"hidden sizes {info['hidden_sizes']}, depths {info['depths']}"
    if info["encoder_only"]:
        desc += ", encoder-only (no decode head)"
    if info["decoder_dim"] is not None:
        desc += f", decoder dim {info['decoder_dim']}"
    if info["num_classes"] is not None:
        desc += f", {info['num_classes']} classes"
    if info["variants"]:
        desc += f" (matches {' / '.join(info['variants'])})"
    return desc


def bind(model, state):
    """Binds a SegFormer / MiT state dict (either layout) to a kseg ``SegFormer`` or bare
    ``MiT``: the encoder always, the decode head when the checkpoint has one (an encoder-only
    or ImageNet checkpoint leaves it at initialisation, with a note). Skipped: BatchNorm
    ``num_batches_tracked`` and the ImageNet ``classifier.*``."""
    state, layout = normalize_keys(state)
    info = describe_checkpoint(state)
    info["layout"] = layout
    encoder, head = (model.encoder, getattr(model, "decode_head", None)) if hasattr(model, "encoder") else (model, None)
    model_desc = f"hidden sizes {list(encoder.hidden_sizes)}, depths {list(encoder.depths)}"
    if head is not None:
        model_desc += f", decoder dim {head.decoder_dim}, {head.num_classes} classes"
    targets = encoder_targets(encoder)
    head_loaded = head is not None and not info["encoder_only"]
    if head_loaded:
        targets.update(head_targets(head))
    skipped = {}
    for key in list(state):
        if key.endswith("num_batches_tracked"):
            skipped[key] = "BatchNorm step counter (no Keras counterpart)"
        elif key.startswith("classifier."):
            skipped[key] = "ImageNet classification head (not part of SegFormer)"
        elif key.startswith(HEAD_PREFIX) and head is None:
            skipped[key] = "the model has no decode head"
        else:
            continue
        state.pop(key)
    use = f"build the model as {' or '.join(info['variants'])} (--variant)" if info["variants"] else "check --variant"

    def classifier_hint(key, ckpt_shape, var_shape):
        k = ckpt_shape[0]
        return (f"the checkpoint's classifier has {k} classes and the model {var_shape[-1]}: build the model "
                f"with num_classes={k} (--num-classes {k}) to use it as is, or pass skip_classifier=True "
                "(--skip-classifier) to load everything else and fine-tune a fresh classifier")

    b = Binding(state, targets, layout=f"{'original Hub' if layout == 'hub' else 'transformers 5.x'} SegFormer keys",
                skipped=skipped, info=dict(info, encoder_only=info["encoder_only"], head_loaded=head_loaded),
                classifier=set(CLASSIFIER_KEYS), what=f"the model ({model_desc}; checkpoint: {_describe_ckpt(info)})",
                hints=[("", lambda *_: f"the checkpoint comes from another variant (checkpoint: "
                                       f"{_describe_ckpt(info)}; model: {model_desc}); {use}"),
                       ("decode_head.classifier.", classifier_hint)])
    if head is not None and info["encoder_only"]:
        b.notes.append("encoder-only checkpoint: the decode head was not loaded (left at initialisation)")
    return b


def load_hf_segformer(model, source, strict=True, skip_classifier=False):
    """:func:`kseg.convert.load` into a kseg ``SegFormer`` or bare ``MiT`` (``skip_classifier``:
    ``decode_head.classifier``); ``report.info`` holds :func:`describe_checkpoint` facts and
    ``encoder_only`` / ``head_loaded``."""
    return load(model, source, CONVERTER, strict, skip_classifier)


def detect(state):
    """A SegFormer / MiT checkpoint: MiT patch embeddings in either layout."""
    return any(re.search(r"(^|\.)(encoder\.patch_embeddings|stages\.\d+\.patch_embeddings)\.0\.proj\.", k)
               for k in state)


CONVERTER = register_converter(Converter(
    family="segformer", bind=bind, describe=describe_checkpoint, detect=detect,
    layouts="Hugging Face SegFormer / MiT (Hub or transformers 5.x layout), e.g. nvidia/segformer-b0-finetuned-"
            "ade-512-512 or the encoder-only nvidia/mit-b0"))
