"""A reader's read of a Prediction, recorded: the one call Diagnose, the Worklist and ``reads add`` make.

Here rather than in :mod:`xraycore.clinical.site_reads` because only inference knows a Prediction, the
Predictor's classes and input size, and how a film becomes the network's grey pixels
(:func:`xraycore.data.decode.resize_uint8`, the same resize scoring uses). The film's pixels at that size
give its sha256 and, while the setting is on, are what the store keeps; the file name never leaves here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xraycore.access import policy as access
from xraycore.clinical import site_reads
from xraycore.clinical.site_store import site_name
from xraycore.data.decode import resize_uint8
from xraycore.inference.prediction import Prediction
from xraycore.inference.provenance import ModelProvenance
from xraycore.io.image import to_uint8
from xraycore.store.database import Store


def film_pixels(image: np.ndarray, size: int) -> np.ndarray:
    """A film as read (grey floats in [0, 1], or uint8) → grey uint8 at the network input size."""
    grey = image if image.dtype == np.uint8 else to_uint8(image)
    return resize_uint8(np.ascontiguousarray(grey), size)


def prediction_facts(prediction: Prediction, provenance: ModelProvenance) -> dict[str, Any]:
    """What a read keeps of the model's answer: model, version, weights, operating point, probability, call."""
    probability = prediction.positive_probability
    if probability is None and prediction.probabilities and prediction.label in prediction.probabilities:
        probability = prediction.probabilities[prediction.label]
    return {"model_name": provenance.name, "model_version": provenance.version,
            "weights_sha256": provenance.weights_sha256, "operating_point": prediction.operating_point,
            "probability": probability, "ai_call": prediction.label}


def record_prediction_read(store: Store, prediction: Prediction, provenance: ModelProvenance, read: str,
                           identity: access.Identity | None, *, classes: list[str], image_size: int,
                           reference: str | None = None, heatmap_on_region: bool | None = None,
                           image: np.ndarray | None = None) -> int:
    """Record ``identity``'s ``read`` of a scored film (``image``: the film's grey pixels when the Prediction
    no longer holds them, as a page's compact result does not). Returns the read's number."""
    if not prediction.ok:
        raise ValueError("A film that could not be read cannot be given a read.")
    pixels = image if image is not None else prediction.image
    if pixels is None:
        raise ValueError("The film's pixels are needed to record a read of it.")
    return site_reads.record_read(store, prediction_facts(prediction, provenance), read, identity,
                                  classes=classes, film_pixels=film_pixels(pixels, image_size), reference=reference,
                                  heatmap_on_region=heatmap_on_region, site=site_name())
