"""A scored film as a reader sees it: a Prediction shrunk for a session, probabilities in words, the table.

A :class:`Prediction` holds the full-resolution image, a ready-made overlay and the file's metadata; a
browser session keeping fifty of those would not stay small, and a PDF or DICOM result built from them
could carry what it must not. :func:`for_display` keeps the answer, the warnings and pictures of at most
512 px, nothing read from inside the file. The app's pages, the PACS worklist, the PDF report and the DICOM
results all work from this one shape, so it lives in the library (no Streamlit here), with the summary
table every one of them prints.
"""
from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from xraycore.clinical import operating_points as operating
from xraycore.clinical import triage
from xraycore.explain.lung_attention import LungAttention, lung_attention
from xraycore.inference.predictor import Prediction

DISPLAY_MAX_SIDE = 512  # what a session keeps per image: enough for the screen, bounded for 50 scans


def downscale(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """A grey float [0, 1] (or uint8) image as uint8, its long side at most ``max_side``."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = np.uint8(np.round(255 * np.clip(pixels.astype(np.float32), 0.0, 1.0)))
    picture = Image.fromarray(pixels)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(picture)


@dataclass
class DisplayResult:
    """One scored image as a session keeps it: the answer, the warnings and small pictures only."""

    name: str
    class_names: list[str] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    positive_class: str | None = None
    positive_probability: float | None = None
    guards: list[str] = field(default_factory=list)  # outside the intended population: shown before the answer
    warnings: list[str] = field(default_factory=list)
    out_of_domain: bool | None = None
    not_assessed: str | None = None  # why there is no call (not a chest X-ray): see triage
    image: np.ndarray | None = None  # uint8 grey, <= DISPLAY_MAX_SIDE
    heatmap: np.ndarray | None = None  # float16 [0, 1], <= DISPLAY_MAX_SIDE
    cam_method: str | None = None  # what made the heat map (explain.METHOD_LABELS says it in words)
    backend: str | None = None  # which inference backend answered
    error: str | None = None
    is_dicom: bool = False  # results can be filed back into its study (dicom_out)
    operating_point: str | None = None  # the point (or site profile) that answered
    logits: list[float] | None = None  # before the temperature (a read or a monitoring row keeps them)
    ood_score: float | None = None
    film_sha256: str | None = None  # the film's key in the store (Prediction.film_sha256)
    input_pixels: np.ndarray | None = None  # grey uint8 at the network's load size: kept only for site learning

    @property
    def ok(self) -> bool:
        return self.error is None

    @functools.cached_property
    def lung_attention(self) -> LungAttention | None:
        """The heat map's share on the lung fields, in words (None without a heat map): estimated once per result,
        not on every rerun of the page (the estimate takes tens of milliseconds a film)."""
        return lung_attention(self.image, self.heatmap)

    @property
    def normal_class(self) -> str | None:
        """The multi-class label set's 'normal' class (NORMAL / Normal), if it has one."""
        if len(self.class_names) <= 2:
            return None
        return next((name for name in self.class_names if name.strip().lower() == "normal"), None)

    @property
    def not_normal_probability(self) -> float | None:
        """Multi-class models with a normal class (Kermany NORMAL/BACTERIAL/VIRAL, COVID-QU's four):
        the probability of any finding, the number a reader asks first."""
        normal = self.normal_class
        return None if normal is None or not self.ok else 1.0 - self.probabilities[normal]

    def call(self, threshold: float | None) -> str | None:
        """The class called at ``threshold``: positive when its probability reaches it (binary
        models); the most probable class for multi-class models (no threshold applies). None: failed, or not
        assessed (:func:`triage.call_text` says which in words)."""
        if not self.ok or self.not_assessed:
            return None
        if self.positive_class is None or threshold is None or self.positive_probability is None:
            return max(self.probabilities, key=self.probabilities.get)
        if operating.is_positive(self.positive_probability, threshold):
            return self.positive_class
        return next(name for name in self.class_names if name != self.positive_class)


def for_display(prediction: Prediction, max_side: int = DISPLAY_MAX_SIDE) -> DisplayResult:
    """Shrink a Prediction: drop the full-resolution image, the ready-made overlay and the metadata."""
    if not prediction.ok:
        return DisplayResult(name=prediction.name, error=prediction.error)
    return DisplayResult(
        name=prediction.name, class_names=list(prediction.probabilities),
        probabilities=dict(prediction.probabilities), positive_class=prediction.positive_class,
        positive_probability=prediction.positive_probability, guards=list(prediction.guards),
        warnings=list(prediction.warnings),
        out_of_domain=prediction.out_of_domain, not_assessed=prediction.not_assessed, is_dicom=prediction.metadata.get("format") == "dicom",
        image=None if prediction.image is None else downscale(prediction.image, max_side),
        heatmap=None if prediction.heatmap is None else _downscale_heatmap(prediction.heatmap, max_side),
        cam_method=prediction.cam_method, backend=prediction.backend, operating_point=prediction.operating_point,
        logits=prediction.logits, ood_score=prediction.ood_score, film_sha256=prediction.film_sha256,
        input_pixels=prediction.input_pixels,
    )


def _downscale_heatmap(heatmap: np.ndarray, max_side: int) -> np.ndarray:
    """A [0, 1] heat map as float16, its long side at most ``max_side`` (bilinear: it stays smooth)."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if max(heat.shape) > max_side:
        scale = max_side / max(heat.shape)
        size = (max(1, round(heat.shape[1] * scale)), max(1, round(heat.shape[0] * scale)))
        heat = np.asarray(Image.fromarray(heat).resize(size, Image.Resampling.BILINEAR))
    return heat.astype(np.float16)


def format_probability(probability: float | None) -> str:
    """A probability as a percentage with at least one significant digit: "< 0.1%", "12.3%", "> 99.9%"."""
    if probability is None:
        return "n/a"
    if probability < 0.0005:  # would print as 0.0%
        return "< 0.1%"
    if probability >= 0.9995:  # would print as 100.0%
        return "> 99.9%"
    return f"{probability:.1%}"



def summary_rows(results: Iterable[DisplayResult], threshold: float | None) -> list[dict]:
    """One row per image for the table and its CSV: the name as uploaded, a flag (failed, not assessed, out of
    domain), the call in words (:func:`triage.call_text`: never None), the probability a reader asks first as text
    (:func:`format_probability` of :func:`triage_score`, marked when out of domain), the threshold (4 decimals), the
    probabilities, warnings or the read error. Nothing read from inside the file (no DICOM tags)."""
    rows = []
    for result in results:
        row: dict = {"file": result.name, "flag": triage.flag(result), "call": triage.call_text(result, threshold),
                     "probability": triage.probability_text(result, format_probability(triage.triage_score(result))),
                     "threshold": round(threshold, 4) if result.positive_class and threshold is not None else None}
        assessed = not result.not_assessed  # a film with no call shows no probability either, in any column
        if result.not_normal_probability is not None:
            row[f"P(not {result.normal_class})"] = round(result.not_normal_probability, 4) if assessed else None
        for name in result.class_names:
            row[f"P({name})"] = round(result.probabilities[name], 4) if assessed else None
        row["warnings"] = "; ".join([*result.guards, *result.warnings])
        row["error"] = result.error or ""
        rows.append(row)
    return rows


def summary_csv(results: Sequence[DisplayResult], threshold: float | None, *, model: str, model_version: str,
                operating_point: str | None, date: str) -> str:
    """The summary as CSV: :func:`summary_rows` (numbers, not the text probability) plus out of domain (yes, no,
    blank when failed or not checked), the operating point, the model's name and version and the date (ISO)."""
    rows = []
    for result, row in zip(results, summary_rows(results, threshold)):
        row.pop("probability")
        checked = result.ok and result.out_of_domain is not None
        rows.append({**row, "out_of_domain": ("yes" if result.out_of_domain else "no") if checked else "",
                     "operating_point": operating_point or "", "model": model, "model_version": model_version,
                     "date": date})
    return rows_to_csv(rows)


def rows_to_csv(rows: Sequence[dict]) -> str:
    """CSV text with the union of the rows' columns (multi-class and failed rows differ)."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
