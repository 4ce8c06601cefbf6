"""Confusion matrix, summarize (mmseg total_area_to_metrics) and the MeanIoU Keras metric."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.metrics import MeanIoU, SegMeanIoU, confusion_matrix, format_table, summarize

K = 6


def np_confusion(labels, preds, k, ignore=255):
    labels, preds = np.asarray(labels).ravel(), np.asarray(preds).ravel()
    keep = labels != ignore
    return np.bincount(labels[keep] * k + preds[keep], minlength=k * k).reshape(k, k)


def random_case(seed=0, shape=(2, 17, 23)):
    """Labels in {0..3} + ignore, preds in {0..4}: class 4 only predicted, class 5 absent."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, shape).astype(np.int32)
    labels[rng.random(shape) < 0.2] = 255
    preds = np.where(rng.random(shape) < 0.6, labels, rng.integers(0, 5, shape)).astype(np.int32)
    preds[preds == 255] = 1
    return labels, preds


def test_confusion_matrix_matches_numpy():
    labels, preds = random_case()
    cm = confusion_matrix(labels, preds, K)
    assert cm.dtype == tf.int64 and cm.shape == (K, K)
    np.testing.assert_array_equal(cm.numpy(), np_confusion(labels, preds, K))
    assert cm.numpy().sum() == (labels != 255).sum()


def test_confusion_matrix_in_tf_function_and_xla():
    labels, preds = random_case(1)
    ref = np_confusion(labels, preds, K)
    spec = tf.TensorSpec([None, None, None], tf.int32)
    graph = tf.function(lambda a, b: confusion_matrix(a, b, K), input_signature=[spec, spec])
    np.testing.assert_array_equal(graph(labels, preds).numpy(), ref)
    xla = tf.function(lambda a, b: confusion_matrix(a, b, K), jit_compile=True)
    np.testing.assert_array_equal(xla(labels, preds).numpy(), ref)


@pytest.mark.parametrize("bad", [K, -1, 254])
def test_out_of_range_label_raises(bad):
    labels, preds = random_case()
    labels[0, 0, 0] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label values must be in \[0, 6\)"):
        confusion_matrix(labels, preds, K)
    graph = tf.function(lambda a, b: confusion_matrix(a, b, K))
    with pytest.raises(tf.errors.InvalidArgumentError, match="ignore index 255"):
        graph(labels, preds)


def test_out_of_range_pred_raises():
    labels, preds = random_case()
    preds[0, 0, 0] = K
    with pytest.raises(tf.errors.InvalidArgumentError, match="predictions"):
        confusion_matrix(labels, preds, K)


def test_summarize_matches_mmseg_formulas_and_skips_absent_classes():
    labels, preds = random_case(2)
    cm = np_confusion(labels, preds, K)
    names = ["a", "b", "c", "d", "only_pred", "absent"]
    s = summarize(cm, names)
    inter, gt, pr = np.diag(cm), cm.sum(1), cm.sum(0)
    iou = inter[:5] / (gt[:5] + pr[:5] - inter[:5])
    acc = inter[:4] / gt[:4]
    assert math.isclose(s["aAcc"], inter.sum() / cm.sum() * 100)
    assert math.isclose(s["mIoU"], iou.mean() * 100)  # 'absent' skipped, 'only_pred' counts 0
    assert math.isclose(s["mAcc"], acc.mean() * 100)  # no ground truth: skipped in mAcc
    assert s["IoU"]["absent"] is None and s["Acc"]["absent"] is None
    assert s["IoU"]["only_pred"] == 0.0 and s["Acc"]["only_pred"] is None
    assert math.isclose(s["IoU"]["a"], iou[0] * 100)
    json.dumps(s)  # per-class values are JSON-safe


def test_summarize_skipping_rule_by_hand():
    cm = np.zeros((3, 3), np.int64)
    cm[0, 0], cm[0, 1], cm[1, 1] = 3, 1, 2  # class 2 absent from gt and prediction
    s = summarize(cm)
    assert s["IoU"] == {"0": 75.0, "1": pytest.approx(200 / 3), "2": None}
    assert s["Acc"] == {"0": 75.0, "1": 100.0, "2": None}
    assert s["mIoU"] == pytest.approx((75 + 200 / 3) / 2)
    assert s["mAcc"] == pytest.approx(87.5)
    assert s["aAcc"] == pytest.approx(5 / 6 * 100)
    assert math.isnan(summarize(np.zeros((2, 2)))["mIoU"])
    with pytest.raises(ValueError, match="class_names"):
        summarize(cm, ["x"])


