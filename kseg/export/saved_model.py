"""SavedModel export for TF Serving: ``serving_default`` on raw uint8 images of any size.

The exported signature is self-contained: normalisation (inside the model), the
optional keep-ratio resize of the recipe's evaluation (``eval.scale``), whole or
sliding-window inference, the bilinear resize of the logits to the input size and the
argmax all live in the graph, so a client sends pixels and gets label maps::

    loaded = tf.saved_model.load(path)            # no kseg import needed
    out = loaded.signatures["serving_default"](images=tf.constant(uint8_bhw3))
    out["labels"]         # int32 [B, H, W]
    out["probabilities"]  # float32 [B, H, W, K] (softmax over classes)

It is :func:`kseg.inference.predict_logits` (the code path of ``kseg.predict`` and
``kseg.evaluate``) traced once with unknown batch, height and width, so the served labels
are those of the Keras model under the same settings.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional, Sequence

import tensorflow as tf

from kseg.utils.progress import phase

SIGNATURE = "serving_default"


class SegmentationServingModule(tf.Module):
    """A ``tf.Module`` holding a kseg model and its ``serve`` function.

    ``serve(images)``: images uint8 [B, H, W, 3] RGB, any B, H, W (H, W >= 1) ->
    ``{"labels": int32 [B, H, W], "probabilities": float32 [B, H, W, K]}``.

    Args:
      model: a kseg model (``model(images, training=False)`` -> logits [B, h, w, K], or a
        dict with ``model.semantic_logits``).
      mode, scale, crop_size, stride: as :func:`kseg.inference.predict_logits`; ``scale``
        None runs the model at the input resolution.
    """

    def __init__(self, model, mode: str = "whole", scale: Optional[Sequence[int]] = None,
                 crop_size: Sequence[int] = (512, 512), stride: Sequence[int] = (341, 341)):
        super().__init__(name="kseg_serving")
        from kseg.inference.predictor import MODES

        if mode not in MODES:
            raise ValueError(f"unknown inference mode {mode!r}; valid: {', '.join(MODES)}")
        self.model = model
        # Track the variables explicitly too: the SavedModel must own every weight.
        self.model_variables = list(model.variables)
        self._settings = dict(mode=mode, scale=None if scale is None else tuple(int(s) for s in scale),
                              crop_size=tuple(int(c) for c in crop_size),
                              stride=tuple(int(s) for s in stride))
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )

    def _serve(self, images):
        from kseg.inference import predict_logits

        logits = predict_logits(self.model, tf.cast(images, tf.float32), **self._settings)
        return {
            "labels": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "probabilities": tf.nn.softmax(logits, axis=-1),
        }


def export_saved_model(model, path: str, mode: str = "whole",
                       scale: Optional[Sequence[int]] = None,
                       crop_size: Sequence[int] = (512, 512),
                       stride: Sequence[int] = (341, 341),
                       overwrite: bool = True) -> SegmentationServingModule:
    """Writes ``model`` as a SavedModel folder with the ``serving_default`` signature.

    Args:
      model: a built kseg model (float32 policy; mixed-precision models are exported as
        they compute).
      path: output folder (created). An existing folder is replaced when ``overwrite``.
      mode, scale, crop_size, stride: inference settings baked into the graph (see
        :class:`SegmentationServingModule`); pass the recipe's ``eval`` values to serve
        exactly what ``kseg.predict`` computes.
      overwrite: replace an existing ``path``.

    Returns:
      the :class:`SegmentationServingModule` that was saved.

    Raises:
      FileExistsError: ``path`` exists and ``overwrite`` is False.
      ValueError: unknown ``mode``.
    """
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"{path} exists; remove it or pass overwrite=True")
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    module = SegmentationServingModule(model, mode=mode, scale=scale, crop_size=crop_size,
                                       stride=stride)
    with phase(f"writing SavedModel {path}"):
        tf.saved_model.save(module, path,
                            signatures={SIGNATURE: module.serve.get_concrete_function()})
    return module


def load_serving_fn(path: str):
    """The ``serving_default`` function of a SavedModel folder: ``fn(uint8 [B, H, W, 3])
    -> {"labels": int32 [B, H, W], "probabilities": float32 [B, H, W, K]}`` (tensors).

    Raises:
      FileNotFoundError: ``path`` holds no ``saved_model.pb``.
      KeyError: the SavedModel has no ``serving_default`` signature.
    """
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path} is not a SavedModel folder (no saved_model.pb)")
    loaded = tf.saved_model.load(path)
    if SIGNATURE not in loaded.signatures:
        raise KeyError(f"{path} has no {SIGNATURE!r} signature; it has {list(loaded.signatures)}")
    signature = loaded.signatures[SIGNATURE]

    def serve(images):
        return signature(images=tf.convert_to_tensor(images, tf.uint8))

    serve.loaded = loaded  # keeps the loaded object (and its variables) alive
    return serve
