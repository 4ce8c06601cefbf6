"""Parity checks of exported artifacts against the Keras model, and latency side by side.

- :func:`verify_tflite` runs a ``.tflite`` with ``ai_edge_litert.interpreter.Interpreter``
  (the runtime phones use, not ``tf.lite.Interpreter``) and the Keras model on the same
  inputs: validation images resized (PIL bilinear, as ``export/tflite_predict.py`` does)
  to the model input size. It reports pixel agreement of the labels, the logit
  difference, and the val mIoU of both, with label maps resized (nearest) back to each
  image's original size and scored against its ground truth (``kseg.metrics``).
- :func:`verify_saved_model` loads a SavedModel with ``tf.saved_model.load`` and compares
  its labels with :func:`kseg.inference.predict_labels` on the original images.
- :func:`benchmark` times the TFLite interpreter and the Keras graph interleaved (one
  run of each per round) and reports medians.
"""

from __future__ import annotations

import time
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

SIGNATURE = "serving_default"


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size[0], size[1], 3], PIL bilinear (as the edge kit)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """int [h, w] class indices -> int32 [size[0], size[1]], nearest neighbour."""
    h, w = int(size[0]), int(size[1])
    if labels.shape == (h, w):
        return labels.astype(np.int32)
    img = Image.fromarray(labels.astype(np.uint8))
    return np.asarray(img.resize((w, h), Image.NEAREST)).astype(np.int32)


