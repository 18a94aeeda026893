"""Which films get a call, and the order a batch is read in: one decision for Diagnose, the CLI, the PDF and the
Worklist.

A colour holiday photo used to get a red "PNEUMONIA 93.2%" and sort second. Now:

* a film that is not a chest X-ray (a colour photograph, or a DICOM whose Body Part Examined is not the chest)
  gets **no call**: "not assessed: not a chest X-ray" (:func:`not_assessed_reason`, applied by the Predictor);
* a batch sorts in groups: chest films in the model's domain (most probable first), then those outside it (their
  probability marked as not reliable), then the films not assessed, then the files that could not be read.

Pure Python over the results' attributes (a :class:`~xraycore.inference.prediction.Prediction` or a
:class:`~xraycore.inference.display.DisplayResult`): no Streamlit, no torch.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from xraycore.io.image import COLOUR_PHOTO_WARNING

NOT_CHEST = "not a chest X-ray"
NOT_ASSESSED = "not assessed"
NOT_SCORED = "not scored (the file could not be read)"  # what a failed file's call says, never a bare None
UNRELIABLE_NOTE = "not reliable for this image"  # what an out-of-domain image's probability is labelled
IN_DOMAIN, OUT_OF_DOMAIN, NOT_ASSESSED_GROUP, FAILED = range(4)  # triage groups, read in this order


def not_assessed_reason(warnings: Sequence[str], dicom_guards: Mapping[str, bool], intended: Any = None) -> str | None:
    """Why a readable film gets no call: it is not a chest X-ray. A colour photograph (io's warning), or a DICOM
    whose Body Part Examined is not one the model's intended use names (the guard that warns "its answer does not
    apply"; a model without ``intended_use.json`` skips the DICOM checks, as it always has). None: assessed."""
    if COLOUR_PHOTO_WARNING in warnings:
        return NOT_CHEST
    if dicom_guards.get("non_chest") and intended is not None and intended.body_parts:
        return NOT_CHEST
    return None


def not_assessed_text(reason: str) -> str:
    return f"{NOT_ASSESSED}: {reason}"


def group(result: Any) -> int:
    """The triage group of a result: in domain, out of domain, not assessed, failed."""
    if not result.ok:
        return FAILED
    if getattr(result, "not_assessed", None):
        return NOT_ASSESSED_GROUP
    return OUT_OF_DOMAIN if result.out_of_domain else IN_DOMAIN


def triage_score(result: Any) -> float | None:
    """What a worklist sorts on: P(positive) (binary), P(not normal), else the top probability; None: failed or
    not assessed (no number is offered for a film that is not a chest X-ray)."""
    if group(result) in (FAILED, NOT_ASSESSED_GROUP) or not result.probabilities:
        return None
    if result.positive_probability is not None:
        return result.positive_probability
    not_normal = getattr(result, "not_normal_probability", None)
    if not_normal is not None:
        return not_normal
    return max(result.probabilities.values())


def triage_key(result: Any) -> tuple[int, float]:
    """Sort key: group first (in domain, out of domain, not assessed, failed), then most probable first
    (Python's sort is stable: ties keep their order)."""
    score = triage_score(result)
    return (group(result), 0.0 if score is None else -score)


def flag(result: Any) -> str:
    """The mark a triage table shows: failed, not assessed, out of domain, or nothing."""
    return {IN_DOMAIN: "", OUT_OF_DOMAIN: "out of domain", NOT_ASSESSED_GROUP: NOT_ASSESSED,
            FAILED: "failed"}[group(result)]


def call_text(result: Any, threshold: float | None) -> str:
    """The call as a table cell: the class called, "not assessed: …", or :data:`NOT_SCORED`; never None."""
    if not result.ok:
        return NOT_SCORED
    if getattr(result, "not_assessed", None):
        return not_assessed_text(result.not_assessed)
    return result.call(threshold) or ""


def probability_text(result: Any, formatted: str) -> str:
    """A probability cell: blank when there is no number, marked when the film is out of the model's domain."""
    if triage_score(result) is None:
        return ""
    return f"{formatted} ({UNRELIABLE_NOTE})" if result.out_of_domain else formatted
