"""A tracked run's model card and figures (confusion matrix, ROC and precision-recall curves) in its MLflow run.

The training loop logs params, per-epoch metrics and the run's files itself (:mod:`xraycore.training.tracking`);
the card and the figures are made here, in the room that makes them for the Compare page and ``bundle``, and
added once the run has ended (``train`` and ``sweep`` call :func:`track_figures` for every run they made).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from xraycore import metrics
from xraycore.evaluation import figures
from xraycore.evaluation.model_card import model_card
from xraycore.runs import directory as runs
from xraycore.training import tracking

CARD_FILE = "MODEL_CARD.md"
CARD_COMMAND = "python -m xraycore train --config config.json  (this run's config.json, logged beside this card)"


def track_figures(path: str | Path) -> bool:
    """Add the card and the figures of a finished two-class run to its MLflow run; False when the run is not
    tracked, not finished or not two-class (nothing to draw), or tracking failed (one warning)."""
    run = runs.Run(Path(path))
    if not tracking.run_id_of(run) or run.status().get("state") not in ("finished", "stopped"):
        return False
    point, predictions = run.operating_point, run.predictions("val")
    if predictions is None or "positive_index" not in point:
        return False
    positive, threshold = int(point["positive_index"]), float(point["threshold"])
    y_true = (np.asarray(predictions["label"]) == positive).astype(int)
    score = np.asarray(predictions["probs"])[:, positive]
    calls = metrics.is_positive(score, threshold).astype(int)
    names = list(run.config.get("class_names") or ["negative", "positive"])
    negative = names[1 - positive] if len(names) == 2 else "other"
    fpr, tpr, _ = metrics.roc_curve(y_true, score)
    precision, recall, _ = metrics.pr_curve(y_true, score)
    drawn = {
        "figures/confusion_matrix.html": figures.confusion_matrix_figure(
            metrics.confusion_matrix(y_true, calls, 2), [negative, names[positive]], "validation, saved threshold"),
        "figures/roc.html": figures.roc_figure({"validation": (fpr, tpr, metrics.roc_auc(y_true, score))}),
        "figures/pr.html": figures.pr_figure({"validation": (recall, precision, metrics.average_precision(y_true, score))},
                                             prevalence=float(y_true.mean())),
    }
    with tempfile.TemporaryDirectory() as folder:
        card = Path(folder) / CARD_FILE
        card.write_text(model_card(run, CARD_COMMAND), encoding="utf-8")
        return tracking.update_run(run, files=[(None, card)], figures=drawn)
