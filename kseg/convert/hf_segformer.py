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

from kseg.convert.common import (
    LoadReport,
    assign_all,
    batchnorm_targets,
    check_shapes,
    conv_targets,
    dense_targets,
    depthwise_kernel,
    norm_targets,
    read_state_dict,
)

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
        name = key[len("module."):] if key.startswith("module.") else key
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
    ``imagenet_classes`` (size of an ImageNet classifier, or None), ``layout`` and
    ``variants`` (the registered ``segformer_mit_b*`` ids that match; empty if none).
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
    info = {
        "hidden_sizes": hidden_sizes,
        "depths": depths,
        "decoder_dim": None if fuse is None else int(fuse.shape[0]),
        "num_classes": None if cls is None else int(cls.shape[0]),
        "encoder_only": not any(k.startswith(HEAD_PREFIX) for k in state),
        "imagenet_classes": None if imagenet is None else int(imagenet.shape[0]),
        "layout": layout,
    }
    info["variants"] = _matching_variants(hidden_sizes, depths, info["decoder_dim"])
    return info


def _matching_variants(hidden_sizes, depths, decoder_dim):
    from kseg.backbones.mit import MIT_VARIANTS
    from kseg.models.registry import list_variants, variant_spec

    found = []
    for name in list_variants("segformer_mit_"):
        _, kwargs = variant_spec(name)
        arch = MIT_VARIANTS.get(kwargs.get("backbone"), {})
        if list(arch.get("hidden_sizes", ())) != list(hidden_sizes) or list(arch.get("depths", ())) != list(depths):
            continue
        if decoder_dim is not None and kwargs.get("decoder_dim") != decoder_dim:
            continue
        found.append(name)
    return found


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


def _describe_model(encoder, head):
    desc = f"hidden sizes {list(encoder.hidden_sizes)}, depths {list(encoder.depths)}"
    if head is not None:
        desc += f", decoder dim {head.decoder_dim}, {head.num_classes} classes"
    return desc


def _describe_ckpt(info):
    desc = f"hidden sizes {info['hidden_sizes']}, depths {info['depths']}"
    if info["decoder_dim"] is not None:
        desc += f", decoder dim {info['decoder_dim']}"
    if info["num_classes"] is not None:
        desc += f", {info['num_classes']} classes"
    if info["variants"]:
        desc += f" (matches {' / '.join(info['variants'])})"
    return desc


