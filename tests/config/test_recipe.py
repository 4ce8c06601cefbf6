import glob
import os

import pytest

from kseg.config import Recipe, RecipeError, load_recipe, save_recipe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write(path, text):
    path.write_text(text)
    return str(path)


def test_defaults_and_types(tmp_path):
    r = load_recipe(write(tmp_path / "r.yaml", "model: {name: segformer_mit_b0, num_classes: 11}\n"
                                               "data: {crop_size: [256, 320]}\noptim: {lr: 1}\n"))
    assert r.model.num_classes == 11 and r.data.crop_size == (256, 320)
    assert isinstance(r.optim.lr, float) and r.optim.lr == 1.0
    assert r.train.global_batch_size == 16  # default kept


def test_unknown_key_lists_valid_ones(tmp_path):
    path = write(tmp_path / "r.yaml", "train: {max_step: 10}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert "train.max_step" in msg and "max_steps" in msg and "r.yaml" in msg


def test_unknown_section_and_wrong_type(tmp_path):
    with pytest.raises(RecipeError, match="unknown section 'trian'"):
        load_recipe(write(tmp_path / "a.yaml", "trian: {}\n"))
    with pytest.raises(RecipeError, match="train.max_steps must be int"):
        load_recipe(write(tmp_path / "b.yaml", "train: {max_steps: ten}\n"))
    with pytest.raises(RecipeError, match="data.crop_size must be a list of 2"):
        load_recipe(write(tmp_path / "c.yaml", "data: {crop_size: 512}\n"))


def test_extends_one_level_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "model: {name: segformer_mit_b2, num_classes: 150}\ntrain: {max_steps: 100}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ntrain: {eval_interval: 10}\n")
    r = load_recipe(child, ["train.max_steps=7", "data.crop_size=[64, 96]", "optim.clip_grad_norm=null"])
    assert r.model.name == "segformer_mit_b2" and r.train.eval_interval == 10
    assert r.train.max_steps == 7 and r.data.crop_size == (64, 96) and r.optim.clip_grad_norm is None
    grandchild = write(tmp_path / "gc.yaml", "extends: child.yaml\n")
    with pytest.raises(RecipeError, match="one level"):
        load_recipe(grandchild)
    with pytest.raises(RecipeError, match="unknown key 'train.nope'"):
        load_recipe(child, ["train.nope=1"])
    with pytest.raises(RecipeError, match="section.key=value"):
        load_recipe(child, ["max_steps=3"])


def test_saved_recipe_round_trips(tmp_path):
    r = load_recipe(os.path.join(REPO, "recipes", "segformer_mit_b0_camvid.yaml"), ["train.seed=3"])
    out = tmp_path / "resolved.yaml"
    save_recipe(r, str(out))
    again = load_recipe(str(out))
    assert again.to_dict() == r.to_dict()
    assert isinstance(r, Recipe)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "recipes", "*.yaml"))))
def test_every_shipped_recipe_loads_and_names_a_variant(path):
    from kseg.models import list_variants

    from kseg.data.registry import list_datasets
    from kseg.training.optimizer import build_optimizer

    r = load_recipe(path)
    assert r.model.name in list_variants()
    assert r.data.dataset in list_datasets()
    assert r.train.max_steps > 0 and r.optim.lr > 0
    optimizer = build_optimizer(r.optim, r.schedule, r.train.max_steps, head_path_pattern="head/.*")
    assert len(optimizer.optimizers) == (1 if r.optim.head_lr_mult == 1 else 2)
    assert all(type(o).__name__ == {"adamw": "AdamW", "sgd": "SGD"}[r.optim.name] for o in optimizer.optimizers)
