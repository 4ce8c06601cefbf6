"""Converted weights on disk: ``$KSEG_HOME/weights/<key>/`` holds

- ``model.weights.h5``: the checkpoint converted into a kseg model (``save_weights``);
- ``kseg.json``: the sidecar with what must travel with the weights (format below).

Entries are written into a temporary folder that is renamed into place, so a conversion
that fails or is interrupted leaves no entry behind.

Sidecar (``format: kseg-pretrained``, ``version: 1``)::

    {"name": "segformer_b0_ade20k_512", "source": "hf:nvidia/...", "kind": "hub",
     "variant": "segformer_mit_b0", "family": "segformer", "config": {...constructor overrides...},
     "num_classes": 150, "dataset": "ade20k", "classes": [...], "palette": [[r, g, b], ...],
     "crop_size": [512, 512], "mean": [...], "std": [...], "layout": "...", "sha256": null,
     "untouched": [variable paths left at initialisation], "miou": 37.4, "ref": "...",
     "kseg_version": "0.1.0"}
"""

import json
import os
import shutil
import tempfile

from kseg.pretrained.sources import kseg_home

FORMAT, VERSION = "kseg-pretrained", 1
WEIGHTS, SIDECAR = "model.weights.h5", "kseg.json"


def entry_dir(key):
    return os.path.join(kseg_home(), "weights", key)


def read_entry(key):
    """``(weights path, sidecar dict)`` of a cached conversion, or None."""
    folder = entry_dir(key)
    weights, sidecar = os.path.join(folder, WEIGHTS), os.path.join(folder, SIDECAR)
    if not (os.path.isfile(weights) and os.path.isfile(sidecar)):
        return None
    meta = _read_sidecar(sidecar)
    return (weights, meta) if meta else None


def sidecar_of(weights_path):
    """The sidecar beside a ``.weights.h5`` written by :func:`save`: ``x.weights.h5`` -> ``x.json``."""
    return weights_path[: -len(".weights.h5")] + ".json" if weights_path.endswith(".weights.h5") else None


def save(model, meta, weights_path, sidecar_path=None):
    """Writes ``model``'s weights to ``weights_path`` (``.weights.h5``) and ``meta`` as JSON beside
    it (or to ``sidecar_path``), so ``kseg.from_pretrained(weights_path)`` rebuilds the model."""
    model.save_weights(weights_path)
    with open(sidecar_path or sidecar_of(weights_path), "w") as f:
        json.dump({"format": FORMAT, "version": VERSION, **meta}, f, indent=1)
        f.write("\n")


def _read_sidecar(path):
    with open(path) as f:
        meta = json.load(f)
    return meta if meta.get("format") == FORMAT and meta.get("version") == VERSION else None


def read_saved(weights_path):
    """``(weights_path, sidecar)`` of a ``.weights.h5`` saved with a sidecar (:func:`save`), or None."""
    sidecar = sidecar_of(os.fspath(weights_path))
    if not sidecar or not os.path.isfile(sidecar) or not os.path.isfile(weights_path):
        return None
    meta = _read_sidecar(sidecar)
    return (weights_path, meta) if meta else None


def write_entry(key, model, meta):
    """Saves ``model``'s weights and ``meta`` as the entry ``key`` (atomically); returns its folder."""
    folder = entry_dir(key)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=parent)
    try:
        save(model, meta, os.path.join(tmp, WEIGHTS), os.path.join(tmp, SIDECAR))
        if os.path.isdir(folder):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process (a worker of the same job) wrote it meanwhile
            if read_entry(key) is None:
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return folder
