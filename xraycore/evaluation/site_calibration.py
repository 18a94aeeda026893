"""Site calibration and the Operating point page's records: what the page used to build itself.

A site's labelled sample is checked (the model's class folders, :func:`check_classes`), scored at the internal
point (raw logits), fitted (:func:`fit_site_calibration`: temperature, F-beta threshold, intervals from
:mod:`fit_bootstrap`) and previewed (:func:`preview`). Saving goes through :mod:`operating`, which refuses a
preview-only fit (under ``operating.MIN_SAMPLE_PER_CLASS`` films per class, or a temperature at its search
bound) whoever asks: the page, ``calibrate`` or a script. :func:`chosen_point` is the record the page saves
for a hand-picked threshold, at the temperature it was shown with; :func:`validation_scores` recomputes the
internal validation scores at that temperature.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.evaluation import comparison
from xraycore import metrics
from xraycore.metrics.calibration import TEMPERATURE_BOUNDS
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs
from xraycore.data import folders
from xraycore.evaluation.external import Labelled, ScoredFolder, folder_items, score_labelled
from xraycore.clinical.fit_bootstrap import procedure_intervals
from xraycore.inference.predictor import Predictor
from xraycore.monitoring.reference_files import save_reference

REFERENCE_SCORES = "_reference_scores"  # fitted films' logits, carried from the fit to the save


def check_classes(items: list[Labelled], class_names: list[str]) -> None:
    """One sentence (ValueError) unless the sample's class folders are the model's two classes, both present."""
    found = sorted({label for _, _, label in items})
    if set(found) == set(class_names):
        return
    needed = " and ".join(f"{name}/" for name in class_names)
    found_text = ", ".join(f"{name}/" for name in found) or "none"
    raise ValueError(f"This model needs one sub-folder per class it knows, {needed}; the sample has {found_text}.")


def fit_site_calibration(predictor: Predictor, scored: ScoredFolder, beta: float, sample_name: str,
                         tta: bool = False) -> dict[str, Any]:
    """Temperature and F-beta threshold fitted on a scored site sample (scored at the internal point, i.e. from
    raw logits), with the sample's report at the new point and why it may not be saved (``warning``, None when
    it may: :func:`operating.site_refusal`). Nothing is stored."""
    positive = predictor.positive_class
    if positive is None or len(predictor.class_names) != 2:
        raise ValueError("site calibration needs a two-class model")
    y_true = scored.binary_truth(positive)
    n_positive, n_negative = int(y_true.sum()), int((1 - y_true).sum())
    if min(n_positive, n_negative) == 0:
        raise ValueError("the sample needs images of both classes (one folder per class)")
    point = operating.fit_site_point(y_true, scored.logits, predictor.positive_index, beta)
    probability = metrics.softmax(scored.logits, point["temperature"])[:, predictor.positive_index]
    report = metrics.binary_report(y_true, probability, point["threshold"], beta)
    point.update(
        kind=operating.SITE_KIND, source=f"site calibration on {len(y_true)} images of {sample_name}",
        n=len(y_true), n_positive=n_positive, n_negative=n_negative, tta=tta, positive_class=positive,
        positive_index=predictor.positive_index, temperature_bounds=list(TEMPERATURE_BOUNDS),
        temperature_at_bound=_at_search_bound(y_true, scored.logits, predictor.positive_index, point["temperature"]),
        data_fingerprint=operating.fingerprint(scored.digests),
        site_report={k: report[k] for k in ("accuracy", "recall", "specificity", "precision", "auroc", "confusion_matrix")},
        site_ci95=procedure_intervals(y_true, scored.logits, predictor.positive_index, beta),
        # what the point gives on patients it was not fitted on (grouped by patient where file names say who)
        site_cross_fitted=operating.cross_fitted_rates(y_true, scored.logits, predictor.positive_index, beta,
                                                       groups=[folders.patient_id(f) for f in scored.files]),
    )
    point["warning"] = operating.site_refusal(point)
    # the films it was fitted on, kept as the monitoring reference when the point is saved (_store), never in the point
    point[REFERENCE_SCORES] = {"logits": np.asarray(scored.logits, dtype=float).tolist(), "truth": y_true.tolist(),
                               "source": f"site calibration films ({len(y_true)} of {sample_name})"}
    return point


def _at_search_bound(y_true: np.ndarray, logits: np.ndarray, positive_index: int, temperature: float) -> bool:
    """Whether the temperature's likelihood is no worse at an end of its search interval than at the fitted
    value: the fit ran into the bound (or the likelihood is flat there because the scores saturate, as with
    perfectly separated films, and the minimiser stopped short of it). Either way the fit did not converge."""
    labels = np.where(np.asarray(y_true) == 1, positive_index, 1 - positive_index)
    fitted = metrics.temperature_nll(logits, labels, temperature)
    return any(metrics.temperature_nll(logits, labels, bound) <= fitted + 1e-9 for bound in TEMPERATURE_BOUNDS)


def preview(predictor: Predictor, items: list[Labelled], beta: float, sample_name: str,
            identity: access.Identity | None = None) -> dict[str, Any]:
    """Score a labelled sample and fit on it, storing nothing: the point, the sample's truth and its scores at the
    fitted temperature (for the site's ROC curve), and how many films were unreadable."""
    check_classes(items, predictor.class_names)
    scored = score_labelled(predictor, items, predictor.positive_class, identity=identity)
    point = fit_site_calibration(predictor, scored, beta, sample_name, tta=predictor.tta)
    score = metrics.softmax(scored.logits, point["temperature"])[:, predictor.positive_index]
    return {"point": point, "truth": scored.binary_truth(predictor.positive_class), "score": score,
            "skipped": len(scored.skipped)}


def calibrate_folder(model_dir: str | Path, data_dir: str | Path, name: str, *, beta: float = 2.0,
                     activate: bool = True, user: str | None = None, tta: bool | None = None,
                     identity: access.Identity | None = None) -> dict[str, Any]:
    """Fit temperature and threshold on a site's labelled sample and store them as operating point ``name``.

    Returns the stored point, which carries the site sample's own report at that point (with intervals; measured
    on the data it was fitted on, so optimistic), the cross-fitted estimate for new patients
    (:func:`operating.cross_fitted_rates`), its size and fingerprint. A fit that may only be previewed
    (:func:`operating.site_refusal`) raises ValueError with its one sentence and stores nothing.
    A shared clinical setting: admin only, checked before any image is read; one 'calibration' audit line.
    """
    with access.guarded("calibration", identity, access.CHANGE_OPERATING_POINT, model=audit.model_info(model_dir),
                       operating_point=str(name)) as line:
        predictor = Predictor(model_dir, operating_point=operating.INTERNAL)
        items = folder_items(data_dir)
        check_classes(items, predictor.class_names)
        positives = sum(label == predictor.positive_class for _, _, label in items)
        if too_few := operating.sample_warning(positives, len(items) - positives):  # before scoring a film
            raise ValueError(too_few)
        scored = score_labelled(predictor, items, predictor.positive_class or "PNEUMONIA", tta)
        point = fit_site_calibration(predictor, scored, beta, Path(data_dir).name,
                                     tta=predictor.tta if tta is None else tta)
        return _store(model_dir, name, point, activate, user or line.identity.user, line)


def save_site_calibration(model_dir: str | Path, name: str, point: dict[str, Any], *, activate: bool = True,
                          identity: access.Identity | None = None) -> dict[str, Any]:
    """Store a calibration fitted with :func:`fit_site_calibration` (the app previews it first): admin only,
    one 'calibration' audit line."""
    with access.guarded("calibration", identity, access.CHANGE_OPERATING_POINT, model=audit.model_info(model_dir),
                       operating_point=str(name)) as line:
        return _store(model_dir, name, point, activate, line.identity.user, line)


def _store(model_dir: str | Path, name: str, point: dict[str, Any], activate: bool, user: str,
           line: Any) -> dict[str, Any]:
    line.note(counts={"images": point["n"], "positive": point["n_positive"], "negative": point["n_negative"]})
    point = dict(point)
    scores = point.pop(REFERENCE_SCORES, None)
    saved = operating._save(model_dir, name, point, activate=activate, user=user, line=line)
    if scores is not None:  # what monitoring compares this point's scored films with (monitoring.reference_files)
        positive = int(point["positive_index"])
        save_reference(model_dir, name, scores["logits"], [positive if t else 1 - positive for t in scores["truth"]],
                       positive, scores["source"])
    return saved


def chosen_point(threshold: float, beta: float, shown: dict[str, Any]) -> dict[str, Any]:
    """The record the Operating point page saves for a threshold picked on internal validation: at the
    temperature of the point it was shown with (``shown``, a point of :func:`operating.get`), and saying so."""
    temperature = float(shown.get("temperature", 1.0))
    return {"threshold": float(threshold), "beta": float(beta), "temperature": temperature,
            "source": f"chosen on the Operating point page (internal validation), at the temperature "
                      f"{temperature:.3f} of point {shown['name']!r}"}


def validation_scores(run: runs.Run, positive: str, temperature: float | None,
                      split: str = "val") -> tuple[np.ndarray, np.ndarray] | None:
    """(truth, score) one-vs-rest on ``split`` with the scores recomputed from the stored logits at
    ``temperature``, so a threshold is judged on the scores it will be applied to. Without stored logits (or
    without a temperature) the stored probabilities, which are at the internal point's temperature."""
    predictions = run.predictions(split)
    if predictions is None:
        return None
    index = comparison.positive_index(run, predictions["class_names"], positive)
    if temperature is None or predictions.get("logits") is None:
        return comparison.scores(run, split, positive)
    probabilities = metrics.softmax(np.asarray(predictions["logits"], dtype=np.float64), float(temperature))
    return metrics.one_vs_rest(predictions["label"], probabilities, index)
