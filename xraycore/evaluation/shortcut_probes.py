"""The shortcut report of a model on a labelled folder: heat maps and occlusion probes, film by film.

Apart from :mod:`shortcuts` (the figures, limits and records, numpy only) because this is the part that runs
the network: one scoring pass with Grad-CAM per film, then the same film with the lung fields, the outer band
or the four corners blanked (filled with the body's median grey), scored without heat maps. The lung fields
are estimated on the film as the network receives it (:func:`explain.lung_fields.estimate_lung_fields` on the
load-size grey), so the mask, the heat map and the blanked regions share one frame.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from xraycore.clinical import operating_points as operating
from xraycore.common.hashing import sha256_of_content
from xraycore.common.timestamps import utc_timestamp
from xraycore.data import decode
from xraycore.evaluation import shortcuts
from xraycore.evaluation.external import Labelled, folder_items
from xraycore.explain.lung_fields import estimate_lung_fields
from xraycore.inference.prediction import Prediction
from xraycore.inference.predictor import Predictor
from xraycore.io.image import XrayImage
from xraycore.metrics.decision import is_positive
from xraycore.metrics.regions import body_grey

CAM_METHOD = "gradcam"  # one forward pass (CAM) where the network allows it, as Diagnose shows


def blanked(grey: np.ndarray, region: np.ndarray) -> XrayImage:
    """The film (load-size uint8 grey) with ``region`` filled with the body's median grey, as an image to score."""
    out = grey.copy()
    out[region] = int(body_grey(grey))
    return XrayImage(out.astype(np.float32) / 255.0, {"format": "probe"})


def _to_frame(mask: np.ndarray, margin: float, shape: tuple[int, int]) -> np.ndarray:
    """A load-size mask in the heat map's frame: the network's margin crop, then resized to ``shape``."""
    cropped = decode.crop_margin(np.uint8(mask) * 255, margin)
    return np.asarray(Image.fromarray(cropped).resize(shape[::-1], Image.Resampling.NEAREST)) > 127


def _probe_chunk(predictor: Predictor, scored: list[tuple[Prediction, int]]) -> list[dict[str, float]]:
    """Heat-map figures and the three occlusion probes for a batch of scored films (label 1: pneumonia)."""
    margin = predictor.networks[0].crop_margin
    films, probes, owners = [], [], []
    for index, (prediction, label) in enumerate(scored):
        grey = prediction.input_pixels
        fields = estimate_lung_fields(grey)
        heat = prediction.heatmap
        lungs = None if not fields.found or heat is None else _to_frame(fields.mask, margin, heat.shape)
        film = {"label": float(label), **(shortcuts.heat_measures(heat, lungs) if heat is not None else {}),
                "p": prediction.positive_probability, "call": float(prediction.label == prediction.positive_class),
                "lungs_found": float(fields.found)}
        films.append(film)
        regions = [("band", shortcuts.band_mask(grey.shape)), ("corners", shortcuts.corner_mask(grey.shape))]
        if label == 1 and fields.found:
            regions.append(("lungs", fields.mask))
        for name, region in regions:
            probes.append(blanked(grey, region))
            owners.append((index, name))
    for (index, name), result in zip(owners, predictor.predict_images(probes, cam=None)):
        films[index][f"p_{name}"] = result.positive_probability
        films[index][f"call_{name}"] = float(is_positive(result.positive_probability, predictor.threshold))
    return films


def probe_films(predictor: Predictor, items: list[Labelled], positive: str, batch_size: int = 16,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[dict[str, float]], int, list[str]]:
    """Every film's figures and probes: (films, how many were unreadable or not assessed, the content digests
    of the films scored)."""
    if predictor.positive_index is None or predictor.class_names[predictor.positive_index] != positive:
        raise ValueError(f"the shortcut report needs a two-class model whose positive class is {positive}")
    films: list[dict[str, float]] = []
    digests: list[str] = []
    not_scored = 0
    pending: list[tuple[Prediction, int]] = []
    scored = predictor.predict_sources(((name, source) for name, source, _ in items), cam=CAM_METHOD,
                                       batch_size=batch_size)
    for (name, source, label), prediction in zip(items, scored):
        if not prediction.ok or prediction.not_assessed or prediction.positive_probability is None:
            not_scored += 1
            continue
        digests.append(sha256_of_content(source))
        pending.append((prediction, int(label == positive)))
        if len(pending) >= batch_size:
            films += _probe_chunk(predictor, pending)
            pending = []
            if progress:
                progress(len(films), len(items))
    if pending:
        films += _probe_chunk(predictor, pending)
    return films, not_scored, digests


def shortcut_report(model_dir: str | Path, data_dir: str | Path, *, positive: str | None = None,
                    backend: str | None = None, predictor: Predictor | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The shortcut report of a model on a labelled folder (CLASS/* images): figures with 95% CIs, the verdict
    at each limit, how many films had no lung fields, and how long it took. Nothing is written."""
    started = time.perf_counter()
    predictor = predictor or Predictor(model_dir, backend=backend)
    positive = positive or predictor.positive_class or "PNEUMONIA"
    items = folder_items(data_dir)
    films, not_scored, digests = probe_films(predictor, items, positive, progress=progress)
    if not films:
        raise ValueError("none of the images could be scored")
    figures = shortcuts.summarise(films)
    return {
        "model": predictor.run.id, "data": Path(data_dir).name, "data_fingerprint": operating.fingerprint(digests),
        "date": utc_timestamp(), "n": len(films), "n_positive": int(sum(f["label"] for f in films)),
        "not_scored": not_scored, "lungs_not_found": int(sum(1 - f["lungs_found"] for f in films)),
        "empty_heatmaps": int(sum(np.isnan(f.get("band_mass", np.nan)) for f in films)),
        "cam_method": CAM_METHOD, "band_fraction": shortcuts.BAND_FRACTION,
        "corner_fraction": shortcuts.CORNER_FRACTION, "operating_point": predictor.operating_point,
        "threshold": predictor.threshold, "backend": predictor.backend, "figures": figures,
        "passed": shortcuts.verdict(figures), "seconds": round(time.perf_counter() - started, 1),
    }