def test_format_table():
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    text = format_table(summarize(cm, ["road", "sky", "cat"]))
    assert "| Class |" in text and "road" in text and "75.00" in text
    assert "nan" in text.splitlines()[6]  # the 'cat' row
    assert "aAcc" in text and "83.33" in text


def _logits_for(preds, k, stride):
    """Logits at 1/stride resolution whose bilinear upsampling argmax is well defined."""
    return tf.one_hot(preds[:, ::stride, ::stride], k) * 10.0


def test_mean_iou_metric_resizes_and_accumulates():
    rng = np.random.default_rng(3)
    m = MeanIoU(num_classes=K)
    total = np.zeros((K, K), np.int64)
    for _ in range(2):
        labels = rng.integers(0, 4, (2, 16, 24)).astype(np.int32)
        labels[rng.random(labels.shape) < 0.1] = 255
        logits = tf.random.normal([2, 4, 6, K], seed=1)
        m.update_state(labels, logits)
        preds = tf.argmax(tf.image.resize(logits, (16, 24)), -1).numpy()
        total += np_confusion(labels, preds, K)
    np.testing.assert_array_equal(m.confusion_matrix().numpy(), total)
    assert float(m.result()) == pytest.approx(summarize(total)["mIoU"], rel=1e-6)  # percent
    assert m.summary()["aAcc"] == pytest.approx(summarize(total)["aAcc"])
    m.reset_state()
    assert m.confusion_matrix().numpy().sum() == 0 and float(m.result()) == 0.0


def test_mean_iou_sample_weight_masks_pixels():
    labels = np.array([[[0, 1], [1, 0]]], np.int32)
    logits = tf.one_hot([[[0, 0], [1, 1]]], 2)
    m = MeanIoU(2)
    m.update_state(labels, logits, sample_weight=np.array([[[1, 0], [1, 1]]]))
    np.testing.assert_array_equal(m.confusion_matrix().numpy(), [[1, 1], [0, 1]])


def test_mean_iou_serialization():
    m = MeanIoU(num_classes=5, ignore_index=0, name="val_miou")
    config = keras.saving.serialize_keras_object(m)
    assert config["registered_name"] == "kseg>SegMeanIoU"
    m2 = keras.saving.deserialize_keras_object(config)
    assert isinstance(m2, MeanIoU) and m2.num_classes == 5 and m2.ignore_index == 0
    assert m2.name == "val_miou"
    assert SegMeanIoU is MeanIoU and MeanIoU(3).name == "mIoU"


def test_mean_iou_in_compile_and_evaluate():
    k = 3
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(k, 2, strides=2, padding="same")]
    )
    model.compile(loss=lambda y, p: 0.0 * tf.reduce_mean(p), metrics=[MeanIoU(k)])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 8, 12, 3)).astype(np.float32)
    y = rng.integers(0, k, (4, 8, 12)).astype(np.int32)
    y[:, :2] = 255
    logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    preds = tf.argmax(tf.image.resize(model(x), (8, 12)), -1).numpy()
    ref = summarize(np_confusion(y, preds, k))["mIoU"]  # percent, as the eval JSON
    assert logs["mIoU"] == pytest.approx(ref, rel=1e-5)


MIRRORED = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from kseg.metrics import MeanIoU
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        m = MeanIoU(3)
    labels = tf.constant([[[0, 1]], [[2, 255]]], tf.int32)   # global batch 2: one per replica
    logits = tf.one_hot([[[0, 0]], [[2, 2]]], 3)
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors((labels, logits)).unbatch().batch(2))
    @tf.function
    def step(batch):
        strategy.run(m.update_state, args=batch)
    for batch in ds:
        step(batch)
    print(m.confusion_matrix().numpy().tolist(), float(m.result()))
    """
)


def test_mean_iou_is_replica_safe_under_mirrored_strategy():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=root)
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED], capture_output=True, text=True, env=env, cwd=root
    )
    assert out.returncode == 0, out.stderr[-3000:]
    cm, miou = out.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    # replica 0: label 0->0, 1->0 ; replica 1: label 2->2 (255 ignored); summed on read
    assert cm == "[[1, 0, 0], [1, 0, 0], [0, 0, 1]]"
    assert float(miou) == pytest.approx(100 * (0.5 + 0 + 1) / 3)
