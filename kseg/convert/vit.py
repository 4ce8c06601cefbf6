"""ViT / DeiT checkpoints -> a kseg ``ViT`` encoder (alone or inside a Segmenter / SETR model).

Accepted layouts, all normalised to timm's key names before mapping:

- **timm** ``VisionTransformer`` state dicts (``patch_embed.proj``, ``cls_token``,
  ``dist_token``, ``pos_embed``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
  mlp.fc2}``, ``norm``); the ImageNet ``head``/``head_dist``/``fc_norm`` are skipped.
- **Hugging Face** ``ViTModel`` / ``DeiTModel`` (and their ``*ForImageClassification``)
  as saved on the Hub (``[vit.|deit.]embeddings.*``, ``encoder.layer.{i}.attention.
  attention.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
  ``output.dense``, ``layernorm_{before,after}``, ``layernorm``) and in transformers 5.x's
  in-memory layout (``layers.{i}.attention.{q,k,v,o}_proj``, ``layers.{i}.mlp.fc{1,2}``).
  Separate q/k/v projections are concatenated (rows q, k, v) into timm's fused ``qkv``.
- **Google JAX** ``.npz`` checkpoints (original ViT and AugReg, ``vit_jax`` / big_vision):
  ``embedding/{kernel,bias}``, ``cls``, ``Transformer/posembed_input/pos_embedding``,
  ``Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,
  value,out}, LayerNorm_2, MlpBlock_3/Dense_{0,1}}``, ``Transformer/encoder_norm`` (and
  the older ``..._0``/``LayerNorm_1``/``MlpBlock_0`` numbering; an ``opt/target/`` prefix
  is stripped), rearranged to the timm layout as timm's ``_load_weights`` does.

Keys are then bound to variables by walking the encoder's attributes (``encoder.blocks[i]
.attn.qkv.kernel``...), never by position. Layouts: Linear (out, in) -> Dense (in, out);
Conv2d (out, in, kh, kw) -> (kh, kw, in, out); LayerNorm weight/bias -> gamma/beta.

Position embeddings stored for another grid (e.g. 24x24 at 384 px into a 14x14 model) are
resampled to the model's grid with the model's ``pos_embed_interpolation``
(``kseg.layers.pos_embed``, PyTorch's bicubic by default, as timm and HF do).

- **MMSegmentation** ``VisionTransformer`` (``[backbone.]patch_embed.projection``, ``cls_token``,
  ``pos_embed``, ``layers.{i}.{ln1, attn.attn.in_proj_{weight,bias}, attn.attn.out_proj,
  ln2, ffn.layers.0.0, ffn.layers.1}``, final ``ln1``): the stacked ``in_proj`` rows are
  q, k, v, timm's fused ``qkv`` order, so it maps unchanged.

Note: HF ViT configs use LayerNorm epsilon 1e-12, timm 1e-6; kseg follows timm (1e-6).
The difference on real weights is far below float32 noise of the logits.
"""

import re

import numpy as np

from kseg.backbones.vit import VIT_VARIANTS
from kseg.convert.common import (
    ShapeMismatchError,
    Target,
    conv_kernel,
    dense_targets,
    identity,
    norm_targets,
    strip_prefixes,
)
from kseg.convert.io import read_state_dict
from kseg.convert.loader import Binding, apply_binding
from kseg.layers.pos_embed import resample_pos_embed

