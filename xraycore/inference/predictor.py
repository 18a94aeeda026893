"""The Predictor: a model directory (a run or ``models/default``) → a Prediction per image.

Same path as training, run forwards: read → grey uint8 at the run's load size → network input →
logits → temperature → probabilities → the call at the saved operating point; optionally a
Grad-CAM overlay, flip test-time augmentation and an out-of-domain score.

Two backends run the networks (see :mod:`xraycore.backend`): torch (``runtime_torch``) and ONNX Runtime
(``runtime_onnx``), chosen automatically unless asked. Preprocessing, temperature, ensembling, the
out-of-domain ratio and the call are this module's, in numpy, so both answer alike. Importing it imports
no torch: a serving install has none.
"""
from __future__ import annotations

import io as _stdio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np
from safetensors import SafetensorError

from xraycore.inference.backends import choice as backends
from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.explain import cam as explain
from xraycore.io import intended_use
from xraycore.clinical import operating_points as operating
from xraycore.clinical import releases
from xraycore.runs import directory as runs
from xraycore.common.files import plain_name
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.tensor_files import load_arrays
from xraycore.clinical import triage
from xraycore.data import decode
from xraycore.inference.backends.choice import ONNXRUNTIME, TORCH, BackendUnavailable, EngineOutput
from xraycore.io.reader import XrayImage, XrayReadError, read_xray, to_uint8
from xraycore.ood.distance import OodModel

if TYPE_CHECKING:
    import torch

    from xraycore.models import registry as models

Source = bytes | str | Path | BinaryIO
READ_MAX_SIDE = 1024  # JPEGs decode at >= this size: ample for the network input and a screen-sized overlay
OVERLAY_MAX_SIDE = 1024  # overlays are for screens: blending a 3000 px radiograph costs more than the network
OUT_OF_DOMAIN_WARNING = "unlike the images this model was trained on (out of domain): treat the answer with caution"


@dataclass
class Prediction:
    """What the app and the CLI show for one image. ``error`` set means nothing else is."""

    name: str
    probabilities: dict[str, float] = field(default_factory=dict)
    label: str | None = None
    positive_class: str | None = None
    positive_probability: float | None = None
    threshold: float | None = None
    operating_point: str | None = None  # the name of the operating point that made the call
    logits: list[float] | None = None  # before the temperature: what site calibration fits on
    out_of_domain: bool | None = None
    ood_score: float | None = None
    not_assessed: str | None = None  # why there is no call (triage.not_assessed_reason): label None then
    guards: list[str] = field(default_factory=list)  # the DICOM says: outside the intended population; shown first
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    image: np.ndarray | None = None  # the grey image as read, float [0, 1]
    heatmap: np.ndarray | None = None
    cam_method: str | None = None  # the method that made the heat map (explain.ONE_PASS: CAM from the forward)
    overlay: np.ndarray | None = None
    backend: str | None = None  # which inference backend answered (torch or onnxruntime)
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The CLI's JSON line: file, probability, label (or file, error), plus the details."""
        if not self.ok:
            return {"file": self.name, "error": self.error, "error_kind": self.error_kind}
        probability = self.positive_probability if self.positive_probability is not None else max(self.probabilities.values())
        return {  # a film not assessed (not a chest X-ray) has no call and no probability: label null, and why
            "file": self.name, "probability": None if self.not_assessed else round(probability, 6), "label": self.label,
            "not_assessed": self.not_assessed, "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "threshold": self.threshold, "operating_point": self.operating_point, "out_of_domain": self.out_of_domain,
            "ood_score": None if self.ood_score is None else round(self.ood_score, 3),
            "warnings": [*self.guards, *self.warnings], "guards": self.guards,
            "backend": self.backend, "cam_method": self.cam_method,
        }


ENSEMBLE_FILE = "ensemble.json"  # a model directory whose members are model directories
ENSEMBLE_MEMBERS_DIR = "members"


