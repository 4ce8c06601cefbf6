"""Helpers shared by the checkpoint converters: read, transpose, check, assign, report.

A converter turns a foreign checkpoint (a flat ``{key: array}`` state dict) into the
variables of a built kseg model. The pieces here know nothing about any architecture:

- :func:`read_state_dict` reads a checkpoint into ``{str: np.ndarray}`` from a model
  folder (``model.safetensors``, ``pytorch_model.bin``, or their sharded ``*.index.json``
  forms), a single ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` file, or an in-memory
  mapping (numpy arrays or torch tensors). Safetensors are read with ``safetensors.numpy``
  (no torch needed); torch pickles need torch, imported only then, and are loaded with
  ``weights_only=True`` (no arbitrary code runs).
- the ``*_kernel`` functions transpose PyTorch weight layouts into Keras ones.
- :func:`check_shapes` validates every (key, variable) pair *before* anything is
  assigned, so a failed conversion leaves the model untouched;
  :func:`assign_all` then writes them.
- :class:`LoadReport` lists what was loaded, skipped, missing and unexpected.
"""

import dataclasses
import json
import os

import numpy as np

SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")
TORCH_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TORCH_SUFFIXES = (".bin", ".pt", ".pth")


# --------------------------------------------------------------------------- reading


def to_numpy(value):
    """A numpy array from a numpy array, a torch tensor (any device, grad or not), or a list."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _load_safetensors(path):
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (TypeError, ValueError) as err:  # e.g. bfloat16, which numpy cannot hold
        try:
            from safetensors.torch import load_file as load_torch
        except ImportError:
            raise ValueError(
                f"cannot read {path} with safetensors.numpy ({err}); install torch to read "
                "bfloat16 checkpoints"
            ) from err
        return {k: to_numpy(v) for k, v in load_torch(path).items()}


def _load_torch(path):
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"{path} is a PyTorch pickle; reading it needs torch (pip install torch), or "
            "convert it to .safetensors first"
        ) from err
    obj = torch.load(path, map_location="cpu", weights_only=True)
    # Training checkpoints wrap the weights: {"state_dict": {...}} or {"model": {...}}.
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k: to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}


def _load_sharded(index_path, loader):
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    folder = os.path.dirname(index_path)
    state = {}
    for shard in sorted(set(weight_map.values())):
        state.update(loader(os.path.join(folder, shard)))
    return state


def _load_file(path):
    if path.endswith(".index.json"):
        loader = _load_safetensors if ".safetensors" in path else _load_torch
        return _load_sharded(path, loader)
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    if path.endswith(TORCH_SUFFIXES):
        return _load_torch(path)
    raise ValueError(
        f"unsupported checkpoint file {path!r}: expected .safetensors, "
        f"{'/'.join(TORCH_SUFFIXES)} or a sharded *.index.json"
    )


def read_state_dict(source):
    """Reads a checkpoint into a flat ``{key: np.ndarray}`` dict (arrays keep their dtype).

    Args:
      source: a folder holding ``model.safetensors`` (preferred) or ``pytorch_model.bin``
        (or their sharded ``.index.json`` forms), as written by HF ``save_pretrained``
        or downloaded from the Hub; a path to one such file; or a mapping of key ->
        numpy array / torch tensor (e.g. ``hf_model.state_dict()``).
    Returns: ``dict[str, np.ndarray]``.
    Raises:
      FileNotFoundError: the path does not exist, or the folder holds no known file.
      ValueError: an unsupported file type, or a pickle that is not a state dict.
      ImportError: a ``.bin`` file and torch is not installed.
    """
    if isinstance(source, dict):
        return {str(k): to_numpy(v) for k, v in source.items()}
    path = os.fspath(source)
    if os.path.isdir(path):
        for name in SAFETENSORS_NAMES + TORCH_NAMES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return _load_file(candidate)
        raise FileNotFoundError(
            f"no checkpoint in folder {path!r}: expected one of "
            f"{', '.join(SAFETENSORS_NAMES + TORCH_NAMES)} (found: {sorted(os.listdir(path))[:10]})"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    return _load_file(path)


# --------------------------------------------------------------------------- layouts


def identity(array):
    """Vectors (biases, norm parameters): unchanged."""
    return array


def linear_kernel(array):
    """torch ``nn.Linear.weight`` (out, in) -> Keras ``Dense.kernel`` (in, out)."""
    return np.transpose(array, (1, 0))


def conv_kernel(array):
    """torch ``nn.Conv2d.weight`` (out, in, kh, kw) -> Keras ``Conv2D.kernel`` (kh, kw, in, out)."""
    return np.transpose(array, (2, 3, 1, 0))


def depthwise_kernel(array):
    """torch depth-wise ``nn.Conv2d.weight`` (C, 1, kh, kw) -> ``DepthwiseConv2D.kernel`` (kh, kw, C, 1)."""
    return np.transpose(array, (2, 3, 0, 1))


# --------------------------------------------------------------------------- assigning


@dataclasses.dataclass
class Target:
    """One checkpoint key bound to one Keras variable and the transform between them."""

    key: str
    variable: object
    transform: object = identity


class ShapeMismatchError(ValueError):
    """A checkpoint array does not fit its variable: the key, both shapes and a hint."""


def strip_prefixes(key, prefixes):
    """``key`` without any leading ``prefixes`` (repeatedly: ``module.backbone.x`` -> ``x``)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def dense_targets(targets, key, layer, transform=linear_kernel):
    """Binds ``{key}.weight`` (through ``transform``) and, when the layer has one,
    ``{key}.bias`` of a Keras Dense / Conv layer into ``targets``."""
    targets[f"{key}.weight"] = Target(f"{key}.weight", layer.kernel, transform)
    if getattr(layer, "use_bias", True) and getattr(layer, "bias", None) is not None:
        targets[f"{key}.bias"] = Target(f"{key}.bias", layer.bias)


