"""recipes/segformer_mit_b0_camvid_finetune.yaml runs here from a prepared cache: a random
MiT-B0 encoder laid out in a Hugging Face cache as ``nvidia/mit-b0``, used offline through
``python -m kseg.train`` for a few steps on CamVid (tiny sizes)."""

import os
import subprocess
import sys

import pytest

from tests.pretrained.conftest import lay_out_hub_cache

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "segformer_mit_b0_camvid_finetune.yaml")


@pytest.mark.slow
def test_finetune_recipe_from_a_prepared_cache(tmp_path, monkeypatch):
    import yaml
    from transformers import SegformerConfig, SegformerModel

    from kseg.data import find_data_root

    with open(RECIPE) as f:
        recipe = yaml.safe_load(f)
    assert recipe["model"]["pretrained"] == "nvidia/mit-b0" and recipe["optim"]["head_lr_mult"] == 10.0
    SegformerModel(SegformerConfig()).save_pretrained(tmp_path / "saved")  # MiT-B0 widths and depths
    lay_out_hub_cache(str(tmp_path / "hf"), "nvidia/mit-b0",
                      {n: tmp_path / "saved" / n for n in ("config.json", "model.safetensors")})
    real, root = find_data_root("camvid"), tmp_path / "camvid"  # CamVid with a 2-image val split
    root.mkdir()
    for name in os.listdir(real):
        os.symlink(os.path.join(real, name), root / name)
    with open(os.path.join(real, "val.txt")) as f:
        (root / "val2.txt").write_text("".join(f.readlines()[:2]))
    os.symlink(os.path.join(real, "val"), root / "val2")
    os.symlink(os.path.join(real, "valannot"), root / "val2annot")
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "hf"), "KSEG_HOME": str(tmp_path / "kseg")}
    sets = [f"data.root={root}", "data.val_split=val2", "data.scale=[120,90]", "data.crop_size=[64,64]",
            "train.global_batch_size=2", "train.max_steps=2", "train.eval_interval=2", "train.log_interval=1",
            "train.num_overlays=0", "eval.scale=[60,45]", "data.cache=false"]
    proc = subprocess.run([sys.executable, "-m", "kseg.train", "--recipe", RECIPE, "--work-dir", str(tmp_path / "run"),
                           *[a for s in sets for a in ("--set", s)]],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "kseg: converted nvidia/mit-b0" in out and "into segformer_mit_b0" in out, out[-3000:]
    assert "num_classes=11 (checkpoint: none, encoder only)" in out and "decode_head" in out, out[-3000:]
    assert os.path.isfile(tmp_path / "run" / "last.weights.h5")
    assert os.listdir(tmp_path / "kseg" / "weights")  # converted once, cached for the next run

    # evaluate / predict / export rebuild the fine-tuned model from the recipe offline
    from kseg.config import load_recipe
    from kseg.models import build_from_recipe

    for var in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "KSEG_HOME"):
        monkeypatch.setenv(var, env[var])
    model = build_from_recipe(load_recipe(RECIPE, sets), checkpoint=str(tmp_path / "run" / "last.weights.h5"))
    assert model.num_classes == 11 and model.variant == "segformer_mit_b0"