class Engine(Protocol):
    """What a backend runs for one network (runtime_torch.TorchEngine, runtime_onnx.OnnxEngine)."""

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

    def __init__(self, run: runs.Run, backend: str = TORCH, device: str | None = None, temperature: float = 1.0) -> None:
        self.run = run
        config = _network_config(run)
        self.engine: Engine = _engine(backend, run, config, device)  # first: a network this version cannot build is named as such
        self.backbone: str = config["backbone"]
        self.class_names: list[str] = list(config["class_names"])
        self.image_size = int(config["image_size"])
        self.load_size = int(config.get("load_size") or self.image_size)
        self.mean, self.std = tuple(config["mean"]), tuple(config["std"])
        self.input_jpeg_quality: int | None = config.get("input_jpeg_quality")  # see data.stored_jpeg_quality
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
        from xraycore.models import registry as models

        return models.get_spec(self.backbone)

    def prepare(self, image: XrayImage) -> np.ndarray:
        """Grey float image → normalised float32 (3, H, W) network input, exactly as validation images in training."""
        grey = to_uint8(image.pixels)
        if grey.shape != (self.load_size, self.load_size):  # resized here: give it the training images' encoding
            grey = decode.match_stored_encoding(decode.resize_uint8(grey, self.load_size), self.input_jpeg_quality)
        grey = decode.prepare_grey(grey, self.intensity, self.crop_margin)
        return decode.network_input(grey, self.image_size, self.mean, self.std)

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


def _engine(backend: str, run: runs.Run, config: Mapping[str, Any], device: str | None) -> Engine:
    """The backend's engine for one network; each runtime module is imported only when chosen."""
    if backend == ONNXRUNTIME:
        from xraycore.inference.backends.onnx_runtime import OnnxEngine

        return OnnxEngine(run, config)
    from xraycore.models import registry as models
    from xraycore.inference.backends.torch_runtime import TorchEngine

    return TorchEngine.load(run, config, models.pick_device(device))


def network_runs(run: runs.Run) -> list[tuple[runs.Run, float]]:
    """The networks of a model directory with the temperature each is divided by: itself (1), or the members an
    ensemble.json lists (each by its own internal temperature, so the ensemble averages calibrated logits)."""
    spec = run.read_json(ENSEMBLE_FILE, None)
    if spec is None:
        return [(run, 1.0)]
    if not isinstance(spec, dict) or not isinstance(spec.get("members"), list):
        raise ModelDirectoryError(run.path / ENSEMBLE_FILE, "does not list the ensemble's members")
    members = []
    for name in spec["members"]:  # plain names of folders under members/, never paths
        member = open_model(run.path / ENSEMBLE_MEMBERS_DIR / plain_name(name, "ensemble member"))
        members.append((member, float(member.operating_point.get("temperature", 1.0))))
    return members


def load_networks(run: runs.Run, backend: str = TORCH, device: str | None = None) -> list[Network]:
    """The networks of a model directory (see :func:`network_runs`) on ``backend``."""
    networks = [Network(member, backend, device, temperature) for member, temperature in network_runs(run)]
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


MODEL_JSON_FILES = (runs.CONFIG_FILE, runs.OPERATING_POINT_FILE, operating.POINTS_FILE, ENSEMBLE_FILE,
                    intended_use.INTENDED_USE_FILE)
NETWORK_CONFIG_KEYS = ("backbone", "class_names", "image_size", "mean", "std")


def open_model(path: str | Path) -> runs.Run:
    """A model directory whose JSON files all parse; ModelDirectoryError naming the first that does not.

    Checked once here, so the many later reads of config.json and the operating point cannot fail halfway.
    """
    run = runs.Run(Path(path))
    if not run.file(runs.CONFIG_FILE).is_file():
        raise ModelDirectoryError(run.file(runs.CONFIG_FILE), "is missing (is this a model directory?)")
    for name in MODEL_JSON_FILES:
        try:
            content = run.read_json(name, {})
        except ValueError:  # UnicodeDecodeError is a ValueError too: binary junk
            raise ModelDirectoryError(run.file(name), "is damaged: it is not valid JSON") from None
        except OSError:
            raise ModelDirectoryError(run.file(name), "cannot be read (is it a file you may read?)") from None
        if not isinstance(content, dict):
            raise ModelDirectoryError(run.file(name), "is damaged: it is not a JSON object")
    return run


def _network_config(run: runs.Run) -> dict[str, Any]:
    config = run.config
    missing = [key for key in NETWORK_CONFIG_KEYS if key not in config]
    if missing:
        raise ModelDirectoryError(run.file(runs.CONFIG_FILE), f"lacks {', '.join(missing)}")
    return config


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
    square = all(block.mean.ndim == 1 and block.precision.shape == (block.mean.size,) * 2 for block in ood.blocks)
    # An older detector scores the pre-logit features only, which always come last.
    fits = ood.widths == widths or (len(ood.widths) == 1 and ood.widths[0] == widths[-1])
    discriminator_fits = ood.discriminator is None or all(
        getattr(ood.discriminator, key).shape == (sum(ood.widths),) for key in ("mean", "scale", "weights"))
    if not (square and fits and discriminator_fits):
        raise ModelDirectoryError(path, "(the out-of-domain detector) belongs to another network")
    return ood