def load_hf_segformer(model, source, strict=True, skip_classifier=False):
    """Loads a Hugging Face SegFormer checkpoint into a kseg SegFormer, in place.

    Args:
      model: a kseg ``SegFormer`` (``kseg.build_model("segformer_mit_b*", num_classes=K)``;
        built if it is not yet) or a bare ``kseg.backbones.MiT`` encoder.
      source: a HF model folder (``model.safetensors`` or ``pytorch_model.bin``, sharded
        or not), one ``.safetensors`` / ``.bin`` / ``.pt`` file, or a mapping of key ->
        numpy array or torch tensor, in either layout described in the module docstring.
        Arrays are float32/float16 (bfloat16 needs torch to read); they are cast to the
        variables' dtype.
      strict: if True, checkpoint keys that map to nothing and model keys absent from
        the checkpoint raise. Absent decode-head keys are never an error when the
        checkpoint holds no ``decode_head.*`` key at all (an encoder-only / ImageNet
        checkpoint): then only the encoder is loaded and the report says so.
      skip_classifier: if True, ``decode_head.classifier.{weight,bias}`` are not loaded
        whatever their shape; the model keeps its freshly initialised classifier while
        the encoder, the MLP projections, the fuse convolution and its BatchNorm are
        loaded. Use it to fine-tune a pretrained segmenter on a new label set (the
        model's ``num_classes`` may then differ from the checkpoint's).

    Always skipped (listed in ``report.skipped``): BatchNorm ``num_batches_tracked`` and
    the ImageNet ``classifier.*`` of ``SegformerForImageClassification`` checkpoints.

    Returns: a :class:`kseg.convert.common.LoadReport`; ``report.info`` holds
      ``describe_checkpoint`` facts and ``encoder_only`` / ``head_loaded`` flags.
    Raises:
      ValueError: a checkpoint array whose shape differs from its variable (message: the
        key, both shapes and the likely cause: another variant, i.e. a wrong
        ``--variant``, or another class count, i.e. a wrong ``--num-classes`` /
        missing ``skip_classifier``); with ``strict``, unknown or missing keys (the
        message compares the checkpoint's architecture with the model's). Shape
        mismatches raise even when not strict. Nothing is assigned when it raises.
      FileNotFoundError / ImportError: see :func:`kseg.convert.common.read_state_dict`.
    """
    state, layout = normalize_keys(read_state_dict(source))
    info = describe_checkpoint(state)
    info["layout"] = layout

    if hasattr(model, "encoder"):
        encoder, head = model.encoder, getattr(model, "decode_head", None)
    else:
        encoder, head = model, None
    if not model.built:
        model.build((None, None, None, 3))

    report = LoadReport(layout=f"{'original Hub' if layout == 'hub' else 'transformers 5.x'} SegFormer keys")
    targets = encoder_targets(encoder)
    encoder_only = info["encoder_only"]
    if head is not None and not encoder_only:
        targets.update(head_targets(head))

    # Keys deliberately dropped.
    usable = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            report.skipped[key] = "BatchNorm step counter (no Keras counterpart)"
        elif key.startswith("classifier."):
            report.skipped[key] = "ImageNet classification head (not part of SegFormer)"
        elif key.startswith(HEAD_PREFIX) and head is None:
            report.skipped[key] = "the model has no decode head"
        elif skip_classifier and key in CLASSIFIER_KEYS:
            report.skipped[key] = (
                f"skip_classifier=True: classifier left at initialisation for fine-tuning "
                f"(checkpoint {info['num_classes']} classes, model {getattr(head, 'num_classes', None)})"
            )
        else:
            usable[key] = value
    if skip_classifier:
        for key in CLASSIFIER_KEYS:
            targets.pop(key, None)

    report.unexpected = sorted(k for k in usable if k not in targets)
    report.missing = sorted(k for k in targets if k not in usable)
    model_desc, ckpt_desc = _describe_model(encoder, head), _describe_ckpt(info)

    def hint(key, ckpt_shape, var_shape):
        if key in CLASSIFIER_KEYS:
            k = ckpt_shape[0]
            return (
                f"the checkpoint's classifier has {k} classes and the model {var_shape[-1]}: build the "
                f"model with num_classes={k} (--num-classes {k}) to use it as is, or pass "
                "skip_classifier=True (--skip-classifier) to load everything else and fine-tune a "
                "fresh classifier"
            )
        return (
            f"the checkpoint comes from another variant (checkpoint: {ckpt_desc}; model: {model_desc}); "
            + (f"build the model as {' or '.join(info['variants'])} (--variant)" if info["variants"]
               else "check --variant")
        )

    pairs = check_shapes([targets[k] for k in targets if k in usable], usable, hint=hint)

    if strict and (report.unexpected or report.missing):
        parts = []
        if report.unexpected:
            parts.append(f"{len(report.unexpected)} unexpected keys (e.g. {', '.join(report.unexpected[:4])})")
        if report.missing:
            parts.append(f"{len(report.missing)} missing keys (e.g. {', '.join(report.missing[:4])})")
        same = info["hidden_sizes"] == list(encoder.hidden_sizes) and info["depths"] == list(encoder.depths)
        cause = (
            "the checkpoint is not a SegFormer checkpoint in a known layout, or is incomplete"
            if same
            else "the checkpoint comes from another variant; "
            + (f"use {' or '.join(info['variants'])} (--variant)" if info["variants"] else "check --variant")
        )
        raise ValueError(
            f"checkpoint does not match the model: {'; '.join(parts)}. Checkpoint: {ckpt_desc}; "
            f"model: {model_desc}. Likely cause: {cause}. Pass strict=False (--non-strict) to load "
            "the matching keys anyway."
        )

    assign_all(pairs)
    report.loaded = [t.key for t, _ in pairs]
    assigned = {id(t.variable) for t, _ in pairs}
    report.untouched = [w.path for w in model.weights if id(w) not in assigned]
    head_loaded = head is not None and not encoder_only
    if head is not None and encoder_only:
        report.notes.append("encoder-only checkpoint: the decode head was not loaded (left at initialisation)")
    if skip_classifier and head_loaded:
        report.notes.append("decode_head.classifier skipped (skip_classifier=True): fine-tune before use")
    info.update(encoder_only=encoder_only, head_loaded=head_loaded)
    report.info = info
    return report
