"""The pieces every converter shares: layout transposes, variable binding, shape checks,
the :class:`LoadReport`.

A converter binds checkpoint keys to the variables of a built kseg model with
:class:`Target` s (the key, the variable, the transform between PyTorch and Keras layouts),
made by walking the model's attributes with :func:`dense_targets` / :func:`conv_targets` /
:func:`norm_targets` / :func:`batchnorm_targets`. :func:`check_shapes` validates every
pair before anything is assigned (:mod:`kseg.convert.loader` does the rest).
"""

import dataclasses

import numpy as np

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


def to_torch_layout(targets):
    """``{key: np.ndarray}`` of the targets' variables in PyTorch layouts: the inverse of
    binding (loading the result into a fresh model of the same variant reproduces it)."""
    inverse = {linear_kernel: lambda a: a.T, conv_kernel: lambda a: np.transpose(a, (3, 2, 0, 1)),
               depthwise_kernel: lambda a: np.transpose(a, (2, 3, 0, 1))}
    return {t.key: inverse.get(t.transform, identity)(np.asarray(t.variable.numpy())) for t in targets.values()}


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
        raw = np.asarray(state[t.key])
        try:
            array = t.transform(raw)
        except ValueError:  # a layout transpose of an array of another rank
            array = raw
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
