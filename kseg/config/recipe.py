"""Training recipes: frozen dataclasses loaded from YAML.

A recipe has six sections (``model``, ``data``, ``optim``, ``schedule``, ``train``,
``eval``); each YAML key maps to exactly one dataclass field. A recipe may name one
parent with ``extends: other.yaml`` (resolved relative to the recipe's folder); the
child's keys override the parent's section by section. ``--set a.b=c`` overrides any
field after loading, with ``c`` parsed as YAML (``--set train.max_steps=10``,
``--set data.crop_size=[256,256]``).

Errors: :class:`RecipeError` names the file, the key and the valid alternatives.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Optional, Tuple

import yaml


class RecipeError(ValueError):
    """A recipe file, key or value is invalid. The message names it and the fix."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "segformer_mit_b0"  # a registered variant id, see kseg.models.list_variants()
    num_classes: int = 150
    drop_path_rate: Optional[float] = None  # None: the variant's default (SegFormer 0.1)
    dropout: Optional[float] = None  # classifier dropout; None: the variant's default
    pretrained: Optional[str] = None  # a preset, Hub id, URL or checkpoint (kseg.from_pretrained), or a .weights.h5
    ignore_index: int = 255
    # Per-class cross-entropy weights (K values), e.g. median-frequency balancing; None: 1.
    class_weight: Optional[Tuple[float, ...]] = None


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "ade20k"  # registered name: camvid, ade20k, folder
    root: Optional[str] = None  # None: $KSEG_DATA/<dir>, ./data/<dir>, ../shared/data/<dir>
    folder_spec: Optional[str] = None  # dataset.yaml of a generic folder dataset
    train_split: str = "train"
    val_split: str = "val"
    # mmseg-style img_scale (long edge, short edge) in pixels: the training image is
    # resized to fit inside scale * ratio (keep aspect), ratio ~ U(ratio_range).
    scale: Tuple[int, int] = (2048, 512)
    ratio_range: Tuple[float, float] = (0.5, 2.0)
    crop_size: Tuple[int, int] = (512, 512)  # (H, W) of training crops
    cat_max_ratio: float = 0.75  # max share of one class in a crop (10 retries)
    flip_prob: float = 0.5
    photometric: bool = True  # brightness 32, contrast/saturation 0.5-1.5, hue 18
    reduce_zero_label: Optional[bool] = None  # None: the dataset's default
    skip_bad_samples: bool = False
    cache: bool = False  # keep decoded images in memory (small datasets)
    shuffle_buffer: int = 1000


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 6e-5
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    head_lr_mult: float = 10.0  # decode head learning-rate multiplier (SegFormer code)
    no_decay_on_norm_bias: bool = True
    clip_grad_norm: Optional[float] = None


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "poly"  # poly | constant
    warmup_steps: int = 1500
    warmup_ratio: float = 1e-6  # lr at step 0 = lr * warmup_ratio
    power: float = 1.0
    min_lr: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    global_batch_size: int = 16
    max_steps: int = 160000
    eval_interval: int = 16000
    backup_interval: int = 1000  # steps between BackupAndRestore saves
    log_interval: int = 50
    seed: int = 0
    precision: str = "float32"  # float32 | mixed_float16 (dynamic loss scaling) | mixed_bfloat16
    # Micro-batches per optimizer step (gradient accumulation): global_batch_size is split
    # into replicas x accumulate_steps micro-batches whose gradients are summed.
    accumulate_steps: int = 1
    jit_compile: bool = False
    steps_per_execution: int = 1
    num_overlays: int = 4  # validation overlays written to TensorBoard per evaluation
    work_dir: Optional[str] = None  # None: work_dirs/<recipe file stem>


@dataclass(frozen=True)
class EvalConfig:
    mode: str = "whole"  # whole | slide | ms_flip
    # Resize so the image fits inside (long, short) keeping aspect (mmseg Resize
    # keep_ratio) before inference; None keeps the original size.
    scale: Optional[Tuple[int, int]] = (2048, 512)
    crop_size: Tuple[int, int] = (512, 512)  # slide window (H, W)
    stride: Tuple[int, int] = (341, 341)  # slide stride (H, W)
    batch_size: int = 1
    # ms_flip: each ratio scales `scale` (mmseg img_ratios), `ms_inner_mode` (whole | slide)
    # runs at each, optionally also on the flipped image; softmax probabilities averaged.
    ms_ratios: Tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    ms_flip: bool = True
    ms_inner_mode: str = "whole"


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


