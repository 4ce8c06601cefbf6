"""``kseg.from_pretrained``: a preset, Hub id, URL or local checkpoint -> a built kseg model.

The first call fetches the checkpoint (:mod:`kseg.pretrained.sources`), recognises its family
and layout (``kseg.convert``), builds the variant with the settings the checkpoint implies
(its position grid, epsilons, normalisation, widths: never resampled at load) and the preset's
(authors' values the keys cannot tell), loads it through the family's converter and caches
the result with a sidecar (:mod:`kseg.pretrained.cache`). Later calls load the cache and need
no network. A ``num_classes`` other than the checkpoint's builds the model with that many
classes and copies every weight whose shape still fits: the classifier is left initialised,
for fine-tuning. Each call prints what it did.
"""

import hashlib
import json
import os

import numpy as np

from kseg.pretrained import cache, sources
from kseg.pretrained.presets import PRESETS
from kseg.utils.progress import phase

ENCODER_ONLY_CLASSES = 150  # head size of the cached model of an encoder-only checkpoint (ADE20K)
_ARCH_KEYS = ("backbone", "decoder", "shrunk")
# Constructor arguments that change no variable: applied to the returned model, not the
# (cached) conversion.
WEIGHT_NEUTRAL = {"drop_path_rate", "dropout", "decoder_dropout", "aux_loss_weight", "cls_weight", "focal_weight",
                  "dice_weight", "no_object_weight", "mask_weight", "matcher", "mean", "std", "norm_epsilon",
                  "pos_embed_interpolation"}


def list_presets(family=None):
    """Sorted preset names, optionally those whose variant starts with ``family``."""
    return sorted(n for n, p in PRESETS.items() if family is None or p["variant"].startswith(family))


def get_preset(name):
    """The table entry of preset ``name``. Raises KeyError naming close presets."""
    if name not in PRESETS:
        close = [p for p in PRESETS if name.split("_")[0] in p][:8]
        raise KeyError(f"unknown preset {name!r}" + (f"; presets of that family: {', '.join(close)}" if close else ""))
    return PRESETS[name]


def class_table(dataset, num_classes):
    """(class names, palette rows) of ``dataset`` with ``num_classes`` entries, or generic names
    ``class_0..`` and a generated palette when there is no such table (an ImageNet encoder, a
    custom checkpoint). PASCAL Context's 59- and 60-class tables are chosen by the count."""
    from kseg.data import palettes

    tables = {"ade20k": "ADE20K", "cityscapes": "CITYSCAPES", "camvid": "CAMVID", "coco_stuff10k": "COCO_STUFF",
              "pascal_context": "PASCAL_CONTEXT_59", "pascal_context_59": "PASCAL_CONTEXT_59",
              "pascal_context_60": "PASCAL_CONTEXT_60"}
    candidates = [tables.get(dataset)] + (["PASCAL_CONTEXT_59", "PASCAL_CONTEXT_60"]
                                          if str(dataset).startswith("pascal_context") else [])
    for prefix in filter(None, candidates):
        names = getattr(palettes, f"{prefix}_CLASSES")
        if len(names) == num_classes:
            return [str(n) for n in names], np.asarray(getattr(palettes, f"{prefix}_PALETTE")).astype(int).tolist()
    return [f"class_{i}" for i in range(num_classes)], palettes.make_palette(num_classes).astype(int).tolist()


def pretrained_info(model):
    """The sidecar of the weights ``model`` was made from (classes, palette, source, ...), or None."""
    return getattr(model, "pretrained_info", None)


# --------------------------------------------------------------------------- building


def _guess_variant(family, config):
    from kseg.models.registry import list_variants, variant_spec

    names = list_variants(family + "_")
    if not names:
        raise KeyError(f"no registered variant of the {family!r} family")

    def agrees(name, keys):
        kwargs = variant_spec(name)[1]
        return not kwargs.get("backbone_kwargs") and all(kwargs.get(k) == config[k] for k in keys if k in config)

    for keys in (_ARCH_KEYS, _ARCH_KEYS[1:], ()):
        found = [n for n in names if agrees(n, keys)]
        if found:
            return found[0]
    return names[0]


