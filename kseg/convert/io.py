"""Reading checkpoints into a flat ``{key: np.ndarray}`` state dict, whatever the file.

:func:`read_state_dict` knows every container the converters meet:

- a model folder: ``model.safetensors`` (preferred) or ``pytorch_model.bin``, or their
  sharded ``*.index.json`` forms (HF ``save_pretrained`` / Hub downloads);
- one ``.safetensors`` file (read with ``safetensors.numpy``: no torch needed);
- one ``.bin`` / ``.pt`` / ``.pth`` PyTorch pickle (torch imported only then, loaded with
  ``weights_only=True`` so no code runs); training checkpoints wrapping the weights in
  ``state_dict`` or ``model`` (mmseg, the Segmenter authors) are unwrapped;
- one Google ``.npz`` (JAX ViT / AugReg), keys as stored (``Transformer/...``);
- one detectron2 ``.pkl`` (MaskFormer's model zoo), read with an unpickler that admits
  numpy arrays and dicts only;
- an in-memory mapping of numpy arrays or torch tensors (``model.state_dict()``).
"""

import io
import json
import os
import pickle

import numpy as np

SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")
TORCH_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
SUFFIXES = (".safetensors",) + TORCH_SUFFIXES + (".npz", ".pkl", ".index.json")


def to_numpy(value):
    """A numpy array from a numpy array, a torch tensor (any device, grad or not), or a list."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _load_safetensors(path):
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (TypeError, ValueError) as err:  # e.g. bfloat16, which numpy cannot hold
        try:
            from safetensors.torch import load_file as load_torch
        except ImportError:
            raise ValueError(
                f"cannot read {path} with safetensors.numpy ({err}); install torch to read "
                "bfloat16 checkpoints"
            ) from err
        return {k: to_numpy(v) for k, v in load_torch(path).items()}


def _unwrap(obj, path):
    # Training checkpoints wrap the weights: {"state_dict": {...}} or {"model": {...}}.
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")  # noqa: TRY004 (bad file content)
    return {k: to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}


def _load_torch(path):
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"{path} is a PyTorch pickle; reading it needs torch (pip install torch), or "
            "convert it to .safetensors first"
        ) from err
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)


class _NumpyUnpickler(pickle.Unpickler):
    _ALLOWED = frozenset({("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")})

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: detectron2 .pkl files hold numpy only")


def read_d2_pickle(path):
    """``{key: np.ndarray}`` from a detectron2 ``.pkl`` (``{"model": {...}}`` or a flat dict).

    Raises: pickle.UnpicklingError when the file holds anything but numpy arrays / dicts.
    """
    with open(path, "rb") as f:
        obj = _NumpyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    return _unwrap(obj, path)


def _load_npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _load_sharded(index_path, loader):
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    folder = os.path.dirname(index_path)
    state = {}
    for shard in sorted(set(weight_map.values())):
        state.update(loader(os.path.join(folder, shard)))
    return state


def _load_file(path):
    if path.endswith(".index.json"):
        return _load_sharded(path, _load_safetensors if ".safetensors" in path else _load_torch)
    for suffix, loader in ((".safetensors", _load_safetensors), (".npz", _load_npz), (".pkl", read_d2_pickle)):
        if path.endswith(suffix):
            return loader(path)
    if path.endswith(TORCH_SUFFIXES):
        return _load_torch(path)
    raise ValueError(f"unsupported checkpoint file {path!r}: expected one of {', '.join(SUFFIXES)}")


def checkpoint_file(folder):
    """The weights file of a model folder (see module docstring), or None."""
    for name in SAFETENSORS_NAMES + TORCH_NAMES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def read_state_dict(source):
    """Reads a checkpoint (any container of the module docstring) into ``{str: np.ndarray}``.

    Args:
      source: a folder, a file path, or a mapping of key -> numpy array / torch tensor.
    Returns: ``dict[str, np.ndarray]`` (arrays keep their dtype).
    Raises:
      FileNotFoundError: the path does not exist, or the folder holds no known file.
      ValueError: an unsupported file type, or a pickle that is not a state dict.
      ImportError: a PyTorch pickle and torch is not installed.
      pickle.UnpicklingError: a ``.pkl`` holding anything but numpy arrays.
    """
    if isinstance(source, dict):
        return {str(k): to_numpy(v) for k, v in source.items()}
    path = os.fspath(source)
    if os.path.isdir(path):
        found = checkpoint_file(path)
        if found is None:
            raise FileNotFoundError(
                f"no checkpoint in folder {path!r}: expected one of "
                f"{', '.join(SAFETENSORS_NAMES + TORCH_NAMES)} (found: {sorted(os.listdir(path))[:10]})"
            )
        return _load_file(found)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    return _load_file(path)
