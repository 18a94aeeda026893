"""The Predictor: a model directory (a run or ``models/default``) → a Prediction per image.

Same path as training, run forwards: read → grey uint8 at the run's load size → network input →
logits → temperature → probabilities → the call at the saved operating point; optionally a
Grad-CAM overlay, flip test-time augmentation and an out-of-domain score.

Two backends run the networks (see :mod:`xraycore.inference.backends`): torch (``torch_runtime``) and ONNX
Runtime (``onnx_runtime``), chosen automatically unless asked (:func:`networks.choose_backend`). The model
directory is opened by :mod:`model_directory`, its networks loaded by :mod:`networks`, and the result type is
:mod:`prediction`'s. Preprocessing, temperature, ensembling, the out-of-domain ratio and the call are numpy,
so both backends answer alike. Importing it imports no torch: a serving install has none.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from xraycore.inference.backends import choice as backends
from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.explain import cam as explain
from xraycore.io import intended_use
from xraycore.clinical import operating_points as operating
from xraycore.clinical import releases
from xraycore.clinical import site_profiles
from xraycore.runs import directory as runs
from xraycore.common.hashing import sha256_of_pixels
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.clinical import triage
from xraycore.data import decode
from xraycore.inference.backends.choice import ONNXRUNTIME, TORCH, BackendUnavailable
from xraycore.inference.model_directory import network_runs, open_model
from xraycore.inference.networks import Network, choose_backend, load_networks
from xraycore.inference.prediction import OUT_OF_DOMAIN_WARNING, Prediction, Source, score_counts
from xraycore.io.image import XrayImage, XrayReadError
from xraycore.io.reader import read_xray
from xraycore.metrics.decision import is_positive, softmax
from xraycore.ood.distance import OodModel

if TYPE_CHECKING:
    import torch

    from xraycore import models

READ_MAX_SIDE = 1024  # JPEGs decode at >= this size: ample for the network input and a screen-sized overlay
OVERLAY_MAX_SIDE = 1024  # overlays are for screens: blending a 3000 px radiograph costs more than the network


class Predictor:
    """Loads a model directory (one network or an ensemble) once; scores images in batches.

    An ensemble averages its members' calibrated logits, their CAMs (at the first member's resolution) and
    their out-of-domain distance ratios; the model directory's operating point then applies as for one network.
    """

    def __init__(self, model_dir: str | Path | runs.Run, device: str | None = None, threshold: float | None = None,
                 operating_point: str | None = None, backend: str | None = None) -> None:
        self.run = open_model(model_dir.path if isinstance(model_dir, runs.Run) else model_dir)
        self.device = device
        operating = operating_point_of(self.run, operating_point)
        # a site profile answers with its adapted weights (clinical.site_profiles), on either backend
        self.site_profile: str | None = operating["profile"] if site_profiles.is_profile_point(operating) else None
        self.backend, self.backend_reason = choose_backend(backend, device, [m.path for m, _ in network_runs(self.run)])
        try:
            self.networks = load_networks(self.run, self.backend, device, self.site_profile)
        except ModelDirectoryError as error:  # a graph of older weights (onnx_runtime.StaleGraph): torch answers
            if self.backend != ONNXRUNTIME or backends.check_request(backend) != backends.AUTO or not backends.installed(TORCH):
                raise
            self.backend, self.backend_reason = TORCH, backends.fell_back(str(error))
            self.networks = load_networks(self.run, TORCH, device, self.site_profile)
        self._torch_networks: list[Network] | None = self.networks if self.backend == TORCH else None
        self.intended = intended_use.load(self.run.path)  # None: no intended_use.json, no DICOM checks
        config = self.run.config
        self.class_names: list[str] = list(config.get("class_names") or self.networks[0].class_names)
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
            "operating_point": self.operating_point, "site_profile": self.site_profile, "tta": self.tta,
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
            self._torch_networks = load_networks(self.run, TORCH, self.device, self.site_profile)
        return self._torch_networks

    def _forward(self, images: Sequence[XrayImage], grey_inputs: Sequence[np.ndarray], tta: bool, cam: str | None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str | None, str]:
        """Averaged logits, out-of-domain ratios and CAMs of every network over one batch of images (``grey_inputs``:
        the first network's :meth:`Network.load_grey` of each), the CAM method used and the backend that answered."""
        networks = self._networks_for(cam)
        logits, ratios, heatmaps, methods = [], [], [], []
        for network in networks:
            greys = grey_inputs if network.load_size == networks[0].load_size else [None] * len(images)
            batch = np.stack([network.prepare(image, grey) for image, grey in zip(images, greys)])
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
            greys = [self.networks[0].load_grey(image) for image in chunk]
            logits, ood_ratios, heatmaps, method, answered = self._forward(chunk, greys, tta, cam)
            probs = softmax(logits, self.temperature)
            ood_scores = ood_ratios if ood_ratios is not None else [None] * len(chunk)
            heatmaps = heatmaps if heatmaps is not None else [None] * len(chunk)
            for image, grey, name, p, raw, score, heat in zip(chunk, greys, names[start:], probs, logits, ood_scores,
                                                               heatmaps):
                prediction = self._prediction(image, name, p, score, heat)
                prediction.logits = [float(value) for value in raw]
                prediction.input_pixels, prediction.film_sha256 = grey, sha256_of_pixels(grey)
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
            label = self.positive_class if is_positive(positive_probability, self.threshold) else negative
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


def operating_point_of(run: runs.Run, name: str | None = None) -> dict[str, Any]:
    """The named (default: active) operating point of a model directory; a run without one gets 'internal'."""
    try:
        return operating.get(run.path, name)
    except ValueError:
        if name is not None:
            raise
        return {**run.operating_point, "name": operating.INTERNAL}
