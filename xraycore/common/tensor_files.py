"""Weights and arrays on disk: safetensors written atomically, and the one safe loader of weights files.

Training writes checkpoints, export and the torch backend read them, the out-of-domain model is stored as
arrays, and tests and scripts load weights users bring: every room that touches a tensor file uses these, so
a torch pickle is never unpickled freely anywhere. Arrays need no torch (a serving install has none);
torch and ``safetensors.torch`` are imported only by the functions that handle torch tensors.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors.numpy

from xraycore.common.files import atomic_write_bytes

if TYPE_CHECKING:
    import torch

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts nest weights
TORCH_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def save_weights(
    path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save a state dict as safetensors, atomically.

    Every tensor is copied to its own contiguous CPU storage first, because safetensors refuses
    views and tied weights (two names sharing one storage).
    """
    import safetensors.torch  # lazy, as torch: a serving install reads arrays only

    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}
    atomic_write_bytes(Path(path), safetensors.torch.save(tensors, metadata=metadata))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors``, or from a torch pickle with ``weights_only=True``.

    Pickles are never unpickled freely: a file that needs anything beyond tensors and plain
    containers is refused with ValueError instead of running its code. A training checkpoint
    (``{"state_dict": ..., "epoch": ...}``) is unwrapped to its state dict.
    """
    import safetensors.torch
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return safetensors.torch.load_file(path, device="cpu")
    if suffix not in TORCH_PICKLE_SUFFIXES:
        raise ValueError(
            f"{path.name}: unsupported weights file type; use .safetensors or one of "
            f"{', '.join(TORCH_PICKLE_SUFFIXES)}."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path.name} was refused: it holds Python objects beyond plain tensors, and loading "
            "them could run arbitrary code. Re-save it as a state dict "
            "(torch.save(model.state_dict(), ...)) or as .safetensors."
        ) from error
    return _unwrap_state_dict(loaded, path)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Plain numpy arrays (e.g. the out-of-domain model) as safetensors, atomically (no torch needed)."""
    atomic_write_bytes(Path(path), safetensors.numpy.save({name: np.ascontiguousarray(value)
                                                           for name, value in arrays.items()}))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The numpy arrays of a safetensors file (no torch needed)."""
    return safetensors.numpy.load_file(Path(path))


def _unwrap_state_dict(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(loaded, dict):
        nested = next((loaded[key] for key in CHECKPOINT_KEYS if isinstance(loaded.get(key), dict)), None)
        if nested is not None:
            loaded = nested
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError(f"{path.name} does not contain a state dict (a mapping of names to tensors).")
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path.name}: these entries are not tensors: {', '.join(not_tensors[:5])}.")
    return dict(loaded)
