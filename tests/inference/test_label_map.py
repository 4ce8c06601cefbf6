"""resized_argmax == argmax(tf.image.resize(logits)), pixel for pixel, ties included; and
predict_labels == argmax(predict_logits) for whole / slide / ms_flip on real CamVid images."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from kseg.inference import predict_labels, predict_logits
from kseg.inference.label_map import (
    _lerp,
    bilinear_taps,
    dense_resized_argmax,
    resized_argmax,
)

SIZES = [((128, 128), (512, 512)), ((94, 128), (375, 500)), ((45, 60), (180, 240)),
         ((90, 120), (45, 61)), ((7, 5), (29, 13)), ((1, 6), (4, 23)), ((3, 1), (3, 7))]


def explicit_resize(x, size):
    """tf.image.resize(x, size, "bilinear") written with bilinear_taps and _lerp."""
    (ylo, yup, yl), (xlo, xup, xl) = bilinear_taps(x.shape[1], size[0]), bilinear_taps(x.shape[2], size[1])
    rows = _lerp(tf.gather(x, xlo, axis=2), tf.gather(x, xup, axis=2), xl[None, None, :, None])
    return _lerp(tf.gather(rows, ylo, axis=1), tf.gather(rows, yup, axis=1), yl[None, :, None, None])


@pytest.mark.parametrize("src,dst", SIZES)
def test_taps_and_lerp_are_the_kernel_bit_for_bit(src, dst):
    x = tf.constant(np.random.default_rng(0).standard_normal((1, *src, 5)).astype(np.float32) * 37)
    np.testing.assert_array_equal(explicit_resize(x, dst).numpy(), tf.image.resize(x, dst).numpy())


def smooth_logits(rng, h, w, k, scale=4.0):
    """Trained-like logits: a few classes dominate large smooth regions."""
    base = rng.standard_normal((1, h // 8 + 2, w // 8 + 2, k)).astype(np.float32) * scale
    return tf.image.resize(base, (h, w), method="bicubic")


def logit_cases():
    rng = np.random.default_rng(1)
    yield "random normal, 150 classes", tf.constant(rng.standard_normal((1, 32, 40, 150)), tf.float32), (128, 160)
    yield "smooth, 150 classes", smooth_logits(rng, 128, 128, 150), (512, 512)
    yield "smooth, non-integer factor", smooth_logits(rng, 94, 128, 150), (375, 500)
    yield "ties: integers 0..2", tf.constant(rng.integers(0, 3, (2, 30, 40, 20)), tf.float32), (120, 160)
    yield "all equal", tf.zeros((1, 6, 7, 30)), (24, 28)
    yield "huge values", tf.constant(rng.standard_normal((1, 12, 9, 40)) * 1e30, tf.float32), (50, 37)
    yield "downsampling", tf.constant(rng.standard_normal((1, 90, 120, 30)), tf.float32), (45, 61)
    yield "one row / one column", tf.constant(rng.standard_normal((2, 1, 6, 25)), tf.float32), (4, 23)
    yield "batch of different images", tf.concat([smooth_logits(rng, 20, 24, 60),
                                                  tf.constant(rng.standard_normal((1, 20, 24, 60)), tf.float32)],
                                                 0), (80, 96)


@pytest.mark.parametrize("name,logits,size", list(logit_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_resized_argmax_is_exact(name, logits, size):
    expected = dense_resized_argmax(logits, size).numpy()
    # Default thresholds (may choose the dense path) and the candidate path forced.
    for kwargs in ({}, {"min_classes": 2, "max_uncertain_share": 1.0}):
        got = resized_argmax(logits, size, **kwargs).numpy()  # eager: no tracing per case
        assert got.dtype == np.int32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} {kwargs}")


def test_ties_resolve_to_the_smallest_class_and_non_finite_logits_fall_back():
    # Two classes equal everywhere, one worse: tf.argmax and resized_argmax pick class 1.
    x = np.full((1, 5, 6, 30), -3.0, np.float32)
    x[..., 1] = x[..., 4] = 2.0
    got = resized_argmax(tf.constant(x), (20, 24), min_classes=2, max_uncertain_share=1.0).numpy()
    assert (got == 1).all()
    x[0, 2, 3, 7] = np.nan
    np.testing.assert_array_equal(resized_argmax(tf.constant(x), (20, 24), min_classes=2).numpy(),
                                  dense_resized_argmax(tf.constant(x), (20, 24)).numpy())


def test_unknown_sizes_in_one_trace():
    fn = tf.function(lambda x, size: resized_argmax(x, size, min_classes=2, max_uncertain_share=1.0),
                     input_signature=[tf.TensorSpec([None, None, None, 40]), tf.TensorSpec([2], tf.int32)])
    rng = np.random.default_rng(3)
    for h, w, size in ((10, 12, (40, 48)), (7, 19, (27, 75)), (16, 16, (16, 16))):
        x = tf.constant(rng.standard_normal((1, h, w, 40)), tf.float32)
        np.testing.assert_array_equal(fn(x, tf.constant(size)).numpy(), dense_resized_argmax(x, size).numpy())
    assert fn.experimental_get_tracing_count() == 1


# --------------------------------------------------------------------- real images, a model


@pytest.fixture(scope="module")
def camvid_images():
    from PIL import Image

    from kseg.data import find_data_root

    files = sorted(glob.glob(os.path.join(find_data_root("camvid"), "val", "*.png")))
    # Two real images: one whole (360 x 480), one region of another (keeps the test short).
    first, second = (np.asarray(Image.open(f).convert("RGB"), np.float32) for f in (files[0], files[50]))
    return [first, second[100:280, 120:360]]


@pytest.fixture(scope="module")
def tiny_segformer():
    import keras

    import kseg

    keras.utils.set_random_seed(0)
    return kseg.build_model("segformer_mit_b0", num_classes=150, depths=(1, 1, 1, 1))


SETTINGS = [
    {"mode": "whole"},
    {"mode": "whole", "scale": (240, 180)},
    {"mode": "slide", "scale": (240, 180), "crop_size": (128, 128), "stride": (96, 96)},
    {"mode": "slide", "crop_size": (160, 192), "stride": (120, 150), "window_batch": 2},
    {"mode": "ms_flip", "scale": (240, 180), "ms_ratios": (0.75, 1.0)},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_labels_of_camvid_images_equal_argmax_of_logits(camvid_images, tiny_segformer, settings):
    """A 150-class SegFormer (randomly initialised: busy, noisy label maps) on real images."""
    for image in camvid_images:
        logits = predict_logits(tiny_segformer, image, **settings)
        expected = tf.argmax(logits, axis=-1, output_type=tf.int32).numpy()
        labels = predict_labels(tiny_segformer, image, **settings).numpy()
        np.testing.assert_array_equal(labels, expected)
        assert labels.shape == image.shape[:2]
        if settings["mode"] != "slide":  # (slide runs eagerly here: slow)
            both, probs = predict_labels(tiny_segformer, image, return_probs=True, **settings)
            np.testing.assert_array_equal(both.numpy(), expected)
            probs = probs.numpy()
            assert probs.shape == image.shape[:2] + (150,)
            np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_candidate_path_on_model_logits_of_camvid_images(camvid_images, tiny_segformer):
    for image in camvid_images:
        small = tiny_segformer(image[None], training=False)
        got = resized_argmax(small, image.shape[:2], min_classes=2, max_uncertain_share=1.0)
        np.testing.assert_array_equal(got.numpy(), dense_resized_argmax(small, image.shape[:2]).numpy())


def test_slide_warns_when_its_window_covers_the_image(camvid_images, tiny_segformer):
    image = camvid_images[0]  # 360 x 480
    with pytest.warns(UserWarning, match="slide computes exactly whole"):
        predict_labels(tiny_segformer, image[None, :64, :64], mode="slide", crop_size=(512, 512))
    with pytest.warns(UserWarning, match=r"after the keep-ratio resize to scale \(240, 180\)"):
        predict_logits(tiny_segformer, image[:96, :128], mode="slide", scale=(240, 180), crop_size=(256, 256))


def test_model_predict_labels_one_call_numpy(camvid_images, tiny_segformer):
    from kseg.inference import compiled_predict_labels

    big, small = camvid_images
    expected = predict_labels(tiny_segformer, big).numpy()
    got = tiny_segformer.predict_labels(big.astype(np.uint8))  # uint8 [H, W, 3] -> [H, W]
    assert isinstance(got, np.ndarray) and got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    both = tiny_segformer.predict_labels([big, small], return_probs=True)  # a list of sizes
    np.testing.assert_array_equal(both[0][0], expected)
    assert both[0][1].shape == small.shape[:2] and both[1][1].shape == small.shape[:2] + (150,)
    # one graph for both sizes and both calls
    assert compiled_predict_labels(tiny_segformer).experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="RGB"):
        tiny_segformer.predict_labels(big[..., 0])
