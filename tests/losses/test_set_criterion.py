"""MaskFormer set criterion: targets from label maps, parity with HF's MaskFormerLoss, matchers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.losses.set_criterion import MaskFormerCriterion, semantic_targets


def make_batch(seed=0, b=3, q=8, k=5, h=8, w=12, n_aux=2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, (b, 4 * h, 4 * w)).astype("int32") * 2  # classes 0, 2, 4
    labels[0, :10] = 1
    labels[0, :, :5] = 255  # ignore
    labels[1] = 3
    labels[1, 5:9, 7:20] = 0
    labels[-1] = 255  # an image without any segment

    def out():
        return {"class_logits": rng.normal(size=(b, q, k + 1)).astype("float32"),
                "mask_logits": (2 * rng.normal(size=(b, h, w, q))).astype("float32")}

    outputs = out()
    outputs["aux_outputs"] = [out() for _ in range(n_aux)]
    return labels, outputs


def test_semantic_targets_follow_the_dataset_mapper():
    labels = np.array([[[1, 1, 3], [255, 3, 3]], [[255, 255, 255], [255, 255, 255]]], "int32")
    classes, valid = semantic_targets(tf.constant(labels), num_classes=4, max_targets=3)
    np.testing.assert_array_equal(np.asarray(valid), [[True, True, False], [False, False, False]])
    np.testing.assert_array_equal(np.asarray(classes)[0, :2], [3, 1])  # largest class first
    # more classes than slots: the smallest ones are dropped
    classes, valid = semantic_targets(tf.constant(labels), num_classes=4, max_targets=1)
    assert np.asarray(classes)[0, 0] == 3 and np.asarray(valid).sum() == 1


def hf_loss(labels, outputs, k, aux=True):
    import torch
    from transformers.models.maskformer.modeling_maskformer import MaskFormerHungarianMatcher, MaskFormerLoss

    matcher = MaskFormerHungarianMatcher(cost_class=1.0, cost_mask=20.0, cost_dice=1.0)
    weights = {"loss_cross_entropy": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}
    loss = MaskFormerLoss(k, matcher=matcher, weight_dict=weights, eos_coef=0.1)
    loss.empty_weight = torch.cat([torch.ones(k), torch.tensor([0.1])])
    mask_labels, class_labels = [], []
    for lab in labels:  # the authors' semantic dataset mapper
        present = [c for c in np.unique(lab) if c != 255]
        class_labels.append(torch.tensor(present, dtype=torch.int64))
        mask_labels.append(torch.tensor(np.stack([lab == c for c in present]) if present
                                        else np.zeros((0,) + lab.shape), dtype=torch.float32))

    def t(o):
        return (torch.tensor(o["mask_logits"]).permute(0, 3, 1, 2), torch.tensor(o["class_logits"]))

    m, c = t(outputs)
    aux_preds = None
    if aux:
        aux_preds = [dict(zip(("masks_queries_logits", "class_queries_logits"), t(a))) for a in outputs["aux_outputs"]]
    with torch.no_grad():
        parts = loss(m, c, mask_labels, class_labels, aux_preds)
    total = 0.0
    for key, value in parts.items():
        total += float(value) * next(wt for name, wt in weights.items() if name in key)
    return total


@pytest.mark.parametrize("matcher", ["scipy", "hungarian"])
def test_matches_hf_maskformer_loss_with_aux_outputs(matcher):
    labels, outputs = make_batch()
    labels = labels[:2]  # HF's loss cannot take an image without segments
    outputs = {"class_logits": outputs["class_logits"][:2], "mask_logits": outputs["mask_logits"][:2],
               "aux_outputs": [{k: v[:2] for k, v in a.items()} for a in outputs["aux_outputs"]]}
    crit = MaskFormerCriterion(num_classes=5, num_queries=8, matcher=matcher)
    got = float(crit(tf.constant(labels), outputs))
    np.testing.assert_allclose(got, hf_loss(labels, outputs, 5), rtol=1e-5)
    no_aux = {k: v for k, v in outputs.items() if k != "aux_outputs"}
    np.testing.assert_allclose(float(crit(tf.constant(labels), no_aux)), hf_loss(labels, outputs, 5, aux=False),
                               rtol=1e-5)


def test_image_without_segments_only_pays_no_object_cross_entropy():
    labels, outputs = make_batch(seed=1)
    crit = MaskFormerCriterion(num_classes=5, num_queries=8)
    empty = {k: v[-1:] for k, v in outputs.items() if k != "aux_outputs"}
    logits = tf.constant(empty["class_logits"])
    expected = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.fill((1, 8), 5), logits=logits))
    np.testing.assert_allclose(float(crit(tf.constant(labels[-1:]), empty)), float(expected), rtol=1e-5)
    full = float(crit(tf.constant(labels), outputs))
    assert np.isfinite(full)


def test_gradients_flow_through_matched_masks_and_classes_and_graph_modes():
    labels, outputs = make_batch(seed=2, n_aux=1)
    crit = MaskFormerCriterion(num_classes=5, num_queries=8, matcher="hungarian")
    variables = tf.nest.map_structure(tf.Variable, outputs)
    with tf.GradientTape() as tape:
        loss = crit(tf.constant(labels), variables)
    grads = tape.gradient(loss, variables)
    assert float(tf.reduce_max(tf.abs(grads["mask_logits"]))) > 0
    assert float(tf.reduce_max(tf.abs(grads["aux_outputs"][0]["class_logits"]))) > 0
    eager = float(loss)
    xla = tf.function(lambda y, o: crit(y, o), jit_compile=True)
    np.testing.assert_allclose(float(xla(tf.constant(labels), outputs)), eager, rtol=1e-5)
    host = MaskFormerCriterion(num_classes=5, num_queries=8)
    np.testing.assert_allclose(float(tf.function(host)(tf.constant(labels), outputs)), eager, rtol=1e-5)


REPLICA_SCRIPT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kseg.losses.set_criterion import MaskFormerCriterion
crit = MaskFormerCriterion(num_classes=5, num_queries=8)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
valid = strategy.experimental_distribute_values_from_function(
    lambda ctx: tf.constant([[True, True, True]]) if ctx.replica_id_in_sync_group == 0
    else tf.constant([[True, False, False]]))
out = strategy.run(tf.function(crit.num_masks), args=(valid,))
print("NUM_MASKS", [float(v) for v in strategy.experimental_local_results(out)])
"""


def test_num_masks_is_averaged_over_replicas():
    import os
    import subprocess
    import sys

    crit = MaskFormerCriterion(num_classes=5, num_queries=8)
    assert float(crit.num_masks(tf.constant([[True, False], [True, True]]))) == 3.0
    assert float(crit.num_masks(tf.zeros((2, 2), bool))) == 1.0  # clamped at 1
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT], capture_output=True, text=True, env=env)
    assert "NUM_MASKS [2.0, 2.0]" in res.stdout, res.stdout + res.stderr[-2000:]  # (3 + 1) / 2 replicas


def test_config_round_trip_and_errors():
    crit = MaskFormerCriterion(num_classes=5, num_queries=8, matcher="hungarian", class_weight=[1, 2, 1, 1, 1])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(crit))
    assert isinstance(again, MaskFormerCriterion) and again.get_config() == crit.get_config()
    with pytest.raises(ValueError, match="unknown matcher"):
        MaskFormerCriterion(num_classes=5, matcher="greedy")
    with pytest.raises(ValueError, match="max_targets"):
        MaskFormerCriterion(num_classes=5, num_queries=4, max_targets=6)
    with pytest.raises(ValueError, match="class_weight"):
        MaskFormerCriterion(num_classes=5, class_weight=[1.0])
