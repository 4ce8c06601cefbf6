"""``kseg.from_pretrained`` without network: URLs from a local HTTP server, a Hugging Face cache
laid out on disk, presets, the cache, offline use, checksums, broken downloads, class-count
changes, and the other places that name weights (recipes, predict, export metadata, the CLI)."""

import hashlib
import io
import os

import numpy as np
import pytest

import kseg
from kseg.pretrained import (
    PRESETS,
    DownloadError,
    OfflineError,
    class_table,
    pretrained_info,
)
from tests.convert.test_segmenter_setr_convert import randomize, segmenter_authors
from tests.pretrained.conftest import lay_out_hub_cache

torch = pytest.importorskip("torch")
X = np.random.default_rng(7).uniform(0, 255, (1, 48, 64, 3)).astype("float32")


def pth_bytes(state):
    buf = io.BytesIO()
    torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def seg_src():
    """A tiny Segmenter and its authors' checkpoint.pth bytes (5 classes)."""
    src = randomize(kseg.build_model("segmenter_vit_t16_mask", num_classes=5, depth=1, img_size=64,
                                     norm_epsilon=1e-5, pos_embed_interpolation="bilinear"), seed=21)
    return src, pth_bytes(segmenter_authors(src))


def messages(capsys):
    return capsys.readouterr().out


def test_url_download_convert_cache_and_offline(home, server, seg_src, capsys, monkeypatch):
    src, body = seg_src
    sha = hashlib.sha256(body).hexdigest()
    path = f"/segmenter/seg_tiny_mask-{sha[:8]}.pth"  # torch-hub / mmseg naming: checked against the sha256
    server.files[path] = body
    url = server.url(path)

    model = kseg.from_pretrained(url)
    out = messages(capsys)
    assert f"kseg: downloaded {url}" in out and f"sha256 {sha[:12]}, matches the published {sha[:8]}" in out, out
    assert "converted" in out and "into segmenter_vit_t16_mask" in out and "cached in" in out, out
    np.testing.assert_allclose(np.asarray(model(X)), np.asarray(src(X)), atol=1e-5)
    info = pretrained_info(model)
    assert info["source"] == url and info["sha256"] == sha and info["num_classes"] == 5
    assert info["config"]["norm_epsilon"] == 1e-5 and len(info["classes"]) == 5

    kseg.from_pretrained(url)  # from the cache: no second request
    assert "loaded" in messages(capsys) and server.hits[path] == 1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = kseg.from_pretrained(url)  # offline: the cache suffices
    np.testing.assert_allclose(np.asarray(again(X)), np.asarray(src(X)), atol=1e-5)
    with pytest.raises(OfflineError, match=r"offline .* is not downloaded: expected .*other\.pth"):
        kseg.from_pretrained(server.url("/segmenter/other.pth"))


def test_class_count_change_keeps_everything_but_the_classifier(home, server, seg_src, capsys):
    src, body = seg_src
    server.files["/k/checkpoint.pth"] = body
    model = kseg.from_pretrained(server.url("/k/checkpoint.pth"), num_classes=3)
    out = messages(capsys)
    assert "num_classes=3 (checkpoint: 5): loaded" in out and "left initialised:" in out, out
    assert "cls_emb" in out and "mask_norm" in out, out
    assert model.num_classes == 3 and tuple(model(X).shape) == (1, 3, 4, 3)
    for a, b in zip(model.encoder.weights, src.encoder.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert pretrained_info(model)["classes"] == ["class_0", "class_1", "class_2"]


def test_checksum_mismatch_and_cut_downloads_leave_nothing(home, server, seg_src):
    _, body = seg_src
    server.files["/bad/seg-deadbeef.pth"] = body
    with pytest.raises(DownloadError, match="checksum mismatch.*deadbeef"):
        kseg.from_pretrained(server.url("/bad/seg-deadbeef.pth"))
    server.files["/short/seg.pth"] = body
    with pytest.raises(DownloadError, match="stopped at|cannot download"):
        kseg.from_pretrained(server.url("/short/seg.pth"))
    server.files["/bad/garbage.pth"] = b"not a checkpoint" * 10
    with pytest.raises(ValueError, match="cannot read the checkpoint"):
        kseg.from_pretrained(server.url("/bad/garbage.pth"))
    leftovers = [f for _, _, files in os.walk(home) for f in files]
    assert leftovers == [], leftovers  # no .part, no corrupt file, no half-written cache entry


def test_hub_cache_offline_and_missing_repo(home, tmp_path, monkeypatch, capsys):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    hf = SegformerForSemanticSegmentation(SegformerConfig(depths=[1, 1, 1, 1], num_labels=150)).eval()
    hf.save_pretrained(tmp_path / "saved")
    lay_out_hub_cache(os.environ["HF_HUB_CACHE"], "nvidia/segformer-b0-finetuned-ade-512-512",
                      {n: tmp_path / "saved" / n for n in ("config.json", "model.safetensors")})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = kseg.models.SegFormer.from_pretrained("segformer_b0_ade20k_512")  # the preset: ADE20K classes
    assert "converted segformer_b0_ade20k_512" in messages(capsys)
    info = pretrained_info(model)
    assert info["classes"][:3] == ["wall", "building", "sky"] and info["miou"] == 37.4 and info["dataset"] == "ade20k"
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(((X - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375])
                                               .transpose(0, 3, 1, 2)).float()).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(X)), ref.transpose(0, 2, 3, 1), atol=1e-4)
    from kseg.config import DataConfig, ModelConfig, Recipe
    from kseg.export.metadata import class_metadata

    recipe = Recipe(model=ModelConfig(num_classes=150, pretrained="segformer_b0_ade20k_512"),
                    data=DataConfig(dataset="camvid", root=str(tmp_path / "nowhere")))
    names, palette = class_metadata(recipe, model)  # the export sidecar: the preset's classes, no dataset
    assert names == info["classes"] and palette.shape == (150, 3)
    with pytest.raises(TypeError, match="not a Segmenter"):
        kseg.models.Segmenter.from_pretrained("segformer_b0_ade20k_512", log=None)
    with pytest.raises(OfflineError, match="nvidia/mit-b0 is not in .*offline mode is on"):
        kseg.from_pretrained("mit_b0_imagenet")
    with pytest.raises(ValueError, match="not a kseg preset.*segformer_b0_ade20k_512"):
        kseg.from_pretrained("segformer_b9_nowhere")


