"""TFLite export for phones: a fixed-size, builtins-only flatbuffer; fp32, fp16, dynamic, int8.

The graph converted is one concrete function with a fixed input shape::

    images uint8 [1, H, W, 3] RGB (raw pixels; the model normalises inside)
      -> {"labels": int32 [1, H, W]        argmax of the logits resized bilinearly to H, W,
          "logits": float32 [1, h, w, K]}  the model's native-stride logits (SegFormer H/4)

under the signature ``serving_default`` (input ``images``). Only TFLite builtin ops are
allowed (``target_spec.supported_ops = [TFLITE_BUILTINS]``, plus ``TFLITE_BUILTINS_INT8``
for int8), so a model needing Select-TF (Flex) ops fails at conversion, with an
:class:`UnsupportedOpError` that names the ops and the fix, instead of failing on the
phone. What the SegFormer graph needs, measured with TF 2.21:

- exact GELU: ``tf.nn.gelu(approximate=False)`` (what ``keras.activations.gelu`` lowers
  to) is fused by the converter into the ``GELU`` builtin (``approximate=false``), exact
  to float32 rounding; a hand-written ``erf`` would need the Flex op ``Erf``;
- LayerNorm: MEAN / SQUARED_DIFFERENCE / RSQRT / MUL / ADD builtins; attention softmax:
  SOFTMAX; decoder resizes: RESIZE_BILINEAR with constant sizes (the input is fixed);
- variables: converting the concrete function directly leaves Keras 3 variables as
  uninitialised resource variables (NaN logits), so it is frozen first
  (:meth:`TFLiteExportModule.frozen_function`); a leftover VAR_HANDLE is an error;
- int8: every op quantizes to builtins (LayerNorm's NEG stays float). On CPU (XNNPACK)
  the int8 attention path (BATCH_MATMUL over the Q K^T scores, SOFTMAX) is slow, so
  ``float_ops=("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "BATCH_MATMUL", "SOFTMAX")`` (the
  mobile spec) keeps the LayerNorm statistics and attention scores in float32: ~6x faster
  than all-int8 for B0 at 512x512 and closer to float (measured, see export/README.md).

Quantization modes:

- ``none``: float32 weights and activations;
- ``fp16``: float16 weights (half the size), float32 compute on CPU (GPU delegates run fp16);
- ``dynamic``: int8 weights, activations quantized on the fly for matmul/conv (float
  elsewhere); no calibration data;
- ``int8``: full integer: int8 weights and activations, calibrated on representative
  images (:func:`representative_images`, the recipe's training pipeline); the input stays
  uint8 and the ``logits`` output is dequantized to float32.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from kseg.utils.progress import phase, track

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
DEFAULT_INPUT_SIZE = (512, 512)
SIGNATURE = "serving_default"

# Flex ops we know how to avoid: op -> fix.
KNOWN_FIXES = {
    "Erf": "an exact GELU written by hand as 0.5*x*(1+erf(x/sqrt(2))) needs Erf; call "
           "keras.activations.gelu(x, approximate=False) / tf.nn.gelu instead, which the "
           "converter fuses into the GELU builtin",
    "Einsum": "write the contraction with ops.matmul and transposes/reshapes (BATCH_MATMUL)",
    "ImageProjectiveTransformV3": "do not export augmentation layers; apply them in tf.data",
    "ResizeBicubic": "use bilinear resizing (RESIZE_BILINEAR) in the exported graph",
}


class UnsupportedOpError(RuntimeError):
    """The model needs ops outside the TFLite builtins (Select-TF / Flex ops).

    Attributes:
      ops: names of the offending TF ops (e.g. ``["Erf"]``).
    """

    def __init__(self, message: str, ops: Sequence[str] = ()):
        super().__init__(message)
        self.ops = list(ops)


def _logits_fn(model) -> Callable:
    """Model output -> logits [B, h, w, K] (identity, or ``semantic_logits`` for dicts)."""

    def fn(outputs):
        if isinstance(outputs, dict):
            if not hasattr(model, "semantic_logits"):
                raise ValueError("the model returns a dict and has no semantic_logits()")
            return model.semantic_logits(outputs)
        return outputs

    return fn


def check_input_size(input_size) -> tuple:
    """``(H, W)`` as ints. Raises ValueError unless two positive integers (>= 32, so every
    stride-32 stage has at least one token)."""
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input size must be two integers H W, got {input_size!r}") from None
    if h < 32 or w < 32:
        raise ValueError(f"input size {h}x{w} is too small: use H, W >= 32")
    return h, w


class TFLiteExportModule(tf.Module):
    """The fixed-shape graph converted to TFLite (see the module docstring).

    ``infer(images)``: uint8 [1, H, W, 3] -> ``{"labels": int32 [1, H, W], "logits":
    float32 [1, h, w, K]}``. Callable in TF too: it is the Keras reference of the
    verification (same input, same resize, same argmax).
    """

    def __init__(self, model, input_size: Sequence[int] = DEFAULT_INPUT_SIZE):
        super().__init__(name="kseg_tflite")
        self.model = model
        self.input_size = check_input_size(input_size)
        logits_fn = _logits_fn(model)
        h, w = self.input_size

        def infer(images):
            logits = tf.cast(logits_fn(model(tf.cast(images, tf.float32), training=False)),
                             tf.float32)
            resized = tf.image.resize(logits, (h, w), method="bilinear")
            return {"labels": tf.argmax(resized, axis=-1, output_type=tf.int32),
                    "logits": logits}

        self.infer = tf.function(
            infer, input_signature=[tf.TensorSpec([1, h, w, 3], tf.uint8, name="images")])

    def concrete_function(self):
        return self.infer.get_concrete_function()

    def frozen_function(self):
        """``infer`` with the variables folded into constants, outputs still named.

        The converter's own path for a concrete function with a trackable object lowers it
        to a SavedModel first; with a Keras 3 model inside, every variable then stays a
        resource variable (VAR_HANDLE / READ_VARIABLE ops, uninitialised in the
        interpreter: NaN logits, measured with TF 2.21). Freezing first avoids that; the
        wrapper restores the output names that freezing drops.
        """
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        cf = self.concrete_function()
        frozen = convert_variables_to_constants_v2(cf)
        keys = sorted(cf.structured_outputs)  # the flattening order of a dict
        h, w = self.input_size

        @tf.function(input_signature=[tf.TensorSpec([1, h, w, 3], tf.uint8, name="images")])
        def serve(images):
            return dict(zip(keys, frozen(images)))

        holder = tf.Module()
        holder.serve = serve
        return serve.get_concrete_function(), holder


def _unsupported_op_error(err: Exception, model_name: str) -> UnsupportedOpError:
    text = str(err)
    ops = set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text))
    for group in re.findall(r"TF Select ops: ([\w, ]+)", text):
        ops.update(o.strip() for o in group.split(",") if o.strip())
    ops = sorted(ops)
    fixes = [f"  - {op}: {KNOWN_FIXES[op]}" for op in ops if op in KNOWN_FIXES]
    generic = ("rewrite the layer with ops from the TFLite builtin set "
               "(https://ai.google.dev/edge/litert/models/ops_compatibility), or serve the "
               "model as a SavedModel (--format saved_model)")
    msg = (f"{model_name} cannot be converted to TFLite builtins: it needs the TF op(s) "
           f"{', '.join(ops) or '(see the converter message below)'}, which the standard TFLite "
           "runtime does not have (Select-TF / Flex ops are not allowed, so that the file runs "
           "on a phone's stock runtime). Fix:\n" + ("\n".join(fixes) + "\n" if fixes else "")
           + f"  - otherwise: {generic}.\nConverter message (last lines):\n"
           + "\n".join(text.strip().splitlines()[-15:]))
    return UnsupportedOpError(msg, ops)


def convert(model, input_size: Sequence[int] = DEFAULT_INPUT_SIZE, quantize: str = "none",
            representative_data: Optional[Iterable[np.ndarray]] = None,
            float_ops: Sequence[str] = ()) -> bytes:
    """Converts ``model`` to a TFLite flatbuffer with builtin ops only.

    Args:
      model: a built kseg model taking raw RGB pixels.
      input_size: (H, W) of the fixed input.
      quantize: one of :data:`QUANTIZE_MODES`.
      representative_data: int8 only: uint8 arrays [1, H, W, 3] (an iterable that can be
        iterated once; ~100 images is plenty).
      float_ops: int8 only: TFLite op types kept in float32 (e.g. ``("MEAN", "RSQRT")`` for
        the LayerNorm statistics); the quantizer inserts QUANTIZE/DEQUANTIZE around them.

    Returns:
      the ``.tflite`` file content.

    Raises:
      ValueError: unknown ``quantize``, int8 without representative data, bad input size.
      UnsupportedOpError: the graph needs ops outside the TFLite builtins (names them).
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantization {quantize!r}; valid: {', '.join(QUANTIZE_MODES)}")
    if quantize == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs representative_data (uint8 [1, H, W, 3] "
                         "images, e.g. representative_images(recipe, input_size))")
    if float_ops and quantize != "int8":
        raise ValueError("float_ops only applies to quantize='int8'")
    module = TFLiteExportModule(model, input_size)
    fn, holder = module.frozen_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # TFLITE_BUILTINS stays allowed so that ops without an int8 kernel (and float_ops)
        # run in float; still no Flex ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                               tf.lite.OpsSet.TFLITE_BUILTINS]
        data = list(representative_data)
        h, w = module.input_size
        for i, x in enumerate(data):
            if x.shape != (1, h, w, 3) or x.dtype != np.uint8:
                raise ValueError(f"representative_data[{i}] is {x.dtype} {x.shape}; expected "
                                 f"uint8 (1, {h}, {w}, 3)")
        converter.representative_dataset = lambda: ([x] for x in track(
            data, "int8 calibration", unit="images"))
        if float_ops:
            converter._experimental_calibrate_only = True  # quantize below, with a denylist
    name = getattr(model, "variant", None) or model.name
    try:
        with phase(f"converting {name} to TFLite ({quantize})"):
            content = converter.convert()
    except Exception as e:  # ConverterError: the message lists unsupported ops
        if "neither a custom op nor a flex op" in str(e) or "TF Select ops" in str(e):
            raise _unsupported_op_error(e, name) from e
        raise
    if quantize == "int8" and float_ops:
        from tensorflow.lite.python.convert import mlir_quantize

        with phase("quantizing to int8"):
            content = mlir_quantize(content, fully_quantize=False,
                                    denylisted_ops=[str(o).upper() for o in float_ops])
    left = sorted(set(op_summary(content)["ops"]) & {"VAR_HANDLE", "READ_VARIABLE"})
    if left:
        raise RuntimeError(f"{name}: the converted model still reads variables at run time "
                           f"({', '.join(left)}); their values would be uninitialised on the "
                           "device. Report this with your TF version.")
    return content