def _family(variant, state, source_name):
    from kseg.convert import converter_for, detect_family, get_converter
    from kseg.models.registry import variant_spec

    if variant:
        return converter_for(variant_spec(variant)[0])
    found = detect_family(state)
    if len(found) != 1:
        raise ValueError(
            f"cannot tell which model family {source_name!r} belongs to "
            + (f"(it looks like {' and '.join(found)})" if found else "(an encoder-only checkpoint, or an unknown layout)")
            + ": pass variant=... (e.g. variant='segmenter_vit_b16_mask'; kseg.models.list_variants())")
    return get_converter(found[0])


def _build(variant, num_classes, config):
    from kseg.models.registry import build_model

    return build_model(variant, num_classes=num_classes, **config)


def _jsonable(config):
    return json.loads(json.dumps(config, default=lambda v: v.tolist() if hasattr(v, "tolist") else list(v)))


def convert_checkpoint(name_or_path, variant=None, num_classes=None, strict=False, skip_classifier=False, log=print,
                       **overrides):
    """Fetches and converts a checkpoint into a new kseg model (no cache involved).

    Args: as :func:`from_pretrained`; ``num_classes`` other than the checkpoint's needs
      ``skip_classifier`` (the class-dependent weights are then left initialised).
    Returns: ``(model, sidecar dict, LoadReport)``.
    Raises: see :func:`from_pretrained`; ValueError for a class count that differs without
      ``skip_classifier``, or ``skip_classifier`` for a family whose converter marks no
      class-dependent weights (SegViT: its class embeddings feed every decoder layer).
    """
    from kseg import __version__
    from kseg.convert import apply_binding, read_state_dict

    log = log or (lambda *_: None)
    source = sources.resolve(name_or_path) if not isinstance(name_or_path, sources.Source) else name_or_path
    path, sha, downloaded = sources.fetch(source, log=log)
    try:
        with phase(f"reading {os.path.basename(os.path.normpath(path))}"):
            state = read_state_dict(path)
    except Exception as err:
        if downloaded and source.kind == "url":  # ours, and unreadable: do not keep it
            for leftover in (path, path + ".sha256"):
                if os.path.isfile(leftover):
                    os.remove(leftover)
        raise ValueError(f"{source.name!r}: cannot read the checkpoint {path} ({type(err).__name__}: {err})") from err
    preset = source.preset or {}
    converter = _family(variant or preset.get("variant"), state, source.name)
    info = converter.describe(state)
    derived = dict(info.get("config", {}))
    if variant:  # an explicit variant keeps its identity: a checkpoint of another one is an error
        from kseg.models.registry import variant_spec

        registered = variant_spec(variant)[1]
        derived = {k: v for k, v in derived.items() if not (k in _ARCH_KEYS and registered.get(k, v) != v)}
    variant = variant or preset.get("variant")
    if preset.get("normalization"):
        from kseg.backbones.normalization import NORMALIZATIONS

        mean, std = NORMALIZATIONS[preset["normalization"]]
        derived.update(mean=list(mean), std=list(std))
    config = {**derived, **preset.get("config", {}), **overrides}
    variant = variant or _guess_variant(converter.family, config)
    ckpt_classes = info.get("num_classes")
    if num_classes and ckpt_classes and num_classes != ckpt_classes and not skip_classifier:
        raise ValueError(f"num_classes {num_classes} differs from the checkpoint's classifier ({ckpt_classes} classes): "
                         "keep the checkpoint's classes, or skip the classifier (--skip-classifier, "
                         f"skip_classifier=True) to load everything else and fine-tune a fresh {num_classes}-class one")
    num_classes = num_classes or ckpt_classes or ENCODER_ONLY_CLASSES
    with phase(f"converting {source.name} to {variant}"):
        model = _build(variant, num_classes, config)
        binding = converter.bind(model, state)
        if skip_classifier and ckpt_classes and not binding.classifier:
            raise ValueError(f"skipping the classifier is not supported for {converter.family}: its class-dependent "
                             "weights are spread over the decoder; build the checkpoint's class count and fine-tune")
        report = apply_binding(model, binding, strict=strict, skip_classifier=skip_classifier)
    if not report.loaded:
        raise ValueError(f"{source.name!r}: no key of the checkpoint fits {variant} ({report.layout}); "
                         f"first keys: {list(state)[:4]}")
    head_loaded = bool(ckpt_classes) and num_classes == ckpt_classes
    classes, palette = class_table(preset.get("dataset") if head_loaded else None, num_classes)
    meta = {
        "name": source.name, "source": source.location, "kind": source.kind, "preset": source.name if preset else None,
        "variant": variant, "family": converter.family, "config": _jsonable(config), "num_classes": num_classes,
        "encoder_only": not ckpt_classes, "dataset": preset.get("dataset") if head_loaded else None,
        "classes": classes, "palette": palette, "crop_size": list(preset.get("crop_size") or ()) or None,
        "mean": list(model.pixel_mean), "std": list(model.pixel_std), "layout": report.layout,
        "checkpoint": info.get("summary"), "sha256": sha, "untouched": list(report.untouched),
        "miou": preset.get("miou"), "ref": preset.get("ref"), "kseg_version": __version__,
    }
    return model, meta, report