@dataclass(frozen=True)
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    source: Optional[str] = None  # path of the YAML it came from

    def to_dict(self) -> dict:
        out = {}
        for section in SECTIONS:
            out[section] = {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(getattr(self, section)).items()
            }
        return out

    def replace(self, **overrides: str) -> "Recipe":
        """Returns a copy with ``{"train.max_steps": 10}``-style overrides applied."""
        return apply_overrides(self, [f"{k}={v}" for k, v in overrides.items()])


def _coerce(section: str, key: str, value, type_hint, where: str):
    """Checks ``value`` against a dataclass field type; returns it converted."""
    origin = typing.get_origin(type_hint)
    args = typing.get_args(type_hint)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(section, key, value, inner, where)
    if origin in (tuple, Tuple) and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: {section}.{key} must be a list, got {value!r}")
        return tuple(_coerce(section, key, v, args[0], where) for v in value)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise RecipeError(
                f"{where}: {section}.{key} must be a list of {len(args)} values, got {value!r}"
            )
        return tuple(_coerce(section, key, v, a, where) for v, a in zip(value, args))
    if type_hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if type_hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if type_hint in (int, str, bool) and not (
        isinstance(value, type_hint) and not (type_hint is int and isinstance(value, bool))
    ):
        raise RecipeError(
            f"{where}: {section}.{key} must be {type_hint.__name__}, got {value!r}"
        )
    return value


def _build_section(section: str, values: dict, where: str):
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in valid:
            raise RecipeError(
                f"{where}: unknown key '{section}.{key}'. Valid keys of '{section}': "
                + ", ".join(valid)
            )
        kwargs[key] = _coerce(section, key, value, hints[key], where)
    return cls(**kwargs)


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise RecipeError(f"recipe file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def _check_sections(data: dict, path: str):
    for key, value in data.items():
        if key == "extends":
            continue
        if key not in SECTIONS:
            raise RecipeError(
                f"{path}: unknown section '{key}'. Valid sections: extends, " + ", ".join(SECTIONS)
            )
        if value is not None and not isinstance(value, dict):
            raise RecipeError(f"{path}: section '{key}' must be a mapping, got {value!r}")


def load_recipe(path: str, overrides: Optional[list] = None) -> Recipe:
    """Loads a recipe YAML (with one level of ``extends:``) and applies ``--set`` overrides.

    Args:
      path: the recipe file.
      overrides: strings ``"section.key=value"``; the value is parsed as YAML.

    Raises:
      RecipeError: missing file, invalid YAML, unknown section or key (the message lists
        the valid ones), a value of the wrong type, or a parent that itself extends.
    """
    data = _read_yaml(path)
    _check_sections(data, path)
    merged = {s: {} for s in SECTIONS}
    parent = data.get("extends")
    if parent:
        parent_path = os.path.join(os.path.dirname(os.path.abspath(path)), parent)
        parent_data = _read_yaml(parent_path)
        _check_sections(parent_data, parent_path)
        if parent_data.get("extends"):
            raise RecipeError(
                f"{path}: extends {parent}, which itself extends {parent_data['extends']}; "
                "recipes allow one level of extends: copy the grandparent's keys into the parent"
            )
        for s in SECTIONS:
            merged[s].update(parent_data.get(s) or {})
    for s in SECTIONS:
        merged[s].update(data.get(s) or {})
    recipe = Recipe(
        **{s: _build_section(s, merged[s], path) for s in SECTIONS}, source=os.path.abspath(path)
    )
    return apply_overrides(recipe, overrides or [])


def apply_overrides(recipe: Recipe, overrides: list) -> Recipe:
    """Applies ``"section.key=value"`` strings (value parsed as YAML) to a recipe."""
    sections = {s: dataclasses.asdict(getattr(recipe, s)) for s in SECTIONS}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise RecipeError(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=100")
        dotted, raw = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        if section not in SECTIONS:
            raise RecipeError(f"--set {item!r}: unknown section '{section}'. Valid: " + ", ".join(SECTIONS))
        sections[section][key] = yaml.safe_load(raw)
    where = "--set" if overrides else (recipe.source or "recipe")
    return Recipe(
        **{s: _build_section(s, sections[s], where) for s in SECTIONS}, source=recipe.source
    )


def save_recipe(recipe: Recipe, path: str) -> None:
    """Writes the resolved recipe (every field, no ``extends``) as YAML."""
    with open(path, "w") as f:
        if recipe.source:
            f.write(f"# resolved from {recipe.source}\n")
        yaml.safe_dump(recipe.to_dict(), f, sort_keys=False)
