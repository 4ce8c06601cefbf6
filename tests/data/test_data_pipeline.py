"""build_dataset on real CamVid and on a tiny folder dataset."""

import dataclasses

import numpy as np
import pytest

from kseg.config import DataConfig
from kseg.data import DatasetError, build_dataset, find_data_root, get_dataset


@pytest.fixture(scope="module")
def camvid_cfg():
    try:
        find_data_root("camvid")
    except DatasetError as e:
        pytest.skip(f"CamVid not available: {e}")
    return DataConfig(dataset="camvid", scale=(480, 360), ratio_range=(0.5, 2.0),
                      crop_size=(96, 128), cat_max_ratio=0.75)


def _take(ds, n):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(n)]


def test_camvid_train_batch_shapes_dtypes_ranges(camvid_cfg):
    ds = build_dataset(camvid_cfg, split=camvid_cfg.train_split, training=True, batch_size=3,
                       seed=0)
    images, labels = next(iter(ds))
    assert images.shape == (3, 96, 128, 3) and images.dtype.name == "float32"
    assert labels.shape == (3, 96, 128) and labels.dtype.name == "int32"
    assert ds.element_spec[0].shape.as_list() == [3, 96, 128, 3]  # static for Keras
    x, y = images.numpy(), labels.numpy()
    assert x.min() >= 0.0 and x.max() <= 255.0 and x.max() > 50.0
    assert set(np.unique(y)) <= set(range(11)) | {255}
    assert len(set(np.unique(y)) - {255}) >= 2


def test_camvid_train_pipeline_deterministic_per_seed(camvid_cfg):
    def batches(seed):
        return _take(build_dataset(camvid_cfg, "train", training=True, batch_size=2, seed=seed), 2)

    a, b, c = batches(0), batches(0), batches(1)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


def test_camvid_eval_whole_images_in_split_order(camvid_cfg):
    info = get_dataset("camvid", split="val")
    ds = build_dataset(camvid_cfg, split="val", training=False, batch_size=2, with_paths=True)
    (x, y, paths), = _take(ds, 1)
    assert x.shape == (2, 360, 480, 3) and x.dtype == np.float32
    assert y.shape == (2, 360, 480) and y.dtype == np.int32
    assert [p.decode() for p in paths] == [info.samples[0][0], info.samples[1][0]]
    assert set(np.unique(y)) <= set(range(11)) | {255}


def test_folder_train_pipeline_cache_matches_no_cache(folder_dataset):
    spec = folder_dataset()
    cfg = DataConfig(dataset="folder", folder_spec=spec, scale=(32, 24), ratio_range=(0.5, 2.0),
                     crop_size=(16, 20))
    plain = _take(build_dataset(cfg, "train", training=True, batch_size=3, seed=4), 3)
    cached = _take(build_dataset(dataclasses.replace(cfg, cache=True), "train", training=True,
                                 batch_size=3, seed=4), 3)
    for (xa, ya), (xb, yb) in zip(plain, cached):
        assert xa.shape == (3, 16, 20, 3) and ya.shape == (3, 16, 20)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # 3 batches of 3 from 4 samples: the pipeline repeats (infinite) and reshuffles.
    assert set(np.unique(np.concatenate([y for _, y in plain]))) <= {0, 1, 2, 255}


def test_batch_size_must_be_positive(folder_dataset):
    cfg = DataConfig(dataset="folder", folder_spec=folder_dataset())
    with pytest.raises(ValueError, match="batch_size"):
        build_dataset(cfg, "train", training=True, batch_size=0)
