"""Dataset registry: name -> builder, the :class:`DatasetInfo` record, root resolution.

A builder is ``fn(root, split, reduce_zero_label, folder_spec) -> DatasetInfo`` that lists
the samples of one split; :func:`get_dataset` then runs the cheap eager checks
(:func:`kseg.data.io.check_samples`). Built-in datasets (camvid, ade20k, folder) register
themselves when :mod:`kseg.data` is imported.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

IGNORE_INDEX = 255


class DatasetError(ValueError):
    """A dataset folder, list file, image or label map is missing or invalid.

    The message names the file, the problem and the fix.
    """


@dataclasses.dataclass
class DatasetInfo:
    """One split of a dataset: class metadata plus the (image, label) file pairs.

    Attributes:
      name: dataset name (``"camvid"``; a folder dataset's ``name`` from its spec).
      root: the dataset folder.
      split: split name as requested (``"train"``).
      classes: class names, length K.
      palette: uint8 [K, 3] RGB colours.
      samples: ``(image_path, label_path)`` pairs in split-list order.
      ignore_index: label value ignored by losses and metrics (255).
      label_map: raw label value -> value, applied before ``reduce_zero_label``
        (mmseg ``label_map`` semantics); e.g. CamVid ``{11: 255}`` (void).
      reduce_zero_label: raw 0 -> ignore_index and v -> v - 1 (mmseg semantics).
      list_file: the split list file or folder the samples came from (for messages).
      bad_samples: ``(path, reason)`` of samples skipped under ``skip_bad_samples``,
        appended eagerly and while iterating.
    """

    name: str
    root: str
    split: str
    classes: Tuple[str, ...]
    palette: np.ndarray
    samples: List[Tuple[str, str]]
    ignore_index: int = IGNORE_INDEX
    label_map: Dict[int, int] = dataclasses.field(default_factory=dict)
    reduce_zero_label: bool = False
    list_file: Optional[str] = None
    bad_samples: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.classes = tuple(str(c) for c in self.classes)
        self.palette = np.asarray(self.palette, dtype=np.uint8).reshape(-1, 3)
        if len(self.palette) != len(self.classes):
            raise DatasetError(
                f"dataset '{self.name}': {len(self.classes)} classes but {len(self.palette)} "
                "palette colours; give one RGB colour per class"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"DatasetInfo(name={self.name!r}, split={self.split!r}, root={self.root!r}, "
            f"num_classes={self.num_classes}, samples={len(self.samples)}, "
            f"reduce_zero_label={self.reduce_zero_label}, bad_samples={len(self.bad_samples)})"
        )


Builder = Callable[[Optional[str], str, Optional[bool], Optional[str]], DatasetInfo]
_REGISTRY: Dict[str, Builder] = {}


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(root, split, reduce_zero_label, folder_spec)``."""

    def wrap(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_datasets() -> List[str]:
    """Names accepted by :func:`get_dataset` / ``data.dataset``, sorted."""
    return sorted(_REGISTRY)


def get_dataset(
    name: str,
    root: Optional[str] = None,
    split: str = "train",
    reduce_zero_label: Optional[bool] = None,
    folder_spec: Optional[str] = None,
    skip_bad_samples: bool = False,
    check: bool = True,
) -> DatasetInfo:
    """Lists one split of a registered dataset and checks its files eagerly.

    Args:
      name: a registered name, see :func:`list_datasets`.
      root: dataset folder; None resolves it with :func:`find_data_root`.
      split: split name (``"train"``, ``"val"``).
      reduce_zero_label: None keeps the dataset's default (ADE20K True, others False).
      folder_spec: YAML spec of a ``folder`` dataset.
      skip_bad_samples: drop (and log with ``logging.warning``, record in
        ``info.bad_samples``) missing or unreadable samples instead of raising.
      check: run the eager checks (existence, PIL header sizes and modes).

    Returns:
      :class:`DatasetInfo`.

    Raises:
      DatasetError: unknown name, missing folder or split list, missing/unreadable
        files, image/label size mismatch.
    """
    if name not in _REGISTRY:
        raise DatasetError(
            f"unknown dataset '{name}'. Registered datasets: {', '.join(list_datasets())}; "
            "set data.dataset to one of them (use 'folder' with data.folder_spec for your own data)"
        )
    info = _REGISTRY[name](root, split, reduce_zero_label, folder_spec)
    if check:
        from kseg.data.io import check_samples

        check_samples(info, skip_bad_samples=skip_bad_samples)
    return info


def _repo_root() -> str:
    """Parent of the ``kseg`` package folder."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def find_data_root(dir_name: Union[str, Sequence[str]], root: Optional[str] = None) -> str:
    """Resolves a dataset folder.

    Order: ``root`` if given (it must exist), else for each name in ``dir_name``:
    ``$KSEG_DATA/<dir>``, ``./data/<dir>``, ``../shared/data/<dir>`` (relative to the
    current directory), ``<repo root>/../shared/data/<dir>``.

    Returns:
      the absolute path of the first existing folder.

    Raises:
      DatasetError: nothing found; the message lists every path tried and the fix.
    """
    names = [dir_name] if isinstance(dir_name, str) else list(dir_name)
    if root is not None:
        root = os.path.expanduser(str(root))
        if os.path.isdir(root):
            return os.path.abspath(root)
        raise DatasetError(
            f"dataset folder not found: {root} (given as data.root). "
            "Fix: point data.root at the dataset folder, or unset it to search "
            f"$KSEG_DATA/{names[0]}, ./data/{names[0]} and ../shared/data/{names[0]}"
        )
    tried = []
    bases = []
    if os.environ.get("KSEG_DATA"):
        bases.append(os.path.expanduser(os.environ["KSEG_DATA"]))
    bases += ["data", os.path.join("..", "shared", "data"),
              os.path.join(_repo_root(), "..", "shared", "data")]
    for name in names:
        for base in bases:
            path = os.path.abspath(os.path.join(base, name))
            if path in tried:
                continue
            tried.append(path)
            if os.path.isdir(path):
                return path
    env = os.environ.get("KSEG_DATA")
    raise DatasetError(
        f"dataset folder '{names[0]}' not found. Tried: {', '.join(tried)} "
        f"(KSEG_DATA is {'set to ' + env if env else 'not set'}). "
        f"Fix: set KSEG_DATA to the folder holding '{names[0]}/', or set data.root "
        "to the dataset folder itself"
    )
