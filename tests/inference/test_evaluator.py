"""evaluate(): one confusion matrix over a split, per EvalConfig."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.config.recipe import EvalConfig
from kseg.inference import evaluate, predict_logits, save_results
from kseg.metrics import summarize

K = 4
SIZES = [(24, 40), (33, 21), (16, 16)]


def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(K, 4, strides=4, padding="same")]
    )


def split():
    rng = np.random.default_rng(0)
    items = []
    for h, w in SIZES:
        img = rng.integers(0, 256, (1, h, w, 3)).astype(np.uint8)
        lab = rng.integers(0, K - 1, (1, h, w)).astype(np.int32)  # class K-1 never in gt
        lab[:, :3] = 255
        items.append((img, lab))
    return items


def reference_cm(m, items, **kwargs):
    cm = np.zeros((K, K), np.int64)
    for img, lab in items:
        pred = tf.argmax(predict_logits(m, img, **kwargs), axis=-1).numpy()
        keep = lab != 255
        cm += np.bincount(lab[keep] * K + pred[keep], minlength=K * K).reshape(K, K)
    return cm


@pytest.mark.parametrize(
    "cfg",
    [
        EvalConfig(mode="whole", scale=None),
        EvalConfig(mode="whole", scale=(48, 24)),
        EvalConfig(mode="slide", scale=None, crop_size=(16, 16), stride=(12, 12)),
    ],
)
def test_evaluate_matches_reference(cfg):
    m, items = model(), split()
    ds = tf.data.Dataset.from_generator(
        lambda: iter(items),
        output_signature=(
            tf.TensorSpec([1, None, None, 3], tf.uint8),
            tf.TensorSpec([1, None, None], tf.int32),
        ),
    )
    seen = []
    result = evaluate(
        m, ds, K, cfg, class_names=list("abcd"), progress=False,
        on_image=lambda image, label, pred: seen.append((image.shape, label.shape, pred.shape)),
    )
    ref = reference_cm(
        m, items, mode=cfg.mode, scale=cfg.scale, crop_size=cfg.crop_size, stride=cfg.stride
    )
    np.testing.assert_array_equal(result["confusion_matrix"], ref)
    expected = summarize(ref, list("abcd"))
    assert result["mIoU"] == pytest.approx(expected["mIoU"])
    assert result["aAcc"] == pytest.approx(expected["aAcc"])
    assert result["Acc"]["d"] is None and result["num_images"] == 3
    assert seen == [((h, w, 3), (h, w), (h, w)) for h, w in SIZES]
    # The eval JSON says how it was computed, and how fast.
    assert result["inference"]["mode"] == cfg.mode
    assert result["inference"]["scale"] == (None if cfg.scale is None else list(cfg.scale))
    if cfg.mode == "slide":
        assert result["inference"]["crop_size"] == list(cfg.crop_size)
        assert result["inference"]["stride"] == list(cfg.stride)
    assert result["images_per_second"] > 0 and result["seconds"] > 0


def test_mixed_sizes_trace_one_graph():
    from kseg.inference import evaluator

    m, items = model(), split()  # three image sizes
    for cfg in (EvalConfig(scale=None), EvalConfig(mode="ms_flip", scale=(48, 24), ms_ratios=(0.5, 1.0))):
        evaluate(m, items + items[::-1], K, cfg, progress=False)
        (step,) = evaluator._STEPS[m].values()
        assert step.experimental_get_tracing_count() == 1, cfg
    result = evaluate(m, items, K, EvalConfig(mode="ms_flip", scale=(48, 24), ms_ratios=(0.5, 1.0)),
                      progress=False)
    assert result["inference"] == {"mode": "ms_flip", "scale": [48, 24], "ms_ratios": [0.5, 1.0],
                                   "ms_flip": True, "ms_inner_mode": "whole"}


def test_batches_max_images_progress_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KSEG_PROGRESS", "bar")  # a terminal's bar (a pipe shows long runs only)
    m = model()
    rng = np.random.default_rng(1)
    batches = [
        (rng.uniform(0, 255, (2, 12, 20, 3)).astype(np.float32), rng.integers(0, K, (2, 12, 20, 1)))
        for _ in range(2)
    ]
    result = evaluate(m, batches, K, {"mode": "whole", "scale": None}, max_images=3)
    assert result["num_images"] == 3
    flat = [(b[0][i : i + 1], b[1][i : i + 1, ..., 0]) for b in batches for i in range(2)][:3]
    np.testing.assert_array_equal(result["confusion_matrix"], reference_cm(m, flat))
    assert "mIoU" in capsys.readouterr().out  # the progress bar
    unbatched = evaluate(m, [(x[0], y[0]) for x, y in flat], K, None, progress=False)
    assert unbatched["confusion_matrix"] == result["confusion_matrix"]
    path = tmp_path / "eval" / "val.json"
    save_results({**result, "mIoU": float("nan")}, str(path))
    loaded = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert loaded["mIoU"] is None and loaded["confusion_matrix"] == result["confusion_matrix"]


def test_step_cache_does_not_keep_models_alive():
    import gc
    import weakref

    from kseg.inference import evaluator

    m = model()
    evaluate(m, split()[:1], K, EvalConfig(scale=None), progress=False)
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None and len(evaluator._STEPS) == 0


def test_bad_label_names_the_image():
    m = model()
    items = split()
    items[1][1][0, 5, 5] = K  # out of range, not ignore
    match = r"on image 1 of .*label values must be in \[0, 4\).*min, max:\] \[1\] \[4\] \[4\]"
    with pytest.raises(ValueError, match=match):
        evaluate(m, items, K, EvalConfig(scale=None), progress=False)
    with pytest.raises(ValueError, match="valid: whole, slide"):
        evaluate(m, items, K, EvalConfig(mode="ms"), progress=False)


def test_same_size_images_are_grouped():
    from kseg.inference.evaluator import _same_size_groups

    def item(b, n, h):
        return b, tf.zeros((n, h, 8, 3)), tf.fill((n, h, 8), b)

    groups = list(_same_size_groups([item(0, 1, 4), item(1, 1, 4), item(2, 1, 4), item(3, 1, 4), item(4, 1, 4),
                                     item(5, 1, 6), item(6, 2, 6), item(7, 5, 6)], 4))
    assert [(b0, b1, int(x.shape[0]), int(x.shape[1])) for b0, b1, x, _ in groups] == [
        (0, 3, 4, 4), (4, 4, 1, 4), (5, 6, 3, 6), (7, 7, 5, 6)]
    np.testing.assert_array_equal(groups[0][3][:, 0, 0], [0, 1, 2, 3])  # order kept
    # evaluate() with and without grouping: same matrix (images of one size, in order)
    m = model()
    rng = np.random.default_rng(3)
    items = [(rng.integers(0, 256, (1, 20, 28, 3)).astype(np.uint8), rng.integers(0, K, (1, 20, 28)).astype(np.int32))
             for _ in range(6)]
    seen = []
    grouped = evaluate(m, items, K, None, progress=False, on_image=lambda i, l, p: seen.append(int(l[0, 0])))
    single = evaluate(m, items, K, None, progress=False, group_images=1)
    assert grouped["confusion_matrix"] == single["confusion_matrix"] and grouped["num_images"] == 6
    assert seen == [int(lab[0, 0, 0]) for _, lab in items]