def test_recipe_pretrained_for_every_family(home, tmp_path, capsys):
    """``model.pretrained`` takes a checkpoint of any family's layout (local files here; the
    SegFormer and Segmenter paths are exercised above and by the fine-tune recipe test)."""
    from kseg.config import ModelConfig, Recipe
    from kseg.models import SegViT, build_from_recipe
    from tests.convert.test_hf_maskformer import hf_model
    from tests.convert.test_segmenter_setr_convert import setr_authors
    from tests.convert.test_segvit_checkpoint import authors_state_dict
    from tests.pretrained.conftest import torch_save

    hf_model("swin").save_pretrained(tmp_path / "maskformer")
    setr = kseg.build_model("setr_pup_vit_t16", num_classes=4, depth=2, img_size=64)
    segvit = SegViT(3, backbone="vit_t16", img_size=64)
    segvit.build((None, None, None, 3))
    cases = {"maskformer_swin_t": tmp_path / "maskformer",
             "setr_pup_vit_t16": torch_save(setr_authors(setr), tmp_path / "setr.pth"),
             "segvit_vit_t16": torch_save(authors_state_dict(segvit), tmp_path / "segvit.pth")}
    for variant, path in cases.items():
        model = build_from_recipe(Recipe(model=ModelConfig(name=variant, num_classes=2, pretrained=str(path))))
        out = messages(capsys)
        assert model.variant == variant and model.num_classes == 2, variant
        assert "converted" in out and "num_classes=2" in out and "left initialised" in out, out


def test_presets_are_complete_data():
    from kseg.backbones.normalization import NORMALIZATIONS
    from kseg.models import list_variants

    assert len(PRESETS) >= 70
    for name, p in PRESETS.items():
        assert p["variant"] in list_variants(), name
        assert p["source"].startswith(("hf:", "https://")), name
        assert p["ref"] and len(p["crop_size"]) == 2 and p["normalization"] in NORMALIZATIONS, name
        if p["dataset"]:
            names, palette = class_table(p["dataset"], {"pascal_context_60": 60, "pascal_context": 59,
                                                         "cityscapes": 19, "coco_stuff10k": 171}.get(p["dataset"], 150))
            assert not names[0].startswith("class_") and len(palette) == len(names), name
    families = {p["variant"].split("_")[0] for p in PRESETS.values()}
    assert families == {"segformer", "segmenter", "setr", "segvit", "maskformer"}


def test_convert_cli_sidecar_round_trip_and_predict(home, tmp_path, seg_src, capsys):
    """tools/convert_weights.py writes DST + sidecar; from_pretrained(DST) and
    ``kseg.predict --pretrained DST`` use its classes and palette without a dataset."""
    import importlib.util

    from PIL import Image

    from tests.pretrained.conftest import torch_save

    spec = importlib.util.spec_from_file_location("cw", os.path.join(os.path.dirname(__file__), "..", "..", "tools",
                                                                      "convert_weights.py"))
    cw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cw)
    src, _ = seg_src
    ckpt = torch_save(segmenter_authors(src), tmp_path / "checkpoint.pth")
    dst = tmp_path / "seg.weights.h5"
    assert cw.main([str(ckpt), str(dst)]) == 0  # family, variant and settings read off the checkpoint
    out = messages(capsys)
    assert "norm_epsilon=1e-05" in out and "pos_embed_interpolation=bilinear" in out, out
    model = kseg.from_pretrained(str(dst))
    np.testing.assert_allclose(np.asarray(model(X)), np.asarray(src(X)), atol=1e-5)
    kseg.from_pretrained(str(ckpt))  # a local checkpoint is converted once, then loaded from the cache
    kseg.from_pretrained(str(ckpt))
    out = messages(capsys)
    assert out.count("kseg: converted") == 1 and "from the cache" in out, out
    Image.fromarray(X[0].astype("uint8")).save(tmp_path / "img.png")
    from kseg.predict import main as predict

    assert predict(["--pretrained", str(dst), "--input", str(tmp_path / "img.png"), "--output",
                    str(tmp_path / "pred")]) == 0
    label = np.asarray(Image.open(tmp_path / "pred" / "img.png"))
    assert label.shape == (48, 64) and label.max() < 5
