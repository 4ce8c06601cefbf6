"""Per-target export specs: a small YAML of export settings (``export/*.yaml``).

``python -m kseg.export --spec export/segformer_mit_b0_mobile.yaml --recipe R
--checkpoint C --output O`` takes its settings from the spec; flags given on the command
line override it. Keys (all optional)::

    description: free text
    format: tflite                # tflite | saved_model
    input_size: [512, 512]        # (H, W) of the TFLite input
    quantize: int8                # none | fp16 | dynamic | int8
    float_ops: []                 # int8: TFLite op types kept in float (e.g. [MEAN, RSQRT])
    calibration_images: 100       # int8: representative images from the training pipeline
    threads: 2                    # interpreter threads (verification; written for the app)
    verify_images: 20             # val images of the built-in check (0 disables)
    min_agreement: 99.9           # fail the export below this pixel agreement (percent)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import yaml


class SpecError(ValueError):
    """An export spec file or value is invalid; the message names the file, key and fix."""


@dataclass(frozen=True)
class ExportSpec:
    description: Optional[str] = None
    format: Optional[str] = None
    input_size: Optional[Tuple[int, int]] = None
    quantize: Optional[str] = None
    float_ops: Optional[Tuple[str, ...]] = None
    calibration_images: Optional[int] = None
    threads: Optional[int] = None
    verify_images: Optional[int] = None
    min_agreement: Optional[float] = None


FORMATS = ("saved_model", "tflite")


def load_spec(path: str) -> ExportSpec:
    """Reads and validates an export spec YAML.

    Raises:
      SpecError: missing file, invalid YAML, unknown key (valid keys listed), bad value.
    """
    from kseg.export.tflite import QUANTIZE_MODES

    if not os.path.isfile(path):
        raise SpecError(f"export spec not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SpecError(f"{path}: an export spec is a mapping of keys, got {type(data).__name__}")
    valid = [f.name for f in dataclasses.fields(ExportSpec)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(valid)}")
    out = dict(data)

    def bad(key, expected):
        return SpecError(f"{path}: {key} must be {expected}, got {data[key]!r}")

    if out.get("format") is not None and out["format"] not in FORMATS:
        raise bad("format", " or ".join(FORMATS))
    if out.get("quantize") is not None and out["quantize"] not in QUANTIZE_MODES:
        raise bad("quantize", "one of " + ", ".join(QUANTIZE_MODES))
    if out.get("input_size") is not None:
        v = out["input_size"]
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(i, int) for i in v)):
            raise bad("input_size", "a list [H, W] of two integers")
        out["input_size"] = tuple(v)
    if out.get("float_ops") is not None:
        if not isinstance(out["float_ops"], (list, tuple)):
            raise bad("float_ops", "a list of TFLite op names")
        out["float_ops"] = tuple(str(o).upper() for o in out["float_ops"])
    for key in ("calibration_images", "threads", "verify_images"):
        if out.get(key) is not None and (not isinstance(out[key], int) or out[key] < 0):
            raise bad(key, "a non-negative integer")
    if out.get("min_agreement") is not None:
        if not isinstance(out["min_agreement"], (int, float)) or not 0 <= out["min_agreement"] <= 100:
            raise bad("min_agreement", "a percentage in [0, 100]")
        out["min_agreement"] = float(out["min_agreement"])
    return ExportSpec(**out)