class Predictor:
    """Loads a model directory (one network or an ensemble) once; scores images in batches.

    An ensemble averages its members' calibrated logits, their CAMs (at the first member's resolution) and
    their out-of-domain distance ratios; the model directory's operating point then applies as for one network.
    """

    def __init__(self, model_dir: str | Path | runs.Run, device: str | None = None, threshold: float | None = None,
                 operating_point: str | None = None, backend: str | None = None) -> None:
        self.run = open_model(model_dir.path if isinstance(model_dir, runs.Run) else model_dir)
        self.device = device
        self.backend, self.backend_reason = choose_backend(backend, device, [m.path for m, _ in network_runs(self.run)])
        try:
            self.networks = load_networks(self.run, self.backend, device)
        except ModelDirectoryError as error:  # a graph of older weights (runtime_onnx.StaleGraph): torch answers
            if self.backend != ONNXRUNTIME or backends.check_request(backend) != backends.AUTO or not backends.installed(TORCH):
                raise
            self.backend, self.backend_reason = TORCH, backends.fell_back(str(error))
            self.networks = load_networks(self.run, TORCH, device)
        self._torch_networks: list[Network] | None = self.networks if self.backend == TORCH else None
        self.intended = intended_use.load(self.run.path)  # None: no intended_use.json, no DICOM checks
        config = self.run.config
        self.class_names: list[str] = list(config.get("class_names") or self.networks[0].class_names)
        operating = operating_point_of(self.run, operating_point)
        self.operating_point = operating["name"] if threshold is None else f"{operating['name']}, threshold overridden"
        self.temperature = float(operating.get("temperature", 1.0))
        self.positive_index: int | None = operating.get("positive_index")
        if self.positive_index is None and len(self.class_names) == 2:
            positive = config.get("positive_class")
            self.positive_index = self.class_names.index(positive) if positive in self.class_names else 1
        self.threshold = threshold if threshold is not None else operating.get("threshold", 0.5 if self.positive_index is not None else None)
        self.tta = bool(config.get("tta", False))  # flip test-time augmentation by default (see predict_images)

    # -------------------------------------------------------------- the first network (one-network models)
    @property
    def model(self) -> torch.nn.Module:
        return self.networks[0].model

    @property
    def spec(self) -> models.BackboneSpec:
        return self.networks[0].spec

    @property
    def image_size(self) -> int:
        return self.networks[0].image_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.networks[0].mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.networks[0].std

    @property
    def ood(self) -> OodModel | None:
        return self.networks[0].ood if len(self.networks) == 1 else None

    def to_tensor(self, image: XrayImage) -> torch.Tensor:
        return self.networks[0].to_tensor(image)

    def cam_methods(self) -> list[str]:
        """The heat-map methods this Predictor can give: all with torch installed, else what the graphs give."""
        if self.backend == TORCH or backends.installed(TORCH):
            return list(explain.CAM_METHODS)
        offered = [set(network.engine.cam_methods()) for network in self.networks]
        return [method for method in explain.CAM_METHODS if all(method in methods for methods in offered)]

    @property
    def one_pass_cam(self) -> bool:
        """Grad-CAM comes from the forward pass (CAM) for every network of this model."""
        return all(network.engine.one_pass_cam for network in self.networks)

    @property
    def has_ood(self) -> bool:
        return all(network.ood is not None for network in self.networks)

    # -------------------------------------------------------------- description
    @property
    def positive_class(self) -> str | None:
        return None if self.positive_index is None else self.class_names[self.positive_index]

    def describe(self) -> dict[str, Any]:
        """Which model answers and what it was validated on (always shown to the user)."""
        config, summary = self.run.config, self.run.read_json(runs.SUMMARY_FILE, {}) or {}
        backbones = [network.backbone for network in self.networks]
        return {
            "model": self.run.id, "path": str(self.run.path), "backbone": " + ".join(backbones),
            "members": len(self.networks), "backend": self.backend, "backend_reason": self.backend_reason,
            "classes": self.class_names, "threshold": self.threshold, "temperature": self.temperature,
            "operating_point": self.operating_point, "tta": self.tta,
            "weights_source": config.get("weights_source"), "split": config.get("split"),
            "counts": config.get("counts"), "validation": summary.get("val"), "data": config.get("train", {}).get("data"),
            "intended_use": None if self.intended is None else self.intended.to_json(),
            "ood_check": self._ood_check(),
        }

    def _ood_check(self) -> str:
        """What the out-of-domain flag rests on, in words: the distance, and what the discriminator was shown."""
        if not self.has_ood:
            return "none (this model flags nothing as out of domain)"
        exposures = [(network.run.read_json(runs.SUMMARY_FILE, {}) or {}).get("ood_exposure")
                     for network in self.networks if network.ood.discriminator is not None]
        if not exposures:
            return "distance to the training images"
        shown = exposures[0] or {}
        return (f"distance to the training images, and a discriminator shown {shown.get('n_outliers', '?')} films "
                f"from elsewhere ({shown.get('outliers', 'unnamed')})")

    # -------------------------------------------------------------- tensors
    def _networks_for(self, cam: str | None) -> list[Network]:
        """This Predictor's networks, or (a CAM method the exported graphs cannot give) the same on torch."""
        if cam is None or all(cam in network.engine.cam_methods() for network in self.networks):
            return self.networks
        explain.check_method(cam)
        if not backends.installed(TORCH):
            raise BackendUnavailable(f"{explain.METHOD_LABELS[cam]} heat maps need the full install (torch); "
                                     f"this install offers {', '.join(self.cam_methods()) or 'none'}")
        if self._torch_networks is None:
            self._torch_networks = load_networks(self.run, TORCH, self.device)
        return self._torch_networks

    def _forward(self, images: Sequence[XrayImage], tta: bool, cam: str | None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str | None, str]:
        """Averaged logits, out-of-domain ratios and CAMs of every network over one batch of images, the CAM
        method used and the backend that answered."""
        networks = self._networks_for(cam)
        logits, ratios, heatmaps, methods = [], [], [], []
        for network in networks:
            batch = np.stack([network.prepare(image) for image in images])
            output = network.forward(batch, tta, cam, self.positive_index)
            logits.append(output.logits)
            ratios.append(network.ood_ratio(output.features))
            if output.heatmaps is not None:
                heatmaps.append(_resize_heatmaps(output.heatmaps, heatmaps[0].shape[-2:] if heatmaps else None))
                methods += [output.cam_method] if output.cam_method not in methods else []
        ratio = None if any(r is None for r in ratios) else np.mean(ratios, axis=0)
        return (np.mean(logits, axis=0), ratio, np.mean(heatmaps, axis=0) if heatmaps else None,
                " + ".join(methods) or None, networks[0].engine.name)

    # -------------------------------------------------------------- public
    def predict_images(self, images: Sequence[XrayImage], names: Sequence[str] | None = None, *,
                       cam: str | None = None, tta: bool | None = None, batch_size: int = 16) -> list[Prediction]:
        """Score images in batches. ``tta`` None: the model directory's own choice (config "tta"), so a
        model whose operating point was fitted on flip-averaged scores is always scored that way."""
        tta = self.tta if tta is None else tta
        names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            logits, ood_ratios, heatmaps, method, answered = self._forward(chunk, tta, cam)
            probs = softmax(logits, self.temperature)
            ood_scores = ood_ratios if ood_ratios is not None else [None] * len(chunk)
            heatmaps = heatmaps if heatmaps is not None else [None] * len(chunk)
            for image, name, p, raw, score, heat in zip(chunk, names[start:], probs, logits, ood_scores, heatmaps):
                prediction = self._prediction(image, name, p, score, heat)
                prediction.logits = [float(value) for value in raw]
                prediction.backend, prediction.cam_method = answered, None if heat is None else method
                out.append(prediction)
        return out

    def predict_sources(self, sources: Iterable[tuple[str, Source]], *,
                        skip: Callable[[str, Mapping[str, Any]], bool] | None = None,
                        identity: access.Identity | None = None, **options: Any) -> Iterator[Prediction]:
        """Read and score files a batch at a time, in order; an unreadable file becomes an error Prediction.

        ``skip(name, metadata)`` true leaves a readable image out unscored (intended_use.SkipNonFrontal).
        With ``identity`` (the app passes who is signed in) scoring needs the reader role and every batch
        writes one audit line: model, operating point, counts; never a file name or anything read from
        the files. Without it (the library, evaluation) nothing is checked or logged.
        """
        if identity is not None:
            access.require(identity, access.SCORE, "score", model=self.audit_model, operating_point=self.operating_point)
            releases.require_released(self.run.path, identity)  # a reader scores with released models only
        batch_size = options.get("batch_size", 16)
        pending: list[tuple[str, XrayImage | XrayReadError]] = []
        for name, source in sources:
            try:
                image = read_xray(source, name=name, max_side=READ_MAX_SIDE, intended=self.intended)
            except XrayReadError as error:
                pending.append((name, error))
            else:
                if skip is None or not skip(name, image.metadata):
                    pending.append((name, image))
            if len(pending) >= batch_size:
                yield from self._flush(pending, options, identity)
                pending = []
        if pending:
            yield from self._flush(pending, options, identity)

    def _flush(self, pending: list[tuple[str, XrayImage | XrayReadError]], options: dict[str, Any],
               identity: access.Identity | None = None) -> list[Prediction]:
        readable = [(n, item) for n, item in pending if isinstance(item, XrayImage)]
        scored = iter(self.predict_images([i for _, i in readable], [n for n, _ in readable], **options)) if readable else iter(())
        predictions = [next(scored) if isinstance(item, XrayImage) else Prediction(name=name, error=str(item), error_kind=item.kind)
                       for name, item in pending]
        if identity is not None:
            audit.record("score", identity, model=self.audit_model, operating_point=self.operating_point,
                         threshold=self.threshold, counts=score_counts(predictions))
        return predictions

    @property
    def audit_model(self) -> dict[str, Any]:
        """Name, version and weights sha256 of this model, as audit lines name it (hashed once)."""
        if not hasattr(self, "_audit_model"):
            self._audit_model = audit.model_info(self.run.path)
        return self._audit_model

    def predict_files(self, paths: Iterable[str | Path], **options: Any) -> Iterator[Prediction]:
        return self.predict_sources(((str(p), Path(p)) for p in paths), **options)

    # -------------------------------------------------------------- helpers
    def _prediction(self, image: XrayImage, name: str, probs: np.ndarray, ood_score: float | None,
                    heatmap: np.ndarray | None) -> Prediction:
        probabilities = {c: float(p) for c, p in zip(self.class_names, probs)}
        warnings = list(image.metadata.get("warnings", []))
        if self.positive_index is not None:
            positive_probability = float(probs[self.positive_index])
            negative = [c for c in self.class_names if c != self.positive_class][0]
            label = self.positive_class if operating.is_positive(positive_probability, self.threshold) else negative
        else:
            positive_probability, label = None, self.class_names[int(np.argmax(probs))]
        out_of_domain = None if ood_score is None else bool(ood_score > 1.0)
        reason = triage.not_assessed_reason(warnings, image.metadata.get("dicom_guards", {}), self.intended)
        if out_of_domain:
            warnings.append(OUT_OF_DOMAIN_WARNING)
        guards = [] if self.intended is None else intended_use.guard_warnings(image.metadata.get("dicom_guards", {}),
                                                                             self.intended)
        return Prediction(
            name=name, probabilities=probabilities, label=None if reason else label, positive_class=self.positive_class,
            positive_probability=positive_probability, threshold=self.threshold, operating_point=self.operating_point,
            out_of_domain=out_of_domain, ood_score=None if ood_score is None else float(ood_score), guards=guards,
            not_assessed=reason, warnings=warnings, metadata=image.metadata, image=image.pixels, heatmap=heatmap,
            overlay=None if heatmap is None else explain.overlay(decode.fit_within(image.pixels, OVERLAY_MAX_SIDE), heatmap),
        )


