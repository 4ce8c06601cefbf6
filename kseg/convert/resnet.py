"""ResNet checkpoints -> kseg :class:`~kseg.backbones.resnet.ResNet` (renames + transposes).

The canonical layout is detectron2's (what MaskFormer trains and ships):
``stem.conv{1,2,3}.weight``, ``stem.conv1.norm.{weight,bias,running_mean,running_var}``,
``res{2..5}.{j}.{conv1,conv2,conv3,shortcut}.weight`` and ``...norm.*``. Also accepted
and renamed into it:

- **torchvision** ``resnet50/101`` state dicts: ``conv1``, ``bn1``, ``layer{k}.{j}.conv{n}``,
  ``layer{k}.{j}.bn{n}``, ``layer{k}.{j}.downsample.{0,1}`` (``layer k`` = ``res{k+1}``);
- **transformers** ``ResNetModel`` / ``ResNetBackbone`` / ``ResNetForImageClassification``:
  ``embedder.embedder.{convolution,normalization}``, ``encoder.stages.{i}.layers.{j}.
  {shortcut, layer.{0,1,2}}.{convolution,normalization}`` (stage i = ``res{i+2}``); in a HF
  MaskFormer checkpoint under ``model.pixel_level_module.encoder.`` (pass ``prefix=``);
- **detectron2 ``.pkl``** files (``{"model": {name: ndarray}}``, e.g. MaskFormer's
  ``R-50.pkl`` / DeepLab ``R-103.pkl``), read with a numpy-only unpickler.

Prefixes ``backbone.``, ``resnet.``, ``module.`` are stripped. Skipped with a reason: the
ImageNet classifier (``fc``, ``classifier``), ``num_batches_tracked`` counters, and the
``stem.fc`` of some detectron2 files. BN maps weight/bias/running_mean/running_var to
gamma/beta/moving_mean/moving_variance; conv (out, in, kh, kw) -> (kh, kw, in, out).
"""

import re

import numpy as np

from kseg.convert.common import (
    batchnorm_targets,
    conv_targets,
    norm_targets,
    strip_prefixes,
    to_torch_layout,
)
from kseg.convert.io import read_d2_pickle, read_state_dict
from kseg.convert.loader import Binding, apply_binding
from kseg.convert.swin import auto_prefix, select_prefix

__all__ = ["describe_checkpoint", "export_state", "load_resnet", "normalize_keys", "read_d2_pickle"]

_PREFIXES = ("module.", "backbone.", "resnet.", "model.")


def _torchvision(m):
    stage, block, kind, idx, rest = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
    base = f"res{int(stage) + 1}.{block}"
    if kind == "conv":
        return f"{base}.conv{idx}.{rest}"
    if kind == "bn":
        return f"{base}.conv{idx}.norm.{rest}"
    return f"{base}.shortcut.{rest}" if idx == "0" else f"{base}.shortcut.norm.{rest}"


def _hf(m):
    stage, block, part, layer_idx, kind, rest = m.groups()
    base = f"res{int(stage) + 2}.{block}." + ("shortcut" if part == "shortcut" else f"conv{int(layer_idx) + 1}")
    return f"{base}.{rest}" if kind == "convolution" else f"{base}.norm.{rest}"


_RULES = (
    (re.compile(r"^conv1\.(weight)$"), lambda m: f"stem.conv1.{m.group(1)}"),
    (re.compile(r"^bn1\.(\w+)$"), lambda m: f"stem.conv1.norm.{m.group(1)}"),
    (re.compile(r"^layer(\d)\.(\d+)\.(conv|bn|downsample\.?)(\d)\.(\w+)$"), _torchvision),
    (re.compile(r"^embedder\.embedder\.convolution\.(\w+)$"), lambda m: f"stem.conv1.{m.group(1)}"),
    (re.compile(r"^embedder\.embedder\.normalization\.(\w+)$"), lambda m: f"stem.conv1.norm.{m.group(1)}"),
    (re.compile(r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.(shortcut|layer\.(\d+))\.(convolution|normalization)"
                r"\.(\w+)$"), _hf),
)
_SKIP = tuple((re.compile(p), why) for p, why in (
    (r"num_batches_tracked$", "BatchNorm step counter"),
    (r"^(fc|classifier|linear|stem\.fc)\.", "ImageNet classification head"),
))


