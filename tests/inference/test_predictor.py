"""Whole / slide inference (mmseg whole_inference, slide_inference)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kseg.inference import predict_labels, predict_logits, rescale_size, slide_grid

K = 3


def stride4_model(k=K):
    return keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(k, 4, strides=4, padding="same")]
    )


def pointwise_model(k=K):
    return keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(k, 1)])


class CountingModel(keras.Model):
    """1x1 conv that records the (H, W) of every call."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(K, 1)
        self.calls = []
        self(np.zeros((1, 4, 4, 3), np.float32))  # build
        self.calls.clear()

    def call(self, x, training=False):
        self.calls.append(tuple(x.shape[1:3]))
        return self.conv(x)


def images(b, h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (b, h, w, 3)).astype(np.float32)


def np_slide(model, img, crop, stride):
    """mmseg slide_inference, literally (numpy, NHWC)."""
    (hc, wc), (hs, ws) = crop, stride
    b, h, w, _ = img.shape
    h_grids = max(h - hc + hs - 1, 0) // hs + 1
    w_grids = max(w - wc + ws - 1, 0) // ws + 1
    preds, count = None, np.zeros((b, h, w, 1), np.float32)
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * hs, wi * ws
            y2, x2 = min(y1 + hc, h), min(x1 + wc, w)
            y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
            out = tf.image.resize(model(img[:, y1:y2, x1:x2]), (y2 - y1, x2 - x1)).numpy()
            if preds is None:
                preds = np.zeros((b, h, w, out.shape[-1]), np.float32)
            preds[:, y1:y2, x1:x2] += out
            count[:, y1:y2, x1:x2] += 1
    assert (count > 0).all()
    return preds / count


def test_whole_non_square_returns_original_size():
    model = stride4_model()
    x = images(2, 37, 53)
    out = predict_logits(model, x)
    assert out.shape == (2, 37, 53, K) and out.dtype == tf.float32
    np.testing.assert_allclose(out, tf.image.resize(model(x), (37, 53)), atol=1e-5)
    single = predict_logits(model, x[0])
    np.testing.assert_allclose(single, out[0], atol=1e-5)


def test_rescale_size_is_mmcv_keep_ratio():
    cases = [((100, 150), (64, 32)), ((512, 683), (2048, 512)), ((720, 960), (512, 2048))]
    for (h, w), scale in cases:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
        ref = (int(h * factor + 0.5), int(w * factor + 0.5))
        got = rescale_size(h, w, scale)
        assert (int(got[0]), int(got[1])) == ref


def test_whole_with_scale_runs_on_resized_image():
    model = CountingModel()
    out = predict_logits(model, images(1, 100, 150), scale=(64, 32))
    assert model.calls == [(32, 48)]  # factor min(64/150, 32/100) = 0.32
    assert out.shape == (1, 100, 150, K)


def test_slide_grid_formula():
    assert slide_grid(100, 150, (64, 64), (40, 40)) == (2, 4)
    assert slide_grid(30, 50, (64, 64), (40, 40)) == (1, 1)
    assert slide_grid(512, 683, (512, 512), (341, 341)) == (1, 2)
    model = CountingModel()
    predict_logits(model, images(1, 100, 150), mode="slide", crop_size=(64, 64), stride=(40, 40),
                   window_batch=1)
    assert model.calls == [(64, 64)] * 8  # every window has the crop size
    model.calls.clear()
    predict_logits(model, images(1, 100, 150), mode="slide", crop_size=(64, 64), stride=(40, 40),
                   window_batch=3)
    assert model.calls == [(64, 64)] * 3  # 8 windows, 3 per forward pass
    model.calls.clear()
    predict_logits(model, images(1, 30, 50), mode="slide", crop_size=(64, 64), stride=(40, 40))
    assert model.calls == [(30, 50)]  # image smaller than the crop: one smaller window


def test_slide_equals_whole_for_translation_equivariant_model():
    model = pointwise_model()
    x = images(2, 100, 150)
    slide = predict_logits(model, x, mode="slide", crop_size=(64, 64), stride=(40, 40))
    np.testing.assert_allclose(slide, predict_logits(model, x), atol=1e-4)


