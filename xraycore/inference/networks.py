"""The networks of a model directory, loaded on a backend: each with the preprocessing its training used and
its out-of-domain detector, and the choice of backend (torch or ONNX Runtime) that runs them.

Apart from the Predictor, which averages networks into one answer, so that a single network can be loaded and
run on its own (export, outlier exposure). The runtime modules are imported only when chosen: importing
this module imports no torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Protocol

import numpy as np
from safetensors import SafetensorError

from xraycore.clinical import site_profiles
from xraycore.data import decode
from xraycore.inference.backends import choice as backends
from xraycore.inference.backends.choice import ONNXRUNTIME, TORCH, BackendUnavailable, EngineOutput
from xraycore.inference.model_directory import network_config, network_runs
from xraycore.io.image import XrayImage, to_uint8
from xraycore.ood.distance import OodModel
from xraycore.runs import directory as runs
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.tensor_files import load_arrays

if TYPE_CHECKING:
    import torch

    from xraycore import models


class Engine(Protocol):
    """What a backend runs for one network (backends.torch_runtime.TorchEngine, backends.onnx_runtime.OnnxEngine)."""

    name: str
    ood_widths: list[int]
    one_pass_cam: bool

    def cam_methods(self) -> list[str]: ...

    def forward(self, batch: np.ndarray, tta: bool, cam: str | None, class_index: int | None) -> EngineOutput: ...


class Network:
    """One trained network of a model directory, with the preprocessing its training used.

    Same path as training, run forwards: grey uint8 at the run's load size (re-encoded like the training
    JPEGs when resized here) → intensity normalisation → network input (numpy, identical on both backends)
    → the engine's one forward: logits, out-of-domain features and optionally CAMs. ``temperature`` divides
    this network's logits before an ensemble averages them (1 when the network is the whole model: the
    operating point's temperature applies then).
    """

    def __init__(self, run: runs.Run, backend: str = TORCH, device: str | None = None, temperature: float = 1.0,
                 profile: Adaptation | None = None) -> None:
        self.run = run
        config = network_config(run)
        # first: a network this version cannot build is named as such
        self.engine: Engine = _engine(backend, run, config, device, profile)
        self.backbone: str = config["backbone"]
        self.class_names: list[str] = list(config["class_names"])
        self.image_size = int(config["image_size"])
        self.load_size = int(config.get("load_size") or self.image_size)
        self.mean, self.std = tuple(config["mean"]), tuple(config["std"])
        self.input_jpeg_quality: int | None = config.get("input_jpeg_quality")  # see data.decode.stored_jpeg_quality
        self.intensity: str = decode.require_intensity(config.get("intensity", "none"))
        self.crop_margin = float(config.get("crop_margin", 0.0))
        self.temperature = temperature
        self.ood = _load_ood(run, self.engine.ood_widths)

    @property
    def model(self) -> torch.nn.Module:
        """The torch module (torch backend only)."""
        if not hasattr(self.engine, "model"):
            raise AttributeError(f"the {self.engine.name} backend holds no torch model; use backend='torch'")
        return self.engine.model

    @property
    def spec(self) -> models.BackboneSpec:
        from xraycore import models

        return models.get_spec(self.backbone)

    def load_grey(self, image: XrayImage) -> np.ndarray:
        """The film as grey uint8 at the run's load size, encoded like the training images: what the store keeps
        of a film (no header, no name) and what :meth:`grey` normalises."""
        grey = to_uint8(image.pixels)
        if grey.shape != (self.load_size, self.load_size):  # resized here: give it the training images' encoding
            grey = decode.match_stored_encoding(decode.resize_uint8(grey, self.load_size), self.input_jpeg_quality)
        return grey

    def grey(self, image: XrayImage, loaded: np.ndarray | None = None) -> np.ndarray:
        """The uint8 grey film at the run's load size, intensity-normalised: what :meth:`prepare` normalises (and
        what site adaptation augments). ``loaded``: :meth:`load_grey`'s answer when already computed."""
        return decode.prepare_grey(self.load_grey(image) if loaded is None else loaded, self.intensity,
                                   self.crop_margin)

    def prepare(self, image: XrayImage, loaded: np.ndarray | None = None) -> np.ndarray:
        """Grey float image → normalised float32 (3, H, W) network input, exactly as validation images in training."""
        return decode.network_input(self.grey(image, loaded), self.image_size, self.mean, self.std)

    def to_tensor(self, image: XrayImage) -> torch.Tensor:
        """:meth:`prepare` as a torch tensor (torch installs only)."""
        import torch

        return torch.from_numpy(self.prepare(image))

    def forward(self, batch: np.ndarray, tta: bool, cam: str | None, class_index: int | None) -> EngineOutput:
        """Logits / temperature, out-of-domain features and (optionally) CAMs from ONE forward pass over the batch."""
        output = self.engine.forward(batch, tta, cam, class_index)
        return output._replace(logits=output.logits / self.temperature)

    def ood_ratio(self, feats: np.ndarray) -> np.ndarray | None:
        """Out-of-domain ratio to this network's own flag threshold (> 1: flagged; see OodModel.ratio), or None."""
        return None if self.ood is None else self.ood.ratio(feats)