def _describe_report(name, variant, report):
    return (f"kseg: converted {name} ({report.layout}) into {variant}: {len(report.loaded)} tensors loaded"
            + (f", {len(report.skipped)} skipped" if report.skipped else "")
            + (f", {len(report.unexpected)} unexpected: {report.unexpected[:3]}" if report.unexpected else "")
            + (f", {len(report.missing)} missing: {report.missing[:3]}" if report.missing else ""))


def _key(source, variant, overrides):
    key = source.key
    if variant and not (source.preset and source.preset.get("variant") == variant):
        key += f"--{variant}"
    if overrides:
        key += "--" + hashlib.sha1(json.dumps(_jsonable(overrides), sort_keys=True).encode()).hexdigest()[:8]
    return key


def cached_config(name_or_path, variant=None):
    """The constructor settings a model made from these pretrained weights was built with
    (from the cached conversion's sidecar), or None when nothing is cached; never downloads.
    Used to rebuild, e.g. for evaluation, a model fine-tuned from them."""
    try:
        source = sources.resolve(name_or_path)
    except ValueError:
        return None
    entry = _cached(source, _key(source, variant, {}))
    return dict(entry[1]["config"]) if entry else None


def _cached(source, key):
    """A kseg ``.weights.h5`` with its sidecar given as the source, else the cached conversion."""
    return (cache.read_saved(source.location) if source.kind == "local" else None) or cache.read_entry(key)


def transfer_weights(src, dst, skip=()):
    """Copies ``src``'s weights into ``dst`` (same architecture up to the class count) where
    the shapes agree and the source path is not in ``skip``; returns (loaded, left) paths of ``dst``.

    Raises: ValueError when the two models do not have the same variables.
    """
    if len(src.weights) != len(dst.weights):
        raise ValueError(f"cannot copy weights: {len(src.weights)} variables in the checkpoint's model, "
                         f"{len(dst.weights)} in the requested one (different architectures)")
    loaded, left, skip = [], [], set(skip)
    for a, b in zip(src.weights, dst.weights):
        if a.path in skip or tuple(a.shape) != tuple(b.shape):
            left.append(b.path)
        else:
            b.assign(a.numpy())
            loaded.append(b.path)
    return loaded, left


