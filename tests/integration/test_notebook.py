"""The notebook path: from_variant -> compile() with defaults -> model.fit on kseg data."""

import numpy as np
import pytest

import kseg
from kseg.config import DataConfig
from kseg.data import build_dataset


@pytest.mark.slow
def test_from_variant_compile_fit_on_camvid():
    model = kseg.models.SegFormer.from_variant("segformer_mit_b0", num_classes=11)
    model.compile()
    assert model.loss.ignore_index == 255
    assert len(model.optimizer.optimizers) == 2  # encoder and head (lr x10) groups
    data = DataConfig(dataset="camvid", scale=(120, 90), crop_size=(64, 64))
    train = build_dataset(data, split="train", training=True, batch_size=2)
    val = build_dataset(data, split="val", training=False, batch_size=1).take(2)
    history = model.fit(train, steps_per_epoch=3, epochs=2, validation_data=val, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and len(losses) == 2
    assert 0.0 <= history.history["val_mIoU"][-1] <= 100.0  # percent, as the CLI and JSON
    assert int(model.optimizer.iterations) == 6