def _strip(key):
    return strip_prefixes(key, _PREFIXES)


def normalize_keys(state):
    """Any accepted layout -> ``(detectron2-layout state, layout name, skipped)``.

    Raises: ValueError when two keys collapse onto one name.
    """
    out, skipped, layout = {}, {}, "detectron2"
    for key, value in state.items():
        name = _strip(key)
        reason = next((why for pat, why in _SKIP if pat.search(name)), None)
        if reason:
            skipped[key] = reason
            continue
        for i, (pat, repl) in enumerate(_RULES):
            m = pat.match(name)
            if m:
                name, layout = repl(m), ("torchvision" if i < 3 else "transformers")
                break
        if name in out:
            raise ValueError(f"checkpoint keys collide after renaming: {key!r} -> {name!r} appears twice")
        out[name] = np.asarray(value)
    return out, layout, skipped


def _conv(t, key, layer):
    conv_targets(t, key, layer)
    if layer.norm is not None:
        bind_norm = batchnorm_targets if hasattr(layer.norm, "moving_mean") else norm_targets
        bind_norm(t, f"{key}.norm", layer.norm)


def backbone_targets(backbone):
    """``{detectron2 key: Target}`` for every variable of a built kseg ``ResNet``."""
    t = {}
    for n, conv in enumerate(backbone.stem.convs, start=1):
        _conv(t, f"stem.conv{n}", conv)
    for i, blocks in enumerate(backbone.stages):
        for j, blk in enumerate(blocks):
            p = f"res{i + 2}.{j}"
            for name in ("conv1", "conv2", "conv3"):
                _conv(t, f"{p}.{name}", getattr(blk, name))
            if blk.shortcut is not None:
                _conv(t, f"{p}.shortcut", blk.shortcut)
    return t


def export_state(backbone):
    """The backbone as an detectron2-layout ``{key: np.ndarray}`` in PyTorch shapes (inverse of loading)."""
    return to_torch_layout(backbone_targets(backbone))


def describe_checkpoint(state):
    """depths, stem type, stem channels, bottleneck width read off a detectron2-layout state."""
    depths = [len({m.group(1) for k in state if (m := re.match(rf"res{s}\.(\d+)\.", k))}) for s in (2, 3, 4, 5)]
    deep = "stem.conv3.weight" in state
    stem = state.get("stem.conv3.weight" if deep else "stem.conv1.weight")
    conv = state.get("res2.0.conv1.weight")
    return {"depths": depths, "stem_type": "deeplab" if deep else "basic",
            "stem_channels": None if stem is None else int(stem.shape[0]),
            "width_per_group": None if conv is None else int(conv.shape[0])}


def bind(backbone, state, prefix=None):
    """Binds a ResNet state dict (any layout of the module docstring) to a built kseg ``ResNet``."""
    if prefix is None:
        prefix = auto_prefix(state)
    state, layout, skipped = normalize_keys(select_prefix(state, prefix))
    info = describe_checkpoint(state)
    model_desc = (f"depths {backbone.depths}, stem {backbone.stem_type}/{backbone.stem_channels}, "
                  f"width {backbone.width_per_group}")
    ckpt_desc = (f"depths {info['depths']}, stem {info['stem_type']}/{info['stem_channels']}, "
                 f"width {info['width_per_group']}")
    b = Binding(state, backbone_targets(backbone), layout=f"{layout} ResNet keys", skipped=skipped, info=info,
                require_match=True, what=f"the ResNet backbone ({model_desc})",
                hints=[("", lambda *_: f"another ResNet variant (checkpoint: {ckpt_desc}; model: {model_desc})")])
    if prefix:
        b.notes.append(f"loaded the keys under {prefix!r}; other keys ignored")
    return b


def load_resnet(backbone, source, prefix=None, strict=True):
    """Loads a detectron2 / torchvision / transformers ResNet checkpoint into a kseg ``ResNet``
    (or a model's ``backbone``), in place; ``prefix`` as :func:`kseg.convert.swin.load_swin`.
    Raises as :func:`kseg.convert.loader.apply_binding`."""
    backbone = getattr(backbone, "backbone", backbone)
    if not backbone.built:
        backbone.build((None, None, None, 3))
    return apply_binding(backbone, bind(backbone, read_state_dict(source), prefix), strict)