class TFLiteRunner:
    """A ``.tflite`` exported by kseg, run with ai-edge-litert.

    ``runner(images)``: uint8 [1, H, W, 3] at :attr:`input_size` -> dict of numpy arrays
    (``labels`` int32 [1, H, W], ``logits`` float32 [1, h, w, K]).

    Args:
      model: path of the ``.tflite`` file or its content (bytes).
      num_threads: CPU threads of the interpreter.

    Raises:
      FileNotFoundError: missing file. ValueError: the file has no ``serving_default``
      signature with an ``images`` input (not a kseg export).
    """

    def __init__(self, model, num_threads: int = 2):
        import os

        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, (bytes, bytearray)):
            self.interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            if not os.path.isfile(model):
                raise FileNotFoundError(f"TFLite model {model} does not exist")
            self.interpreter = Interpreter(model_path=str(model), num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        if SIGNATURE not in signatures or "images" not in signatures[SIGNATURE]["inputs"]:
            raise ValueError(f"not a kseg TFLite export: signatures {signatures}; expected "
                             f"{SIGNATURE!r} with an 'images' input")
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        spec = self.runner.get_input_details()["images"]
        self.input_size = (int(spec["shape"][1]), int(spec["shape"][2]))
        self.input_dtype = np.dtype(spec["dtype"])

    def __call__(self, images: np.ndarray) -> dict:
        return self.runner(images=np.ascontiguousarray(images, dtype=self.input_dtype))


def val_samples(recipe, num_images: int, split: Optional[str] = None):
    """Yields ``(image uint8 [H, W, 3], label int32 [H, W])`` of the recipe's val split
    (first ``num_images`` in split order). Raises kseg.data.DatasetError when missing."""
    from kseg.data import build_dataset
    from kseg.utils.progress import track

    split = split or recipe.data.val_split
    ds = build_dataset(recipe.data, split=split, training=False, batch_size=1)
    # The count advances when the consumer asks for the next image: it shows verification.
    for image, label in track(ds.take(int(num_images)), "verifying", total=int(num_images), unit="images"):
        yield image[0].numpy().astype(np.uint8), label[0].numpy().astype(np.int32)


def _miou(cm, class_names):
    from kseg.metrics import summarize

    s = summarize(cm, class_names)
    return {"mIoU": s["mIoU"], "aAcc": s["aAcc"], "mAcc": s["mAcc"], "IoU": s["IoU"]}


def verify_tflite(tflite_model, keras_module, samples: Iterable[Tuple[np.ndarray, np.ndarray]],
                  num_classes: int, class_names: Optional[Sequence[str]] = None,
                  num_threads: int = 2) -> dict:
    """Agreement and mIoU of a TFLite export against the Keras model at the same input.

    Args:
      tflite_model: ``.tflite`` path or content.
      keras_module: the :class:`kseg.export.tflite.TFLiteExportModule` it was converted
        from (the Keras model behind the same fixed-size graph, run by TF).
      samples: ``(image uint8 [H, W, 3], label int [H, W])`` pairs, any sizes.
      num_classes: K. class_names: K names for the per-class IoU.

    Returns:
      ``{"images", "agreement" (% of pixels at the input size where the labels agree),
      "logits_max_abs_diff", "logits_mean_abs_diff", "tflite": {"mIoU", "aAcc", "mAcc",
      "IoU"}, "keras": {...}}`` (percent). With no samples, ``images`` is 0 and the rest
      is absent.
    """
    import tensorflow as tf

    from kseg.metrics import confusion_matrix

    runner = tflite_model if isinstance(tflite_model, TFLiteRunner) else TFLiteRunner(
        tflite_model, num_threads)
    size = runner.input_size
    agree = total = 0
    max_diff, sum_diff, n_logits = 0.0, 0.0, 0
    cms = {"tflite": np.zeros((num_classes, num_classes), np.int64),
           "keras": np.zeros((num_classes, num_classes), np.int64)}
    n = 0
    for image, label in samples:
        x = resize_image(image, size)[None]
        lite = runner(x)
        ref = {k: v.numpy() for k, v in keras_module.infer(tf.constant(x)).items()}
        agree += int(np.sum(lite["labels"] == ref["labels"]))
        total += lite["labels"].size
        diff = np.abs(lite["logits"].astype(np.float32) - ref["logits"])
        max_diff = max(max_diff, float(diff.max()))
        sum_diff += float(diff.sum())
        n_logits += diff.size
        for key, out in (("tflite", lite), ("keras", ref)):
            pred = resize_labels(out["labels"][0], label.shape)
            cms[key] += confusion_matrix(label, pred, num_classes).numpy()
        n += 1
    if n == 0:
        return {"images": 0}
    return {
        "images": n,
        "input_size": list(size),
        "agreement": 100.0 * agree / total,
        "logits_max_abs_diff": max_diff,
        "logits_mean_abs_diff": sum_diff / n_logits,
        "tflite": _miou(cms["tflite"], class_names),
        "keras": _miou(cms["keras"], class_names),
    }


def verify_saved_model(path: str, model, samples: Iterable[Tuple[np.ndarray, np.ndarray]],
                       num_classes: int, class_names: Optional[Sequence[str]] = None,
                       **inference) -> dict:
    """Agreement and mIoU of a SavedModel's ``serving_default`` against the Keras model.

    Both run on the original images; ``inference`` holds the settings the SavedModel was
    exported with (``mode``, ``scale``, ``crop_size``, ``stride`` of
    :func:`kseg.inference.predict_labels`).

    Returns:
      ``{"images", "agreement" (%), "saved_model": {"mIoU", ...}, "keras": {...}}``.
    """
    from kseg.export.saved_model import load_serving_fn
    from kseg.inference import predict_labels
    from kseg.metrics import confusion_matrix

    serve = load_serving_fn(path)
    agree = total = n = 0
    cms = {"saved_model": np.zeros((num_classes, num_classes), np.int64),
           "keras": np.zeros((num_classes, num_classes), np.int64)}
    for image, label in samples:
        served = serve(image[None])["labels"].numpy()
        ref = predict_labels(model, image[None].astype(np.float32), **inference).numpy()
        agree += int(np.sum(served == ref))
        total += served.size
        cms["saved_model"] += confusion_matrix(label, served[0], num_classes).numpy()
        cms["keras"] += confusion_matrix(label, ref[0], num_classes).numpy()
        n += 1
    if n == 0:
        return {"images": 0}
    return {"images": n, "agreement": 100.0 * agree / total,
            "saved_model": _miou(cms["saved_model"], class_names),
            "keras": _miou(cms["keras"], class_names)}


def benchmark(tflite_model, keras_module, runs: int = 20, warmup: int = 3,
              num_threads: int = 2, seed: int = 0) -> dict:
    """Latency of the TFLite interpreter and of the Keras graph, interleaved.

    Each round times one TFLite ``invoke`` (through the signature runner, input copy
    included) and one call of ``keras_module.infer`` (the same fixed-size graph as a
    ``tf.function``, results fetched to numpy), on the same random uint8 image.

    Returns:
      ``{"runs", "threads", "tflite_ms", "keras_ms"}``: medians in milliseconds, plus
      ``"tflite_ms_all"`` / ``"keras_ms_all"`` (every round).
    """
    import tensorflow as tf

    runner = tflite_model if isinstance(tflite_model, TFLiteRunner) else TFLiteRunner(
        tflite_model, num_threads)
    h, w = runner.input_size
    x = np.random.default_rng(seed).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    xt = tf.constant(x)
    for _ in range(max(warmup, 1)):
        runner(x)
        keras_module.infer(xt)["labels"].numpy()
    lite_ms, keras_ms = [], []
    for _ in range(int(runs)):
        t = time.perf_counter()
        runner(x)
        lite_ms.append(1e3 * (time.perf_counter() - t))
        t = time.perf_counter()
        out = keras_module.infer(xt)
        out["labels"].numpy(), out["logits"].numpy()
        keras_ms.append(1e3 * (time.perf_counter() - t))
    return {"runs": int(runs), "threads": int(num_threads),
            "tflite_ms": float(np.median(lite_ms)), "keras_ms": float(np.median(keras_ms)),
            "tflite_ms_all": [round(v, 2) for v in lite_ms],
            "keras_ms_all": [round(v, 2) for v in keras_ms]}
