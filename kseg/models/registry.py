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


def build_from_recipe(recipe, checkpoint=None, log=print):
    """Builds ``recipe.model`` (variant, num_classes, drop_path_rate/dropout overrides).

    With ``checkpoint`` (a ``.weights.h5`` written by training) its weights are loaded.
    Otherwise ``recipe.model.pretrained``, when set, names the starting weights: a
    ``.weights.h5`` of this variant, or anything ``kseg.from_pretrained`` takes (a preset, a
    Hub id, a URL, a checkpoint file or folder of any family's layout); the model is then
    built with the settings those weights need (position grid, normalisation, ...) and a
    classifier for ``num_classes`` (new when the class count differs).
    Raises: ValueError when a checkpoint belongs to another variant or class count;
      see :func:`load_pretrained` for pretrained sources.
    """
    cfg = recipe.model
    overrides = {k: getattr(cfg, k) for k in ("drop_path_rate", "dropout") if getattr(cfg, k) is not None}
    if cfg.pretrained and not checkpoint and not str(cfg.pretrained).endswith(".weights.h5"):
        from kseg.pretrained import from_pretrained

        return from_pretrained(cfg.pretrained, num_classes=cfg.num_classes, variant=cfg.name, log=log, **overrides)
    if checkpoint and cfg.pretrained and not str(cfg.pretrained).endswith(".weights.h5"):
        from kseg.pretrained.api import cached_config

        # Fine-tuned from pretrained weights: the same settings as in training (position grid,
        # epsilons, normalisation), as their cached conversion recorded them.
        overrides = {**(cached_config(cfg.pretrained, cfg.name) or {}), **overrides}
    model = build_model(cfg.name, num_classes=cfg.num_classes, **overrides)
    if checkpoint:
        load_checkpoint(model, checkpoint)
    elif cfg.pretrained:
        load_checkpoint(model, cfg.pretrained)
    return model


def load_pretrained(model, source, strict=False, log=print):
    """Loads pretrained weights into a built ``model``, in place.

    Args:
      source: a ``.weights.h5`` of this variant (loaded as is), or anything
        ``kseg.from_pretrained`` takes: the checkpoint is converted for this model's variant
        and every weight whose shape fits is copied (a classifier of another class count is
        left initialised, and reported).
    Returns: ``(loaded, left_initialised)`` variable paths (for a ``.weights.h5``: all, none).
    Raises: FileNotFoundError for a missing path; ValueError for weights of another
      architecture; the errors of ``kseg.from_pretrained``.
    """
    if str(source).endswith(".weights.h5"):
        load_checkpoint(model, source)
        return [w.path for w in model.weights], []
    from kseg.pretrained import from_pretrained, transfer_weights

    pretrained = from_pretrained(source, variant=getattr(model, "variant", None), strict=strict, log=log)
    info = pretrained.pretrained_info
    loaded, left = transfer_weights(pretrained, model, skip=info["untouched"])
    if left:
        log(f"kseg: {len(left)} variables of {model.name} left initialised (not in {source} or another shape): "
            f"{', '.join(left[:4])}{' ...' if len(left) > 4 else ''}")
    return loaded, left


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
