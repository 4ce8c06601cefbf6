"""Pure-TF training transforms: mmseg semantics, determinism, value ranges."""

import numpy as np
import tensorflow as tf

from kseg.data.transforms import (
    pad_to,
    photometric_distortion,
    random_flip,
    random_resize_crop,
    rescale_size,
    resize_keep_ratio,
    resized_image_crop,
    train_transform,
)


def _seed(i):
    return tf.constant([7, i], tf.int64)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rescale_size_follows_mmcv_imrescale():
    # 360x480 into (2048, 512): short edge bound wins -> 512x683 (mmseg ADE default scale).
    assert [int(v) for v in rescale_size(360, 480, (2048, 512))] == [512, 683]
    # Long-edge bound wins; order of scale does not matter.
    assert [int(v) for v in rescale_size(100, 400, (200, 150))] == [50, 200]
    assert [int(v) for v in rescale_size(100, 400, (150, 200))] == [50, 200]
    # ratio scales both bounds (truncated like int(scale * ratio)).
    assert [int(v) for v in rescale_size(360, 480, (480, 360), 2.0)] == [720, 960]


def test_resize_keeps_aspect_within_scale_and_matches_tf_resize():
    img = _image(30, 40)
    lbl = np.random.default_rng(1).integers(0, 5, (30, 40)).astype(np.int32)
    out, out_lbl = resize_keep_ratio(img, lbl, (100, 40))
    h, w = out.shape[:2]
    assert (h, w) == (40, 53) and out_lbl.shape == (40, 53)
    assert max(h, w) <= 100 and min(h, w) <= 40
    assert abs(w / h - 40 / 30) < 0.02
    ref = tf.image.resize(img.astype(np.float32), (h, w), "bilinear")
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-2)
    ref_lbl = tf.image.resize(lbl[..., None], (h, w), "nearest")[..., 0]
    np.testing.assert_array_equal(out_lbl.numpy(), ref_lbl.numpy())


def test_resized_crop_equals_crop_of_full_resize():
    img = _image(36, 48, seed=3)
    ref = tf.image.resize(img.astype(np.float32), (70, 95), "bilinear").numpy()
    part = resized_image_crop(img, tf.constant([70, 95]), tf.constant([11, 29]),
                              tf.constant([40, 50])).numpy()
    np.testing.assert_allclose(part, ref[11:51, 29:79], atol=1e-2)


def test_random_resize_ratio_range_and_aspect():
    img, lbl = _image(30, 40), np.zeros((30, 40), np.int32)
    sizes = set()
    for i in range(12):
        out, out_lbl = random_resize_crop(
            img, lbl, _seed(i), scale=(80, 60), ratio_range=(0.5, 2.0), crop_size=(1000, 1000),
            cat_max_ratio=1.0, num_classes=3)
        h, w = out.shape[:2]
        assert out_lbl.shape == (h, w)
        assert 30 - 1 <= h <= 120 and 40 - 1 <= w <= 160  # scale * r with r in [0.5, 2]
        assert abs(w / h - 4 / 3) < 0.05
        sizes.add((h, w))
    assert len(sizes) > 6  # r really varies


@tf.function
def _dominant_share(label, seed, cat_max_ratio):
    _, crop = random_resize_crop(
        tf.zeros([100, 100, 3], tf.uint8), label, seed, scale=(100, 100), ratio_range=(1.0, 1.0),
        crop_size=(40, 40), cat_max_ratio=cat_max_ratio, num_classes=2)
    counts = tf.math.bincount(tf.reshape(crop, [-1]), minlength=2, maxlength=2)
    return tf.reduce_max(counts) / tf.reduce_sum(counts)


def test_cat_max_ratio_limits_dominant_class():
    # Class 0 in columns 0..69, class 1 in 70..99: a 40x40 crop is acceptable (dominant
    # share < 0.75, two classes) only for x offsets 41..60, about 1 in 3 draws.
    label = np.zeros((100, 100), np.int32)
    label[:, 70:] = 1
    seeds = range(40)
    limited = [float(_dominant_share(label, _seed(i), 0.75)) for i in seeds]
    free = [float(_dominant_share(label, _seed(i), 1.0)) for i in seeds]
    assert np.mean(np.array(limited) < 0.75) >= 0.9
    assert np.mean(np.array(free) < 0.75) <= 0.6


def test_cat_max_ratio_keeps_last_try_on_single_class_label():
    img, lbl = _image(50, 50), np.full((50, 50), 2, np.int32)
    out, out_lbl = random_resize_crop(img, lbl, _seed(0), scale=(50, 50), ratio_range=(1, 1),
                                      crop_size=(20, 30), cat_max_ratio=0.75, num_classes=3)
    assert out.shape == (20, 30, 3) and np.all(out_lbl.numpy() == 2)