# (regex on a prefix-stripped key, timm replacement, layout). Order matters: specific first.
_RULES = (
    (r"^embeddings\.cls_token$", "cls_token", "huggingface"),
    (r"^embeddings\.distillation_token$", "dist_token", "huggingface"),
    (r"^embeddings\.position_embeddings$", "pos_embed", "huggingface"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj.", "huggingface"),
    # Hub layout
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"blocks.\1.attn.q.", "huggingface"),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"blocks.\1.attn.k.", "huggingface"),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"blocks.\1.attn.v.", "huggingface"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj.", "huggingface"),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1.", "huggingface"),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2.", "huggingface"),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1.", "huggingface"),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2.", "huggingface"),
    # transformers 5.x in-memory layout
    (r"^(?:encoder\.)?layers\.(\d+)\.attention\.q_proj\.", r"blocks.\1.attn.q.", "huggingface"),
    (r"^(?:encoder\.)?layers\.(\d+)\.attention\.k_proj\.", r"blocks.\1.attn.k.", "huggingface"),
    (r"^(?:encoder\.)?layers\.(\d+)\.attention\.v_proj\.", r"blocks.\1.attn.v.", "huggingface"),
    (r"^(?:encoder\.)?layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj.", "huggingface"),
    (r"^(?:encoder\.)?layers\.(\d+)\.mlp\.fc([12])\.", r"blocks.\1.mlp.fc\2.", "huggingface"),
    (r"^(?:encoder\.)?layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1.", "huggingface"),
    (r"^(?:encoder\.)?layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2.", "huggingface"),
    (r"^layernorm\.", "norm.", "huggingface"),
    # MMSegmentation VisionTransformer (mmseg/models/backbones/vit.py: mmcv PatchEmbed
    # ``projection``, TransformerEncoderLayer ``ln1``/``ln2``, mmcv MultiheadAttention wrapping
    # nn.MultiheadAttention as ``attn.attn`` (in_proj rows q, k, v = timm's fused qkv order),
    # mmcv FFN ``layers.0.0`` (fc1) / ``layers.1`` (fc2), final norm ``ln1`` (final_norm=True)).
    (r"^patch_embed\.projection\.", "patch_embed.proj.", "mmseg"),
    (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1.", "mmseg"),
    (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2.", "mmseg"),
    (r"^layers\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2", "mmseg"),
    (r"^layers\.(\d+)\.attn\.attn\.out_proj\.", r"blocks.\1.attn.proj.", "mmseg"),
    (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1.", "mmseg"),
    (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2.", "mmseg"),
    (r"^ln1\.", "norm.", "mmseg"),
)
_RULES = tuple((re.compile(p), r, lay) for p, r, lay in _RULES)
_PREFIXES = ("module.", "vit.", "deit.", "backbone.", "encoder.model.")
_SKIP = (
    (re.compile(r"^(head|head_dist|fc_norm|pre_logits)\."), "ImageNet classification head (not used for segmentation)"),
    (re.compile(r"^(classifier|cls_classifier|distillation_classifier|pooler)\."), "HF classification head / pooler"),
)


def _jax_to_timm(state):
    """Google JAX ViT arrays -> timm-layout (PyTorch) arrays. Keys without ``Transformer/``,
    ``embedding/`` or ``cls`` (e.g. ``head/*``, ``pre_logits/*``) keep their names (then
    skipped as heads)."""
    state = {k.removeprefix("opt/target/"): np.asarray(v) for k, v in state.items()}
    out = {}
    torch_linear = lambda k: k.T  # (in, out) -> (out, in)
    if "embedding/kernel" in state:
        out["patch_embed.proj.weight"] = state.pop("embedding/kernel").transpose(3, 2, 0, 1)
        out["patch_embed.proj.bias"] = state.pop("embedding/bias")
    if "cls" in state:
        out["cls_token"] = state.pop("cls")
    if "dist" in state:
        out["dist_token"] = state.pop("dist")
    if "Transformer/posembed_input/pos_embedding" in state:
        out["pos_embed"] = state.pop("Transformer/posembed_input/pos_embedding")
    for name, dst in (("scale", "weight"), ("bias", "bias")):
        if f"Transformer/encoder_norm/{name}" in state:
            out[f"norm.{dst}"] = state.pop(f"Transformer/encoder_norm/{name}")
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    for i in blocks:
        p = f"Transformer/encoderblock_{i}/"
        new_style = f"{p}MultiHeadDotProductAttention_1/query/kernel" in state
        mha, mlp, ln1, ln2 = (("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_0", "LayerNorm_2")
                              if new_style else ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_0",
                                                 "LayerNorm_1"))
        t = f"blocks.{i}."
        for ln, dst in ((ln1, "norm1"), (ln2, "norm2")):
            out[f"{t}{dst}.weight"] = state.pop(f"{p}{ln}/scale")
            out[f"{t}{dst}.bias"] = state.pop(f"{p}{ln}/bias")
        qkv = [state.pop(f"{p}{mha}/{n}/kernel") for n in ("query", "key", "value")]  # (D, heads, hd)
        dim = qkv[0].shape[0]
        out[f"{t}attn.qkv.weight"] = np.concatenate([torch_linear(w.reshape(dim, -1)) for w in qkv], axis=0)
        out[f"{t}attn.qkv.bias"] = np.concatenate(
            [state.pop(f"{p}{mha}/{n}/bias").reshape(-1) for n in ("query", "key", "value")])
        out[f"{t}attn.proj.weight"] = torch_linear(state.pop(f"{p}{mha}/out/kernel").reshape(-1, dim))
        out[f"{t}attn.proj.bias"] = state.pop(f"{p}{mha}/out/bias")
        for j in (0, 1):
            out[f"{t}mlp.fc{j + 1}.weight"] = torch_linear(state.pop(f"{p}{mlp}/Dense_{j}/kernel"))
            out[f"{t}mlp.fc{j + 1}.bias"] = state.pop(f"{p}{mlp}/Dense_{j}/bias")
    for k, v in state.items():  # heads etc.: timm-like names so they are skipped as heads
        out[k.replace("/kernel", ".weight").replace("/bias", ".bias").replace("/", ".")] = v
    return out


def _is_jax(state):
    return any("Transformer/" in k or k.startswith("embedding/") for k in state)


def rename_key(key):
    """One checkpoint key -> ``(timm name, layout or None, skip reason or None)``; separate
    HF q/k/v projections come out as ``blocks.{i}.attn.{q,k,v}.*`` (fused by
    :func:`normalize_keys`)."""
    name = strip_prefixes(key, _PREFIXES)
    reason = next((why for pat, why in _SKIP if pat.match(name)), None)
    if reason:
        return name, None, reason
    for pat, repl, lay in _RULES:
        new = pat.sub(repl, name)
        if new != name:
            return new, lay, None
    return name, None, None


def normalize_keys(state):
    """Any accepted layout -> ``(timm-named state with fused qkv, layout, skipped, origin)``.

    ``origin`` maps renamed keys to their stored names. Google JAX states (``.npz``) are
    rearranged first (:func:`_jax_to_timm`).
    Raises: ValueError when two keys collapse onto one name or a q/k/v triple is incomplete.
    """
    jax = _is_jax(state)
    if jax:
        state = _jax_to_timm(state)
    out, skipped, origin, layout = {}, {}, {}, "timm"
    for key, value in state.items():
        name, lay, reason = rename_key(key)
        if reason:
            skipped[key] = reason
            continue
        layout = lay or layout
        if name in out:
            raise ValueError(f"checkpoint keys collide after renaming: {key!r} -> {name!r} appears twice")
        out[name] = np.asarray(value)
        if name != key:
            origin[name] = key
    for key in sorted(k for k in out if re.match(r"blocks\.\d+\.attn\.q\.", k)):
        prefix, suffix = key.rsplit(".attn.q.", 1)
        parts = [f"{prefix}.attn.{n}.{suffix}" for n in "qkv"]
        if not all(p in out for p in parts):
            raise ValueError(f"checkpoint has {key!r} but not all of {parts}")
        out[f"{prefix}.attn.qkv.{suffix}"] = np.concatenate([out.pop(p) for p in parts], axis=0)
        origin[f"{prefix}.attn.qkv.{suffix}"] = origin.pop(key, key)
    return out, ("Google JAX (.npz)" if jax else layout), skipped, origin


def describe_checkpoint(state):
    """Architecture read off a normalised state: embed_dim, depth, patch_size, distilled,
    num_positions, grid (side of the stored square position grid)."""
    proj = state.get("patch_embed.proj.weight")
    depth = len({m.group(1) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    pos = state.get("pos_embed")
    prefix = 1 + ("dist_token" in state)
    return {
        "embed_dim": None if proj is None else int(proj.shape[0]),
        "patch_size": None if proj is None else int(proj.shape[-1]),
        "depth": depth,
        "distilled": "dist_token" in state,
        "num_positions": None if pos is None else int(pos.shape[1]),
        "grid": None if pos is None else round((pos.shape[1] - prefix) ** 0.5),
    }


def backbone_config(info):
    """kseg constructor settings of a described ViT: ``backbone`` (a ``VIT_VARIANTS`` key of
    that width, patch and distillation), ``depth`` when it differs from the variant's, and
    ``img_size`` (the stored grid x patch: the model is built with the checkpoint's own grid,
    so nothing is resampled at load). Empty when no variant has that width and patch."""
    for name, arch in VIT_VARIANTS.items():
        if (arch["embed_dim"], arch["patch_size"], arch["distilled"]) == (
                info["embed_dim"], info["patch_size"], info["distilled"]):
            config = {"backbone": name}
            if info["depth"] and info["depth"] != arch["depth"]:
                config["depth"] = info["depth"]
            if info["grid"]:
                config["img_size"] = info["grid"] * info["patch_size"]
            return config
    return {}


def describe_text(info):
    return (f"embed_dim {info['embed_dim']}, depth {info['depth']}, patch {info['patch_size']}, "
            f"distilled {info['distilled']}")


def block_targets(t, key, blk):
    """timm ``Block`` names under ``key`` for a kseg ``ViTBlock``, bound into ``t``."""
    norm_targets(t, f"{key}.norm1", blk.norm1)
    dense_targets(t, f"{key}.attn.qkv", blk.attn.qkv)
    dense_targets(t, f"{key}.attn.proj", blk.attn.proj)
    norm_targets(t, f"{key}.norm2", blk.norm2)
    dense_targets(t, f"{key}.mlp.fc1", blk.mlp.fc1)
    dense_targets(t, f"{key}.mlp.fc2", blk.mlp.fc2)


def encoder_targets(encoder):
    """``{timm key: Target}`` for every variable of a kseg ``ViT``."""
    t = {
        "patch_embed.proj.weight": Target("patch_embed.proj.weight", encoder.patch_embed.proj.kernel, conv_kernel),
        "patch_embed.proj.bias": Target("patch_embed.proj.bias", encoder.patch_embed.proj.bias),
        "cls_token": Target("cls_token", encoder.cls_token, identity),
        "pos_embed": Target("pos_embed", encoder.pos_embed, identity),
    }
    if encoder.distilled:
        t["dist_token"] = Target("dist_token", encoder.dist_token, identity)
    for i, blk in enumerate(encoder.blocks):
        block_targets(t, f"blocks.{i}", blk)
    if encoder.final_norm:
        norm_targets(t, "norm", encoder.norm)
    return t


def bind_encoder(encoder, state):
    """Normalises an encoder state dict (any layout of the module docstring) and binds it to a
    built kseg ``ViT`` (nothing assigned). A position embedding stored for another grid is
    resampled to the encoder's (with a note); a final norm the encoder lacks is skipped.

    Returns: :class:`~kseg.convert.loader.Binding` (``info``: :func:`describe_checkpoint`).
    Raises: ShapeMismatchError when the prefix tokens (cls / distillation) differ.
    """
    state, layout, skipped, origin = normalize_keys(state)
    info = describe_checkpoint(state)
    model_desc = (f"embed_dim {encoder.embed_dim}, depth {encoder.depth}, patch {encoder.patch_size}, "
                  f"distilled {encoder.distilled}")
    b = Binding(state, encoder_targets(encoder), layout=f"{layout} ViT/DeiT keys", skipped=skipped, origin=origin,
                info=info, what=f"the ViT encoder ({model_desc})",
                hints=[("", lambda *_: f"another architecture (checkpoint: {describe_text(info)}; model: {model_desc})")])
    pos = state.get("pos_embed")
    if pos is not None:
        prefix = 1 + int(info["distilled"])
        if prefix != encoder.num_prefix_tokens:
            raise ShapeMismatchError(
                f"checkpoint has {prefix} prefix tokens (distilled={info['distilled']}) but the model has "
                f"{encoder.num_prefix_tokens}; checkpoint: {describe_text(info)}; model: {model_desc}. Use a "
                f"{'deit_*' if info['distilled'] else 'vit_*'} backbone variant"
            )
        if pos.ndim == 3 and pos.shape[-1] == encoder.embed_dim and pos.shape[1] != encoder.pos_embed.shape[1]:
            g, method = encoder.grid_size, encoder.pos_embed_interpolation
            state["pos_embed"] = resample_pos_embed(pos, (g, g), num_prefix_tokens=prefix, method=method)
            b.notes.append(f"pos_embed resampled from {info['grid']}x{info['grid']} to {g}x{g} ({method}); build the "
                           f"model with img_size={info['grid'] * encoder.patch_size} to keep the checkpoint's grid")
    if not encoder.final_norm:
        for key in [k for k in state if k.startswith("norm.")]:
            state.pop(key)
            b.skipped[key] = "final LayerNorm: the encoder is built without it (final_norm=False)"
    return b


def load_vit(model, source, strict=True):
    """Loads a timm / HF / Google / mmseg ViT or DeiT checkpoint into a kseg ``ViT``, in place.

    Args:
      model: a kseg ``ViT`` encoder, or a model whose ``encoder`` attribute is one (its
        decode heads are left at initialisation: ImageNet checkpoints have none). Built
        first if needed.
      source: a folder / file (``.npz`` included) / ``{key: array or tensor}`` mapping in a
        layout of the module docstring.
      strict: raise on checkpoint keys that map to nothing or encoder keys it lacks.
    Returns: :class:`~kseg.convert.common.LoadReport` (``info``: the checkpoint's
      architecture; a note when the position embedding was resampled).
    Raises: ValueError (a ``ShapeMismatchError``) naming key and shapes when the
      checkpoint is another architecture (width, depth, patch size, distillation token);
      with ``strict``, unexpected/missing keys. Nothing is assigned when it raises.
    """
    if not model.built:
        model.build((None, None, None, 3))
    encoder = getattr(model, "encoder", model)
    binding = bind_encoder(encoder, read_state_dict(source))
    if encoder is not model:
        binding.notes.append("encoder loaded; decode heads left at initialisation")
    return apply_binding(model, binding, strict)
