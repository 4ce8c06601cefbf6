"""Recipe dataclasses and YAML loading."""

from kseg.config.recipe import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    Recipe,
    RecipeError,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    load_recipe,
    save_recipe,
)
