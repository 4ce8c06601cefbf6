"""SavedModel export: plain-TF loading (no kseg), parity with Keras, every registered variant."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import kseg
from kseg.export import SegmentationServingModule, export_saved_model, load_serving_fn
from kseg.inference import predict_logits
from tests.export.export_utils import assert_same_labels, build_tiny

# Runs in a fresh interpreter that never imports kseg: TF Serving's view of the artifact.
LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    path, inputs, outputs = sys.argv[1:4]
    fn = tf.saved_model.load(path).signatures["serving_default"]
    images = dict(np.load(inputs))
    result = {}
    for key, x in images.items():
        out = fn(images=tf.constant(x))
        result[key + "_labels"] = out["labels"].numpy()
        result[key + "_probabilities"] = out["probabilities"].numpy()
    assert not any(m == "kseg" or m.startswith("kseg.") for m in sys.modules), "kseg imported"
    np.savez(outputs, **result)
""")


def _images():
    rng = np.random.default_rng(1)
    return {"a": rng.integers(0, 256, (1, 70, 100, 3), dtype=np.uint8),
            "b": rng.integers(0, 256, (2, 96, 64, 3), dtype=np.uint8)}


def test_plain_tf_load_matches_keras_on_non_square_images(tmp_path, b0_camvid):
    model, _ = b0_camvid
    path = str(tmp_path / "sm")
    export_saved_model(model, path)
    images = _images()
    np.savez(tmp_path / "in.npz", **images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", LOADER, path, str(tmp_path / "in.npz"),
                        str(tmp_path / "out.npz")], cwd=str(tmp_path), env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    for key, x in images.items():
        ref = predict_logits(model, x.astype("float32")).numpy()
        labels, probs = out[key + "_labels"], out[key + "_probabilities"]
        assert labels.dtype == np.int32 and labels.shape == x.shape[:3]
        assert probs.dtype == np.float32 and probs.shape == x.shape[:3] + (11,)
        assert_same_labels(labels, ref)
        np.testing.assert_allclose(probs, tf.nn.softmax(ref).numpy(), atol=2e-4)  # float rounding
        assert len(np.unique(labels)) > 1  # the check is not vacuous


def test_eval_resize_is_baked_in(tmp_path, b0_camvid):
    """With the recipe's keep-ratio eval resize, the SavedModel gives kseg.predict's labels."""
    model, _ = b0_camvid
    path = str(tmp_path / "sm")
    export_saved_model(model, path, scale=(120, 90))
    serve = load_serving_fn(path)
    x = _images()["a"]
    out = serve(x)
    ref = predict_logits(model, x.astype("float32"), scale=(120, 90))
    assert_same_labels(out["labels"].numpy(), ref.numpy())
    assert out["labels"].shape == (1, 70, 100)


def test_bad_arguments(tmp_path, b0_camvid):
    model, _ = b0_camvid
    with pytest.raises(ValueError, match="unknown inference mode"):
        export_saved_model(model, str(tmp_path / "x"), mode="sliding")
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError):
        export_saved_model(model, str(tmp_path / "exists"), overwrite=False)
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        load_serving_fn(str(tmp_path / "exists"))


VARIANTS = kseg.models.list_variants()
# One variant per family (the first registered name) also goes through disk and plain TF.
FAMILY_REPRESENTATIVES = sorted({v.split("_")[0]: v for v in reversed(VARIANTS)}.values())


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_registered_variant_traces_for_serving(variant):
    """Every registered variant (tiny config: fewer blocks, the variant's widths) traces the
    serving signature with unknown batch, height and width and the documented outputs."""
    fn = SegmentationServingModule(build_tiny(variant)).serve.get_concrete_function()
    assert fn.structured_outputs["labels"].shape.as_list() == [None, None, None]
    assert fn.structured_outputs["labels"].dtype == "int32"
    assert fn.structured_outputs["probabilities"].shape.as_list() == [None, None, None, 3]


@pytest.mark.slow
@pytest.mark.parametrize("variant", FAMILY_REPRESENTATIVES)
def test_each_family_round_trips_through_plain_tf(tmp_path, variant):
    """Export, load with plain ``tf.saved_model.load`` and Keras' labels on a 40x56 input."""
    model = build_tiny(variant)
    path = str(tmp_path / variant)
    export_saved_model(model, path)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    x = np.random.default_rng(0).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    out = fn(images=tf.constant(x))
    assert out["labels"].dtype == tf.int32 and out["probabilities"].shape == (1, 40, 56, 3)
    assert_same_labels(out["labels"].numpy(), predict_logits(model, x.astype("float32")).numpy())