def _resize_heatmaps(heatmaps: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(N, h, w) heat maps at ``size`` (bilinear), unchanged when ``size`` is None or already theirs."""
    if size is None or tuple(heatmaps.shape[-2:]) == tuple(size):
        return heatmaps
    return np.stack([explain.resize_bilinear(heat, size) for heat in heatmaps])


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """metrics.softmax without scipy (a serving install has none): softmax of ``logits / temperature``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    exponentials = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def operating_point_of(run: runs.Run, name: str | None = None) -> dict[str, Any]:
    """The named (default: active) operating point of a model directory; a run without one gets 'internal'."""
    try:
        return operating.get(run.path, name)
    except ValueError:
        if name is not None:
            raise
        return {**run.operating_point, "name": operating.INTERNAL}


def score_counts(predictions: Sequence[Prediction]) -> dict[str, int]:
    """What an audit line keeps of a batch: how many images, unreadable, called positive, out of domain."""
    scored = [p for p in predictions if p.ok]
    return {"images": len(predictions), "unreadable": len(predictions) - len(scored),
            "positive": sum(p.positive_class is not None and p.label == p.positive_class for p in scored),
            "out_of_domain": sum(bool(p.out_of_domain) for p in scored)}


def bytes_source(data: bytes) -> BinaryIO:
    """Uploaded files stay in memory: wrap their bytes, never write them to disk."""
    return _stdio.BytesIO(data)