def representative_images(recipe, input_size: Sequence[int], num_images: int = 100,
                          seed: int = 0) -> list:
    """Calibration images for int8: crops from the recipe's training pipeline.

    ``kseg.data.build_dataset(recipe.data, split=recipe.data.train_split, training=True,
    batch_size=1)`` (random resize, crop, flip, photometric distortion, as in training),
    each crop resized bilinearly to ``input_size``.

    Returns:
      ``num_images`` uint8 arrays [1, H, W, 3].

    Raises:
      kseg.data.DatasetError: the training split is missing or unreadable.
      ValueError: ``num_images`` < 1.
    """
    from kseg.data import build_dataset

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    h, w = check_input_size(input_size)
    ds = build_dataset(recipe.data, split=recipe.data.train_split, training=True,
                       batch_size=1, seed=seed)
    out = []
    for images, _ in track(ds.take(int(num_images)), "reading calibration images", total=int(num_images),
                           unit="images"):
        x = tf.image.resize(images, (h, w), method="bilinear")
        out.append(tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8).numpy())
    return out


def op_summary(content: bytes) -> dict:
    """Op types of a TFLite model, read with ai-edge-litert.

    Returns:
      ``{"ops": {op type: count}, "int8_ops": n, "float_ops": n}``: an op counts as int8
      when its first output is int8/uint8/int16, as float when it is float32/float16 (ops
      with int32/bool outputs, e.g. ARG_MAX, count in neither).
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=content)
    dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interp.get_tensor_details()}
    ops, n_int, n_float = {}, 0, 0
    for op in interp._get_ops_details():  # no public listing of ops in ai-edge-litert
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
        outs = [i for i in op["outputs"] if i >= 0]
        dt = dtypes.get(outs[0]) if outs else None
        if dt in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)):
            n_int += 1
        elif dt in (np.dtype(np.float32), np.dtype(np.float16)):
            n_float += 1
    return {"ops": dict(sorted(ops.items())), "int8_ops": n_int, "float_ops": n_float}