class Adaptation(NamedTuple):
    """Which site profile's delta a network answers with: the model directory, the profile, the network's key."""

    model_dir: Path
    profile: str
    key: str


def _engine(backend: str, run: runs.Run, config: Mapping[str, Any], device: str | None,
            profile: Adaptation | None = None) -> Engine:
    """The backend's engine for one network, with a site profile's delta laid over its weights when given; each
    runtime module is imported only when chosen."""
    if backend == ONNXRUNTIME:
        from xraycore.inference.backends.onnx_runtime import OnnxEngine

        overrides = None if profile is None else site_profiles.graph_overrides(*profile, run.file(backends.GRAPH_FILE))
        return OnnxEngine(run, config, overrides)
    from xraycore import models
    from xraycore.inference.backends.torch_runtime import TorchEngine

    delta = None if profile is None else site_profiles.load_delta(*profile)
    return TorchEngine.load(run, config, models.pick_device(device), delta)


def _load_ood(run: runs.Run, widths: list[int]) -> OodModel | None:
    """The out-of-domain detector, checked against the network's feature blocks (a swapped file fails here,
    not halfway through a batch)."""
    path = run.file(runs.OOD_FILE)
    if not path.exists():
        return None
    try:
        ood = OodModel.from_arrays(load_arrays(path))
    except (SafetensorError, OSError, KeyError, IndexError):
        raise ModelDirectoryError(path, "(the out-of-domain detector) is damaged or cut short") from None
    scored = [block for i, block in enumerate(ood.blocks) if ood.scored is None or i in ood.scored]
    square = all(block.mean.ndim == 1 and block.precision.shape == (block.mean.size,) * 2 for block in scored)
    # An older detector scores the pre-logit features only, which always come last.
    fits = ood.widths == widths or (len(ood.widths) == 1 and ood.widths[0] == widths[-1])
    discriminator_fits = ood.discriminator is None or all(
        getattr(ood.discriminator, key).shape == (sum(ood.widths),) for key in ("mean", "scale", "weights"))
    if not (square and fits and discriminator_fits):
        raise ModelDirectoryError(path, "(the out-of-domain detector) belongs to another network")
    return ood


def load_networks(run: runs.Run, backend: str = TORCH, device: str | None = None,
                  profile: str | None = None) -> list[Network]:
    """The networks of a model directory (see :func:`network_runs`) on ``backend``, each with site profile
    ``profile``'s delta when one is named (:mod:`xraycore.clinical.site_profiles`)."""
    networks = [Network(member, backend, device, temperature,
                        None if profile is None else Adaptation(run.path, profile, site_profiles.network_key(member.path, run.path)))
                for member, temperature in network_runs(run)]
    if len({tuple(n.class_names) for n in networks}) != 1:
        raise ValueError("the members of an ensemble must share their classes")
    return networks


def choose_backend(requested: str | None, device: str | None, network_dirs: list[Path]) -> tuple[str, str]:
    """(backend, why): ``requested`` when it can answer (else BackendUnavailable saying why); automatically,
    torch when a GPU is asked for or present, else ONNX Runtime on the CPU when every network has an
    exported graph, else torch."""
    requested = backends.check_request(requested)
    has_torch, on_gpu = backends.installed(TORCH), device not in (None, "cpu")
    if requested == TORCH:
        if not has_torch:
            raise BackendUnavailable("the torch backend needs the full install (torch): pip install '.[full]'")
        return TORCH, "asked for"
    if requested == ONNXRUNTIME and on_gpu:
        raise BackendUnavailable(f"ONNX Runtime runs on the CPU here: device {device!r} needs the torch backend")
    if requested == backends.AUTO and has_torch and (on_gpu or _gpu_present()):
        return TORCH, f"GPU ({device or 'found'})"
    missing = backends.graph_missing(network_dirs)
    if missing is None:
        return ONNXRUNTIME, "asked for" if requested == ONNXRUNTIME else "exported graph, CPU"
    if requested == ONNXRUNTIME:
        raise BackendUnavailable(f"ONNX Runtime cannot answer: {missing}")
    if not has_torch:
        raise BackendUnavailable(backends.no_torch_message(missing))
    return TORCH, missing


def _gpu_present() -> bool:
    """An NVIDIA GPU the driver lists (no torch import needed to tell): training's GPUs stay torch's."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())
