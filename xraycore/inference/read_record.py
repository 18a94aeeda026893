"""A reader's read of a scored film, recorded: the one call Diagnose, the Worklist and ``reads add`` make.

Here rather than in :mod:`xraycore.clinical.site_reads` because only inference knows a Prediction (or the compact
DisplayResult a page keeps) and the model's provenance. The film is what the Predictor fed the network: its grey
pixels at the load size (``input_pixels``) and their sha256 (``film_sha256``), so a read meets the scored-film
row of the same picture; those pixels are what the store keeps while the setting is on. The file name never
leaves here.
"""
from __future__ import annotations

from typing import Any

from xraycore.access import policy as access
from xraycore.clinical import site_reads
from xraycore.clinical.site_store import site_name
from xraycore.inference.display import DisplayResult
from xraycore.inference.prediction import Prediction
from xraycore.inference.provenance import ModelProvenance
from xraycore.store.database import Store


def prediction_facts(result: Prediction | DisplayResult, provenance: ModelProvenance,
                     call: str | None = None) -> dict[str, Any]:
    """What a read keeps of the model's answer: model, version, weights, operating point, probability and the call
    the reader was shown (``call``: a page's own threshold may differ from the point's; default the Prediction's)."""
    call = call if call is not None else getattr(result, "label", None)
    probability = result.positive_probability
    if probability is None and result.probabilities and call in result.probabilities:
        probability = result.probabilities[call]
    return {"model_name": provenance.name, "model_version": provenance.version,
            "weights_sha256": provenance.weights_sha256, "operating_point": result.operating_point,
            "probability": probability, "ai_call": call}


def record_prediction_read(store: Store, result: Prediction | DisplayResult, provenance: ModelProvenance, read: str,
                           identity: access.Identity | None, *, classes: list[str], call: str | None = None,
                           reference: str | None = None, heatmap_on_region: bool | None = None) -> int:
    """Record ``identity``'s ``read`` of a scored film (``call``: what the reader was shown, see
    :func:`prediction_facts`). Returns the read's number."""
    if not result.ok:
        raise ValueError("A film that could not be read cannot be given a read.")
    if result.input_pixels is None:
        raise ValueError("This film was scored without its network input, so a read of it cannot be recorded.")
    return site_reads.record_read(store, prediction_facts(result, provenance, call), read, identity,
                                  classes=classes, film_pixels=result.input_pixels, reference=reference,
                                  heatmap_on_region=heatmap_on_region, site=site_name())
