"""The one checkpoint loader and the converter registry.

A family's converter (``kseg/convert/<family>.py``) is only its key map: ``bind(model,
state)`` renames a foreign state dict to canonical keys and binds them to the model's
variables, returning a :class:`Binding`; ``describe(state)`` reads the architecture, class
count and constructor settings off the keys; ``detect(state)`` says whether a state is
one of its checkpoints. Everything else is here, once (as keras-hub's
``safetensor_utils`` does for its converters):

- :func:`apply_binding`: classifier skipping, unexpected / missing keys, strictness, shape
  checks before any assignment, assignment, and the :class:`~kseg.convert.common.LoadReport`;
- :func:`register_converter` / :func:`get_converter` / :func:`converter_for`: the registry,
  keyed by family (the lower-case model class name: ``segformer``, ``segmenter``, ``setr``,
  ``segvit``, ``maskformer``), which ``kseg.models.load_pretrained``, ``kseg.from_pretrained``
  and ``tools/convert_weights.py`` dispatch through;
- :func:`load`: read + bind + apply for a model and a source;
- :func:`detect_family`: which registered family a checkpoint belongs to.
"""

import dataclasses
import re
from collections.abc import Callable

from kseg.convert.common import LoadReport, assign_all, check_shapes
from kseg.convert.io import read_state_dict


@dataclasses.dataclass
class Binding:
    """A checkpoint bound to a model's variables; nothing assigned yet.

    Attributes:
      state: ``{canonical key: np.ndarray}``, already renamed (and re-laid-out where a
        layout differs beyond a transpose, e.g. split or merged projections).
      targets: ``{table key: Target}``; ``Target.key`` is the canonical checkpoint key (one
        key may feed several variables: table keys then carry a ``#part`` suffix).
      layout: the recognised layout, for the report.
      skipped: ``{stored key: reason}`` for keys deliberately not loaded.
      origin: ``{canonical key: stored key}`` where they differ (messages name both).
      notes, info: for the report.
      optional: canonical keys that may be absent even when strict (e.g. Swin stage norms
        an ImageNet checkpoint lacks).
      classifier: canonical keys of class-count dependent weights (``skip_classifier``).
      hints: ``[(canonical key prefix, callable(key, ckpt_shape, var_shape) -> str)]``; the
        longest matching prefix explains a shape mismatch.
      what: the model, for the strict error (e.g. "segmenter_vit_b16_mask (mask decoder, ...)").
      require_match: raise when not a single key matches (a checkpoint of something else).
    """

    state: dict
    targets: dict
    layout: str = ""
    skipped: dict = dataclasses.field(default_factory=dict)
    origin: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)
    optional: set = dataclasses.field(default_factory=set)
    classifier: set = dataclasses.field(default_factory=set)
    hints: list = dataclasses.field(default_factory=list)
    what: str = "the model"
    require_match: bool = False

    def stored(self, key):
        """The stored name of a canonical key."""
        return self.origin.get(key, key)

    def hint(self, key, ckpt_shape, var_shape):
        found = [(p, fn) for p, fn in self.hints if key.startswith(p)]
        why = max(found, key=lambda item: len(item[0]))[1](key, ckpt_shape, var_shape) if found else ""
        if self.stored(key) != key:
            why += f" (stored as {self.stored(key)!r})"
        return why or f"the checkpoint does not fit {self.what}"

    def add(self, other, prefix="", stored_prefix=None):
        """Merges ``other`` (e.g. an encoder's binding) into this one, its canonical keys
        under ``prefix`` and its stored keys under ``stored_prefix`` (default: ``prefix``)."""
        stored_prefix = prefix if stored_prefix is None else stored_prefix
        self.state.update({prefix + k: v for k, v in other.state.items()})
        self.targets.update({prefix + k: dataclasses.replace(t, key=prefix + t.key) for k, t in other.targets.items()})
        self.skipped.update({stored_prefix + k: why for k, why in other.skipped.items()})
        for k in other.state:
            if prefix + k != stored_prefix + other.stored(k):
                self.origin[prefix + k] = stored_prefix + other.stored(k)
        self.notes += other.notes
        self.optional |= {prefix + k for k in other.optional}
        self.classifier |= {prefix + k for k in other.classifier}
        self.hints += [(prefix + p, fn) for p, fn in other.hints]
        return self