def conv_targets(targets, key, layer, transform=conv_kernel):
    """:func:`dense_targets` of a conv layer (torch (out, in, kh, kw) kernels)."""
    dense_targets(targets, key, layer, transform)


def norm_targets(targets, key, layer):
    """LayerNorm / GroupNorm ``{key}.weight`` / ``.bias`` -> ``gamma`` / ``beta``."""
    targets[f"{key}.weight"] = Target(f"{key}.weight", layer.gamma)
    targets[f"{key}.bias"] = Target(f"{key}.bias", layer.beta)


def batchnorm_targets(targets, key, layer):
    """BatchNorm: :func:`norm_targets` plus ``running_mean`` / ``running_var`` ->
    ``moving_mean`` / ``moving_variance``."""
    norm_targets(targets, key, layer)
    targets[f"{key}.running_mean"] = Target(f"{key}.running_mean", layer.moving_mean)
    targets[f"{key}.running_var"] = Target(f"{key}.running_var", layer.moving_variance)


def check_shapes(targets, state, hint=None):
    """Transforms every target's array and checks it against its variable's shape.

    Args:
      targets: iterable of :class:`Target` whose keys are all in ``state``.
      state: ``{key: np.ndarray}``.
      hint: optional ``callable(key, checkpoint_shape, variable_shape) -> str`` giving the
        likely cause, appended to the error.
    Returns: list of ``(target, transformed array)``.
    Raises: ShapeMismatchError (a ValueError) for the first mismatch, naming the key, the
      checkpoint shape (as stored and as transformed), the variable path and shape, and
      how many other keys mismatch.
    """
    pairs, bad = [], []
    for t in targets:
        raw = state[t.key]
        array = t.transform(raw)
        want = tuple(t.variable.shape)
        if tuple(array.shape) != want:
            bad.append((t, raw, array))
        else:
            pairs.append((t, array))
    if bad:
        t, raw, array = bad[0]
        want = tuple(t.variable.shape)
        msg = (
            f"checkpoint key {t.key!r} has shape {tuple(raw.shape)} (as Keras: {tuple(array.shape)}) "
            f"but model variable {t.variable.path!r} has shape {want}"
        )
        if len(bad) > 1:
            msg += f"; {len(bad) - 1} more keys mismatch (e.g. {', '.join(b[0].key for b in bad[1:4])})"
        if hint is not None:
            msg += f". Likely cause: {hint(t.key, tuple(raw.shape), want)}"
        raise ShapeMismatchError(msg)
    return pairs


def assign_all(pairs):
    """Assigns each checked ``(target, array)`` to its variable, cast to the variable's dtype."""
    for t, array in pairs:
        t.variable.assign(np.asarray(array, dtype=t.variable.dtype))


# --------------------------------------------------------------------------- reporting


@dataclasses.dataclass
class LoadReport:
    """What a conversion did.

    Attributes:
      loaded: checkpoint keys written into the model.
      skipped: ``{key: reason}`` for checkpoint keys deliberately not loaded (optimiser
        counters, an ImageNet classifier, a classifier skipped for fine-tuning, ...).
      unexpected: checkpoint keys the converter does not know (an error when strict).
      missing: model keys (checkpoint names) the checkpoint lacks (an error when strict).
      untouched: paths of model variables left at their initial values.
      layout: which checkpoint layout was recognised.
      notes: free-form remarks (e.g. "encoder-only checkpoint: decode head not loaded").
      info: converter-specific facts (e.g. the checkpoint's architecture).
    """

    loaded: list = dataclasses.field(default_factory=list)
    skipped: dict = dataclasses.field(default_factory=dict)
    unexpected: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    untouched: list = dataclasses.field(default_factory=list)
    layout: str = ""
    notes: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)

    def summary(self, max_items=8):
        """A human-readable multi-line summary."""

        def some(items):
            items = list(items)
            shown = ", ".join(items[:max_items])
            return shown + (f", ... (+{len(items) - max_items})" if len(items) > max_items else "")

        lines = [f"layout: {self.layout}", f"loaded: {len(self.loaded)} checkpoint keys"]
        if self.skipped:
            reasons = {}
            for key, why in self.skipped.items():
                reasons.setdefault(why, []).append(key)
            lines.append(f"skipped: {len(self.skipped)} keys")
            lines += [f"  - {why}: {some(keys)}" for why, keys in reasons.items()]
        if self.unexpected:
            lines.append(f"unexpected (ignored): {len(self.unexpected)}: {some(self.unexpected)}")
        if self.missing:
            lines.append(f"missing from checkpoint: {len(self.missing)}: {some(self.missing)}")
        if self.untouched:
            lines.append(f"model variables left at initialisation: {len(self.untouched)}: {some(self.untouched)}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self):
        return self.summary()
