import numpy as np
import tensorflow as tf

from kseg.losses import SegCrossEntropy


def reference(labels, logits, ignore=255, weights=None):
    """numpy: bilinear-resized logits, per-pixel CE, ignored pixels count as zero."""
    up = tf.image.resize(logits, labels.shape[1:3], method="bilinear").numpy()
    up = up - up.max(-1, keepdims=True)
    logp = up - np.log(np.exp(up).sum(-1, keepdims=True))
    valid = labels != ignore
    safe = np.where(valid, labels, 0)
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    if weights is not None:
        nll = nll * np.asarray(weights)[safe]
    return np.where(valid, nll, 0).mean()


def test_matches_reference_with_ignore_and_resize():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 5, 4)).astype("float32")
    labels = rng.integers(0, 4, (2, 24, 20)).astype("int32")
    labels[0, :5] = 255
    loss = SegCrossEntropy()(labels, logits)
    np.testing.assert_allclose(float(loss), reference(labels, logits), rtol=1e-5)


def test_class_weights_and_all_ignored():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, (1, 8, 8)).astype("int32")
    w = [0.5, 2.0, 1.0]
    np.testing.assert_allclose(float(SegCrossEntropy(class_weight=w)(labels, logits)),
                               reference(labels, logits, weights=w), rtol=1e-5)
    assert float(SegCrossEntropy()(np.full((1, 8, 8), 255, "int32"), logits)) == 0.0


def test_resized_cross_entropy_value_and_gradient_match_tf():
    """Chunked resize + log-sum-exp with a custom gradient == tf.image.resize + TF's CE."""
    import pytest

    from kseg.losses.cross_entropy import _channel_chunks, resized_softmax_cross_entropy

    rng = np.random.default_rng(2)
    for k, (h, w), (hh, ww) in ((7, (5, 7), (19, 27)), (3, (4, 4), (4, 4)), (1, (3, 2), (9, 5))):
        logits = tf.constant(rng.normal(size=(2, h, w, k)) * 8, tf.float32)
        labels = tf.constant(rng.integers(0, k, (2, hh, ww)), tf.int32)
        dy = tf.constant(rng.uniform(0, 2, (2, hh, ww)), tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(logits)
            ours = resized_softmax_cross_entropy(labels, logits)
            ref = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=tf.image.resize(logits, (hh, ww), method="bilinear"))
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(tape.gradient(ours, logits, output_gradients=dy).numpy(),
                                   tape.gradient(ref, logits, output_gradients=dy).numpy(), rtol=1e-4, atol=1e-5)
    assert _channel_chunks(150)[-1][1] == 150 and _channel_chunks(1) == [(0, 1)]
    with pytest.raises(tf.errors.InvalidArgumentError, match="label >= number of classes"):
        resized_softmax_cross_entropy(tf.fill((2, 5, 7), 3), tf.zeros((2, 5, 7, 3)))