def apply_binding(model, binding, strict=True, skip_classifier=False):
    """Checks a :class:`Binding` completely, then assigns it; the one place that does.

    Args:
      model: the built model (or layer) the binding's variables belong to; its weights that
        get no value are listed in ``report.untouched``.
      strict: raise on unexpected checkpoint keys or missing (non-optional) model keys.
      skip_classifier: leave ``binding.classifier`` keys at initialisation (fine-tuning on
        another label set: the class count may then differ).
    Returns: :class:`~kseg.convert.common.LoadReport`.
    Raises: ShapeMismatchError (a ValueError) for the first array that does not fit its
      variable (key, both shapes, likely cause); ValueError for unexpected / missing keys
      when strict, or for a ``require_match`` binding of which no key matched. Nothing is
      assigned when it raises.
    """
    b = binding
    report = LoadReport(layout=b.layout, skipped=dict(b.skipped), notes=list(b.notes), info=dict(b.info))
    state, targets = dict(b.state), dict(b.targets)
    if skip_classifier:
        for key in sorted(b.classifier & set(state)):
            report.skipped[b.stored(key)] = "class-dependent weights skipped (skip_classifier): left at initialisation"
            state.pop(key)
        targets = {k: t for k, t in targets.items() if t.key not in b.classifier}
    wanted = {t.key for t in targets.values()}
    report.unexpected = sorted(b.stored(k) for k in state if k not in wanted)
    report.missing = sorted(k for k in wanted if k not in state)
    pairs = check_shapes([t for t in targets.values() if t.key in state], state, hint=b.hint)
    hard_missing = [k for k in report.missing if k not in b.optional]
    if strict and (report.unexpected or hard_missing):
        raise ValueError(
            f"checkpoint does not match {b.what}: {len(report.unexpected)} unexpected keys "
            f"{report.unexpected[:4]}, {len(hard_missing)} missing keys {hard_missing[:4]}. "
            "Pass strict=False (--non-strict) to load the matching keys."
        )
    if b.require_match and not pairs:
        raise ValueError(f"no checkpoint key matches {b.what} (first keys: {list(b.state)[:4]})")
    assign_all(pairs)
    report.loaded = sorted({b.stored(t.key) for t, _ in pairs})
    assigned = {id(t.variable) for t, _ in pairs}
    report.untouched = [w.path for w in model.weights if id(w) not in assigned]
    return report


# --------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Converter:
    """A family's checkpoint key map (see the module docstring).

    Attributes:
      family: lower-case model class name, also the variant prefix (``segformer``).
      bind: ``bind(model, state) -> Binding`` (raises ValueError for a checkpoint of
        another decoder / structure, naming the variant to use).
      describe: ``describe(state) -> dict`` with at least ``layout``, ``num_classes`` (None
        for encoder-only checkpoints), ``summary`` (one line) and ``config`` (constructor
        keyword arguments the checkpoint implies: backbone, widths, position grid, epsilons,
        normalisation...).
      detect: ``detect(state) -> bool``.
      layouts: the layouts it reads, for help texts.
    """

    family: str
    bind: Callable
    describe: Callable
    detect: Callable
    layouts: str = ""


_CONVERTERS = {}


def register_converter(converter):
    """Registers ``converter`` for ``converter.family`` (once)."""
    if converter.family in _CONVERTERS:
        raise ValueError(f"a converter for {converter.family!r} is registered twice")
    _CONVERTERS[converter.family] = converter
    return converter


def list_converters():
    """Registered families, sorted."""
    return sorted(_CONVERTERS)


def get_converter(family):
    """The converter of ``family``. Raises KeyError naming the registered families."""
    if family not in _CONVERTERS:
        raise KeyError(f"no checkpoint converter for the {family!r} family; converters exist for "
                       f"{', '.join(list_converters())}")
    return _CONVERTERS[family]


def converter_for(model):
    """The converter of ``model``'s family (a model or a model class): the first class in its
    MRO whose lower-case name is a registered family. Raises KeyError when there is none."""
    model_cls = model if isinstance(model, type) else type(model)
    for cls in model_cls.__mro__:
        if cls.__name__.lower() in _CONVERTERS:
            return _CONVERTERS[cls.__name__.lower()]
    return get_converter(model_cls.__name__.lower())


def detect_family(state):
    """The registered families whose converter recognises ``state`` (usually one)."""
    return [f for f, c in sorted(_CONVERTERS.items()) if c.detect(state)]


def load(model, source, converter=None, strict=True, skip_classifier=False):
    """Reads ``source``, binds it to ``model`` and assigns it (in place).

    Args:
      model: a kseg model (built here if it is not); converter: default
        :func:`converter_for` ``(model)``; source: a path / folder / ``{key: array}``.
      strict, skip_classifier: see :func:`apply_binding`.
    Returns: :class:`~kseg.convert.common.LoadReport`.
    Raises: FileNotFoundError / ImportError / ValueError when the source cannot be read
      (:func:`kseg.convert.io.read_state_dict`); ValueError from the converter for a checkpoint
      of another structure (decoder kind, cascade vs Shrunk), naming the variant to build;
      ShapeMismatchError naming the key, both shapes and the likely cause (another variant or
      class count); ValueError for unexpected / missing keys when strict. Nothing is
      assigned when it raises.
    """
    converter = converter or converter_for(model)
    if not model.built:
        model.build((None, None, None, 3))
    return apply_binding(model, converter.bind(model, read_state_dict(source)), strict, skip_classifier)


def strip_module(state):
    """``state`` without a leading DDP ``module.`` on its keys."""
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}