def from_pretrained(name_or_path, num_classes=None, variant=None, strict=False, log=print, **overrides):
    """A kseg model with pretrained weights.

    Args:
      name_or_path: a preset (:func:`list_presets`), a Hugging Face repo id (``org/name`` or
        ``hf:org/name[/file]``), an http(s) URL, or a local file / folder in a layout
        ``kseg.convert`` reads (see :mod:`kseg.pretrained.sources`).
      num_classes: classes of the returned model; None keeps the checkpoint's (150 for an
        encoder-only checkpoint). Another count loads every weight that still fits and leaves
        the class-dependent ones initialised (reported).
      variant: the kseg variant to build (default: the preset's, else recognised from the
        checkpoint). Needed for an encoder-only checkpoint outside a preset.
      strict: raise when the checkpoint has keys the model does not, or lacks some it has.
      log: where the one-line messages go (``print``; ``None`` silences them).
      **overrides: constructor arguments of the returned model (e.g. ``drop_path_rate=0.1``);
        those that change variables (:data:`WEIGHT_NEUTRAL` lists those that do not) are used
        for the conversion too, and cached under their own key.
    Returns: a built model; ``kseg.pretrained.pretrained_info(model)`` is its sidecar (classes,
      palette, normalisation, source, checksum).
    Raises: ValueError (an unrecognised name, a checkpoint that fits no variant, a shape that
      does not fit: the message names the key and both shapes), OfflineError (offline and not
      cached: names what is missing and where), DownloadError (failed / short download,
      checksum mismatch), KeyError (unknown variant).
    """
    log = log or (lambda *_: None)
    source = sources.resolve(name_or_path)
    arch = {k: v for k, v in overrides.items() if k not in WEIGHT_NEUTRAL}
    key = _key(source, variant, arch)
    entry = _cached(source, key)
    if entry is None:
        model, meta, report = convert_checkpoint(source, variant, strict=strict, log=log, **arch)
        folder = cache.write_entry(key, model, meta)
        log(_describe_report(source.name, meta["variant"], report) + f"; cached in {folder}")
        for note in report.notes:
            log(f"kseg: note: {note}")
    else:
        weights, meta = entry
        model = _build(meta["variant"], meta["num_classes"], meta["config"])
        model.load_weights(weights)
        log(f"kseg: loaded {source.name} from the cache {os.path.dirname(weights)} ({meta['variant']}, "
            f"{meta['num_classes']} classes{', encoder only' if meta['encoder_only'] else ''})")
    meta = dict(meta)
    wanted = num_classes or meta["num_classes"]
    if wanted != meta["num_classes"] or (meta["encoder_only"] and num_classes) or overrides.keys() - arch.keys():
        config = {**meta["config"], **overrides}
        target = _build(meta["variant"], wanted, config)
        loaded, left = transfer_weights(model, target, skip=meta["untouched"])
        if wanted != meta["num_classes"] or meta["encoder_only"]:
            log(f"kseg: num_classes={wanted} (checkpoint: "
                f"{'none, encoder only' if meta['encoder_only'] else meta['num_classes']}): loaded {len(loaded)} of "
                f"{len(target.weights)} variables; left initialised: {_summarise(left)}")
            classes, palette = class_table(None, wanted)
            meta.update(classes=classes, palette=palette, dataset=None)
        meta.update(num_classes=wanted, untouched=left, config=_jsonable(config), mean=list(target.pixel_mean),
                    std=list(target.pixel_std))
        model = target
    elif meta["untouched"]:
        log(f"kseg: left initialised (not in the checkpoint): {_summarise(meta['untouched'])}")
    object.__setattr__(model, "pretrained_info", meta)
    return model


def _summarise(paths, n=4):
    paths = list(paths)
    return ", ".join(paths[:n]) + (f" ... (+{len(paths) - n})" if len(paths) > n else "") if paths else "nothing"