def test_ignore_pixels_do_not_count_for_cat_max_ratio():
    # All labelled pixels are class 0 (the rest ignore): never acceptable -> still a crop.
    lbl = np.full((60, 60), 255, np.int32)
    lbl[:30] = 0
    _, out_lbl = random_resize_crop(_image(60, 60), lbl, _seed(1), scale=(60, 60),
                                    ratio_range=(1, 1), crop_size=(20, 20), cat_max_ratio=0.75,
                                    num_classes=2)
    assert set(np.unique(out_lbl.numpy())) <= {0, 255}


def test_flip_flips_image_and_label_together():
    img = tf.constant(_image(8, 10), tf.float32)
    lbl = tf.constant(np.arange(80).reshape(8, 10) % 7, tf.int32)
    f_img, f_lbl = random_flip(img, lbl, _seed(0), prob=1.0)
    np.testing.assert_array_equal(f_img.numpy(), img.numpy()[:, ::-1])
    np.testing.assert_array_equal(f_lbl.numpy(), lbl.numpy()[:, ::-1])
    n_img, n_lbl = random_flip(img, lbl, _seed(0), prob=0.0)
    np.testing.assert_array_equal(n_img.numpy(), img.numpy())
    # Inside the whole pipeline: same seed, flip 1 vs 0 -> mirrored crops.
    kw = dict(scale=(64, 48), ratio_range=(1.0, 1.5), crop_size=(32, 40), cat_max_ratio=1.0,
              photometric=False, num_classes=7)
    big_img, big_lbl = _image(48, 64), np.arange(48 * 64).reshape(48, 64) % 7
    a_img, a_lbl = train_transform(big_img, big_lbl, _seed(5), flip_prob=1.0, **kw)
    b_img, b_lbl = train_transform(big_img, big_lbl, _seed(5), flip_prob=0.0, **kw)
    np.testing.assert_allclose(a_img.numpy(), b_img.numpy()[:, ::-1], atol=1e-4)
    np.testing.assert_array_equal(a_lbl.numpy(), b_lbl.numpy()[:, ::-1])


def test_pad_values_image_zero_label_ignore():
    img, lbl = tf.fill([5, 7, 3], 9.0), tf.fill([5, 7], 1)
    p_img, p_lbl = pad_to(img, lbl, (8, 10))
    assert p_img.shape == (8, 10, 3) and p_lbl.shape == (8, 10)
    assert np.all(p_img.numpy()[:5, :7] == 9) and np.all(p_lbl.numpy()[:5, :7] == 1)
    assert np.all(p_img.numpy()[5:] == 0) and np.all(p_img.numpy()[:, 7:] == 0)
    assert np.all(p_lbl.numpy()[5:] == 255) and np.all(p_lbl.numpy()[:, 7:] == 255)
    # In the pipeline: an image smaller than the crop at every ratio is padded bottom/right.
    out, out_lbl = train_transform(
        _image(10, 12), np.ones((10, 12), np.int32), _seed(2), scale=(12, 10),
        ratio_range=(1.0, 1.0), crop_size=(16, 20), cat_max_ratio=0.75, flip_prob=0.5,
        photometric=True, num_classes=2)
    assert out.dtype == tf.float32 and out_lbl.dtype == tf.int32
    assert np.all(out.numpy()[10:] == 0) and np.all(out_lbl.numpy()[10:] == 255)
    assert np.all(out_lbl.numpy()[:10, :12] == 1) and np.all(out_lbl.numpy()[:, 12:] == 255)


def test_photometric_keeps_range_and_is_deterministic():
    img = tf.constant(_image(16, 16, seed=4), tf.float32)
    changed = 0
    for i in range(16):
        out = photometric_distortion(img, _seed(i)).numpy()
        assert out.shape == (16, 16, 3) and out.min() >= 0.0 and out.max() <= 255.0
        changed += not np.allclose(out, img.numpy())
    assert changed >= 10  # P(no op applied) = 1/16
    np.testing.assert_array_equal(photometric_distortion(img, _seed(3)).numpy(),
                                  photometric_distortion(img, _seed(3)).numpy())
    extreme = photometric_distortion(tf.fill([4, 4, 3], 255.0), _seed(1)).numpy()
    assert extreme.min() >= 0.0 and extreme.max() <= 255.0


def test_train_transform_deterministic_per_seed():
    img, lbl = _image(40, 50), (np.arange(2000).reshape(40, 50) // 300).astype(np.int32)
    kw = dict(scale=(50, 40), ratio_range=(0.5, 2.0), crop_size=(24, 24), cat_max_ratio=0.75,
              flip_prob=0.5, photometric=True, num_classes=7)
    a = train_transform(img, lbl, _seed(1), **kw)
    b = train_transform(img, lbl, _seed(1), **kw)
    c = train_transform(img, lbl, _seed(2), **kw)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())
