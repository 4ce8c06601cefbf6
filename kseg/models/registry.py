"""Variant registry: ``build_model("segformer_mit_b0", num_classes=11)``."""

_VARIANTS = {}


def register_variant(name, model_cls, **kwargs):
    """Registers ``name`` as ``model_cls`` built with ``kwargs`` (its variant table row)."""
    if name in _VARIANTS:
        raise ValueError(f"variant {name!r} is registered twice")
    _VARIANTS[name] = (model_cls, dict(kwargs))


def variant_spec(name):
    """(model class, keyword arguments) of a registered variant.

    Raises: KeyError listing the registered variants when ``name`` is unknown.
    """
    if name not in _VARIANTS:
        raise KeyError(f"unknown model variant {name!r}. Registered variants: {', '.join(sorted(_VARIANTS))}")
    return _VARIANTS[name]


def list_variants(family=None):
    """Sorted variant ids, optionally only those starting with ``family``."""
    return sorted(n for n in _VARIANTS if family is None or n.startswith(family))


def build_model(variant, num_classes, input_shape=(None, None, 3), **overrides):
    """Builds a registered model variant with its weights created.

    Args:
      variant: a variant id, e.g. ``"segformer_mit_b0"`` (see :func:`list_variants`).
      num_classes: K, the number of classes (no ignore/no-object class included).
      **overrides: constructor arguments replacing the variant's defaults
        (e.g. ``drop_path_rate=0.0``).
    Returns: a built ``kseg.models.Segmentor``.
    Raises: KeyError for an unknown variant.
    """
    model_cls, _ = variant_spec(variant)
    model = model_cls.from_variant(variant, num_classes=num_classes, **overrides)
    model.build((None,) + tuple(input_shape))
    return model
