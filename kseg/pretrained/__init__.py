"""Pretrained weights by name: the preset table, fetching, converting and caching.

``kseg.from_pretrained(name_or_path, num_classes=None)`` (:func:`~kseg.pretrained.api.from_pretrained`)
takes a preset (:data:`~kseg.pretrained.presets.PRESETS`, :func:`list_presets`), a Hugging Face
repo id, an http(s) URL or a local checkpoint; conversions are cached under ``$KSEG_HOME``
(default ``~/.cache/kseg``) with a sidecar holding the classes, palette, normalisation and
source, which travel with the model (:func:`pretrained_info`).
"""

from kseg.pretrained.api import (
    class_table,
    convert_checkpoint,
    from_pretrained,
    get_preset,
    list_presets,
    pretrained_info,
    transfer_weights,
)
from kseg.pretrained.presets import PRESETS
from kseg.pretrained.sources import DownloadError, OfflineError, kseg_home

__all__ = [
    "PRESETS", "DownloadError", "OfflineError", "class_table", "convert_checkpoint", "from_pretrained", "get_preset", "kseg_home",
    "list_presets", "pretrained_info", "transfer_weights",
]
