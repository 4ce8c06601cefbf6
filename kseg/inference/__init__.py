"""Inference: whole / slide prediction, split evaluation, overlays."""

from kseg.inference.evaluator import evaluate, inference_kwargs, save_results
from kseg.inference.overlay import colorize, overlay, save_png, side_by_side
from kseg.inference.predictor import predict_labels, predict_logits, rescale_size, slide_grid
from kseg.inference.semantic import semantic_inference

__all__ = [
    "colorize",
    "evaluate",
    "inference_kwargs",
    "overlay",
    "predict_labels",
    "predict_logits",
    "rescale_size",
    "save_png",
    "save_results",
    "semantic_inference",
    "side_by_side",
    "slide_grid",
]
