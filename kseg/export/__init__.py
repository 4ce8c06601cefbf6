"""Export kseg models for serving and for phones (``python -m kseg.export``).

- :mod:`kseg.export.saved_model`: SavedModel with a ``serving_default`` signature on raw
  uint8 images of any size (labels + probabilities), for TF Serving;
- :mod:`kseg.export.tflite`: fixed-size TFLite flatbuffers with builtin ops only, in
  fp32 / fp16 / dynamic-range / full-int8 variants;
- :mod:`kseg.export.verify`: parity of an artifact with the Keras model (ai-edge-litert
  for TFLite), val mIoU, latency;
- :mod:`kseg.export.metadata`: the sidecar JSON (classes, palette, input layout) that
  the edge kit in the repository's ``export/`` folder reads;
- :mod:`kseg.export.spec`: per-target export specs (``export/*.yaml``).
"""

from kseg.export.metadata import build_metadata, class_metadata, read_metadata, write_metadata
from kseg.export.saved_model import SegmentationServingModule, export_saved_model, load_serving_fn
from kseg.export.spec import ExportSpec, SpecError, load_spec
from kseg.export.tflite import (
    QUANTIZE_MODES,
    TFLiteExportModule,
    UnsupportedOpError,
    convert,
    op_summary,
    representative_images,
)
from kseg.export.verify import TFLiteRunner, benchmark, verify_saved_model, verify_tflite

__all__ = [
    "QUANTIZE_MODES", "ExportSpec", "SegmentationServingModule", "SpecError",
    "TFLiteExportModule", "TFLiteRunner", "UnsupportedOpError", "benchmark", "build_metadata",
    "class_metadata", "convert", "export_saved_model", "load_serving_fn", "load_spec",
    "op_summary", "read_metadata", "representative_images", "verify_saved_model",
    "verify_tflite", "write_metadata",
]
