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


def build_from_recipe(recipe, checkpoint=None):
    """Builds ``recipe.model`` (variant, num_classes, drop_path_rate/dropout overrides).

    With ``checkpoint`` (a ``.weights.h5`` written by training) its weights are loaded;
    otherwise ``recipe.model.pretrained`` is loaded if set (see :func:`load_pretrained`).
    Raises: ValueError when the checkpoint belongs to another variant or class count.
    """
    cfg = recipe.model
    overrides = {k: getattr(cfg, k) for k in ("drop_path_rate", "dropout") if getattr(cfg, k) is not None}
    model = build_model(cfg.name, num_classes=cfg.num_classes, **overrides)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif cfg.pretrained:
        load_pretrained(model, cfg.pretrained)
    return model


def load_pretrained(model, path):
    """Loads a ``.weights.h5`` of this variant, or (SegFormer) a HF checkpoint whose
    classifier may differ (it is then left at initialisation, for fine-tuning).

    Raises: FileNotFoundError for a missing path; ValueError when the checkpoint belongs
    to another variant (the message names the variable and both shapes).
    """
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"model.pretrained: {path} does not exist")
    if path.endswith(".weights.h5"):
        load_checkpoint(model, path)
        return
    from kseg.convert import load_hf_segformer

    load_hf_segformer(model, path, strict=False, skip_classifier=True)


def load_checkpoint(model, path):
    """``model.load_weights(path)`` with an error naming the file and variant on mismatch."""
    import os

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        model.load_weights(path)
    except ValueError as e:
        raise ValueError(
            f"checkpoint {path} does not fit model {getattr(model, 'variant', model.name)} "
            f"with {getattr(model, 'num_classes', '?')} classes: {e}. Use the recipe the "
            "checkpoint was trained with (model.name, model.num_classes)."
        ) from e
