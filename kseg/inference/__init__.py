"""Inference: whole / slide / multi-scale + flip prediction, label maps, split evaluation, overlays.

Labels at input size in one call: ``predict_images(model, images)`` (numpy in and out,
compiled once; also ``model.predict_labels(images)``) or ``predict_labels(model, images)``
(tensors, eager or inside a ``tf.function``).
"""

from kseg.inference.evaluator import evaluate, inference_kwargs, save_results
from kseg.inference.label_map import resized_argmax
from kseg.inference.overlay import colorize, overlay, save_png, side_by_side
from kseg.inference.predictor import (
    compiled_predict_labels,
    predict_images,
    predict_labels,
    predict_logits,
    rescale_size,
    slide_grid,
)
from kseg.inference.semantic import semantic_inference

__all__ = [
    "colorize",
    "compiled_predict_labels",
    "evaluate",
    "inference_kwargs",
    "overlay",
    "predict_images",
    "predict_labels",
    "predict_logits",
    "rescale_size",
    "resized_argmax",
    "save_png",
    "save_results",
    "semantic_inference",
    "side_by_side",
    "slide_grid",
]
