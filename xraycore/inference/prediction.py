"""What scoring one film gives: the Prediction (the result type the app, the CLI and the reading room show),
how a film to score may be handed in (a Source), and what an audit line keeps of a batch.

Apart from the Predictor so that code which only shows, files or counts results (pages, dicom_out, the
worklist, the audit) needs neither the networks nor their backends. Plain numpy: no torch.
"""
from __future__ import annotations

import io as _stdio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

Source = bytes | str | Path | BinaryIO
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
    input_pixels: np.ndarray | None = None  # grey uint8 at the network's load size: what site learning may keep
    film_sha256: str | None = None  # common.hashing.sha256_of_pixels(input_pixels): the film's key in the store
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


def score_counts(predictions: Sequence[Prediction]) -> dict[str, int]:
    """What an audit line keeps of a batch: how many images, unreadable, called positive, out of domain."""
    scored = [p for p in predictions if p.ok]
    return {"images": len(predictions), "unreadable": len(predictions) - len(scored),
            "positive": sum(p.positive_class is not None and p.label == p.positive_class for p in scored),
            "out_of_domain": sum(bool(p.out_of_domain) for p in scored)}


def bytes_source(data: bytes) -> BinaryIO:
    """Uploaded files stay in memory: wrap their bytes, never write them to disk."""
    return _stdio.BytesIO(data)