def test_slide_matches_mmseg_reference_loop():
    model = stride4_model()
    x = images(1, 70, 101, seed=1)
    got = predict_logits(model, x, mode="slide", crop_size=(32, 48), stride=(20, 30))
    np.testing.assert_allclose(got, np_slide(model, x, (32, 48), (20, 30)), atol=1e-4)
    # with a keep-ratio resize first: reference on the resized image, then back to size
    got = predict_logits(
        model, x, mode="slide", scale=(80, 40), crop_size=(32, 32), stride=(16, 16)
    )
    small = tf.image.resize(x, rescale_size(70, 101, (80, 40))).numpy()
    ref = tf.image.resize(np_slide(model, small, (32, 32), (16, 16)), (70, 101))
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_tf_function_with_unknown_sizes():
    model = stride4_model()
    spec = [tf.TensorSpec([None, None, None, 3], tf.float32)]
    whole = tf.function(lambda x: predict_logits(model, x, scale=(96, 48)), input_signature=spec)
    slide = tf.function(
        lambda x: predict_logits(model, x, mode="slide", crop_size=(32, 32), stride=(24, 24)),
        input_signature=spec,
    )
    for h, w in [(40, 72), (57, 33)]:
        x = images(1, h, w)
        np.testing.assert_allclose(whole(x), predict_logits(model, x, scale=(96, 48)), atol=1e-4)
        ref = np_slide(model, x, (32, 32), (24, 24))
        assert slide(x).shape == (1, h, w, K)
        np.testing.assert_allclose(slide(x), ref, atol=1e-4)


def test_predict_labels_and_dict_outputs():
    inputs = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(K, 4, strides=4, padding="same")(inputs)
    model = keras.Model(inputs, {"seg": logits, "aux": logits})
    x = images(1, 24, 40)
    labels = predict_labels(model, x, logits_fn=lambda out: out["seg"])
    assert labels.shape == (1, 24, 40) and labels.dtype == tf.int32
    ref = tf.argmax(tf.image.resize(model(x)["seg"], (24, 40)), -1)
    np.testing.assert_array_equal(labels, ref)
    with pytest.raises(ValueError, match="logits_fn"):
        predict_logits(model, x)


def test_errors():
    model = stride4_model()
    with pytest.raises(ValueError, match="whole, slide, ms_flip"):
        predict_logits(model, images(1, 8, 8), mode="multiscale")
    with pytest.raises(ValueError, match="ms_inner_mode must be whole or slide"):
        predict_logits(model, images(1, 8, 8), mode="ms_flip", ms_inner_mode="ms_flip")
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=5"):
        predict_logits(model, images(1, 8, 8), num_classes=5)


def _pixel_model(k=3, seed=0):
    """A per-pixel (1x1 conv) model with fixed random weights: stride 1, K channels."""
    import keras

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(k, 1)
    model = keras.Model(inputs, conv(inputs / 255.0))
    w = np.random.default_rng(seed).normal(size=(1, 1, 3, k)).astype("float32") * 3
    conv.kernel.assign(w)
    return model


def test_ms_flip_matches_a_hand_written_aug_test():
    """Reference written out loop by loop: resize by each ratio, logits back to the
    original size, softmax, flipped copy flipped back, mean over all."""
    model = _pixel_model()
    x = np.random.default_rng(5).uniform(0, 255, (1, 12, 18, 3)).astype("float32")
    ratios = (0.5, 1.0, 1.5)
    expected = np.zeros((1, 12, 18, 3), np.float32)
    for r in ratios:
        for flip in (False, True):
            img = x[:, :, ::-1] if flip else x
            small = tf.image.resize(img, (round(12 * r), round(18 * r)), method="bilinear")
            logits = tf.image.resize(model(small), (12, 18), method="bilinear").numpy()
            p = np.exp(logits - logits.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            expected += (p[:, :, ::-1] if flip else p) / (2 * len(ratios))
    got = predict_logits(model, x, mode="ms_flip", ms_ratios=ratios, ms_flip=True).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_ms_flip_at_one_ratio_of_a_per_pixel_model_is_its_softmax():
    model = _pixel_model()
    x = np.random.default_rng(6).uniform(0, 255, (2, 10, 14, 3)).astype("float32")
    probs = predict_logits(model, x, mode="ms_flip", ms_ratios=(1.0,), ms_flip=True).numpy()
    np.testing.assert_allclose(probs, tf.nn.softmax(model(x)).numpy(), atol=1e-6)
    # slide inside each scale works and agrees for a per-pixel model
    slid = predict_logits(model, x, mode="ms_flip", ms_ratios=(1.0, 2.0), ms_inner_mode="slide",
                          crop_size=(8, 8), stride=(5, 5)).numpy()
    whole = predict_logits(model, x, mode="ms_flip", ms_ratios=(1.0, 2.0)).numpy()
    np.testing.assert_allclose(slid, whole, atol=1e-5)
