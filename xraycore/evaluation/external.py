"""Score a model on a labelled folder: the numbers a reviewer asks for, site calibration, and the
external evaluations a model directory keeps as records."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating
from xraycore.runs import directory as runs
from xraycore.common.files import atomic_write_json, read_json_file
from xraycore.common.hashing import sha256_of_content
from xraycore.common.timestamps import utc_timestamp
from xraycore.data import folders
from xraycore.inference.predictor import Predictor

EVALUATIONS_DIR = "evaluations"


@dataclass
class ScoredFolder:
    """Every readable image of a class-folder tree, scored once."""

    files: list[str]
    labels: list[str]  # folder (class) names
    probabilities: np.ndarray  # (n, classes) at the predictor's operating point
    logits: np.ndarray  # (n, classes) before the temperature
    skipped: list[dict[str, str]]
    class_names: list[str]
    digests: list[str]  # sha256 of each scored image's bytes: the sample's fingerprint, wherever it came from

    def binary_truth(self, positive: str) -> np.ndarray:
        return np.array([label == positive for label in self.labels], dtype=int)


Labelled = tuple[str, Any, str]  # (name shown, source: path, bytes or file object, class name)


def folder_items(data_dir: str | Path) -> list[Labelled]:
    """(name, path, class) for every image of ``data_dir``/CLASS/*."""
    samples, folder_classes = folders.scan_class_folders(data_dir)
    if not samples:
        raise ValueError(f"no images found in class folders under {data_dir}")
    return [(sample.path, Path(sample.path), folder_classes[sample.label]) for sample in samples]


def score_labelled(predictor: Predictor, items: list[Labelled], positive: str, tta: bool | None = None,
                   identity: access.Identity | None = None) -> ScoredFolder:
    """Score labelled images (a folder's or uploads held in memory); unreadable ones are skipped and counted.
    With ``identity`` (the app) scoring is checked and audited like Diagnose's."""
    if positive not in predictor.class_names:
        raise ValueError(f"the model does not know the class {positive!r} (it knows: {', '.join(predictor.class_names)})")
    if positive not in {label for _, _, label in items}:
        raise ValueError(f"no {positive} image in the sample (found: {', '.join(sorted({l for _, _, l in items}))})")
    files, labels, probs, logits, skipped, digests = [], [], [], [], [], []
    scored = predictor.predict_sources(((name, source) for name, source, _ in items), tta=tta, identity=identity)
    for (name, source, label), prediction in zip(items, scored):
        if not prediction.ok:
            skipped.append({"file": Path(name).name, "error": prediction.error})
            continue
        digests.append(_content_digest(source))
        files.append(name)
        labels.append(label)
        probs.append([prediction.probabilities[c] for c in predictor.class_names])
        logits.append(prediction.logits)
    if not probs:
        raise ValueError("none of the images could be read")
    return ScoredFolder(files, labels, np.asarray(probs), np.asarray(logits, dtype=np.float64), skipped,
                        list(predictor.class_names), digests)


def _content_digest(source: Any) -> str:
    """sha256 of an image's bytes, whether it is a path, bytes or an (uploaded) file object."""
    return sha256_of_content(source)


def score_folder(predictor: Predictor, data_dir: str | Path, positive: str, tta: bool | None = None) -> ScoredFolder:
    """Run ``predictor`` over ``data_dir``/CLASS/*; unreadable files are skipped and counted, never fatal."""
    return score_labelled(predictor, folder_items(data_dir), positive, tta)


def evaluate_folder(model_dir: str | Path, data_dir: str | Path, *, threshold: float | None = None,
                    positive: str | None = None, beta: float = 2.0, tta: bool | None = None,
                    with_ci: bool = False, prevalence: float | None = None,
                    predictor: Predictor | None = None, operating_point: str | None = None) -> dict[str, Any]:
    """Binary report (positive class vs the rest) at the model's active, a named or a given threshold.

    Multi-class models also get the multi-class report when the folder names match their classes.
    ``prevalence`` adds the precision and NPV expected where the positive class is that common.
    """
    from xraycore import metrics  # lazy: scikit-learn takes seconds to import, and the app's Diagnose page never needs it

    predictor = predictor or Predictor(model_dir, threshold=threshold, operating_point=operating_point)
    positive = positive or predictor.positive_class or "PNEUMONIA"
    scored = score_folder(predictor, data_dir, positive, tta=tta)
    positive_index = predictor.class_names.index(positive)
    y_true, y_score = scored.binary_truth(positive), scored.probabilities[:, positive_index]
    cut = next(value for value in (threshold, predictor.threshold, 0.5) if value is not None)  # 0.0 is a threshold
    if with_ci:
        result, ci = metrics.report_with_ci(y_true, y_score, cut, beta)
        result["ci95"] = ci
    else:
        result = metrics.binary_report(y_true, y_score, cut, beta)
    result.update(model=predictor.run.id, positive=positive, operating_point=predictor.operating_point,
                  skipped=len(scored.skipped), skipped_files=scored.skipped[:50])
    if prevalence is not None:
        result["at_prevalence"] = metrics.predictive_values(result["recall"], result["specificity"], prevalence)
    if len(predictor.class_names) > 2 and set(scored.labels) <= set(predictor.class_names):
        truth = np.array([predictor.class_names.index(label) for label in scored.labels])
        result["multiclass"] = metrics.multiclass_report(truth, scored.probabilities, predictor.class_names)
    result["data_fingerprint"] = operating.fingerprint(scored.digests)
    return result


def save_evaluation(model_dir: str | Path, name: str, data_dir: str | Path, result: dict[str, Any],
                    note: str = "") -> Path:
    """Keep an external evaluation as a record in the model directory (evaluations/NAME.json): metrics with
    bootstrap CIs, n, prevalence, date, the data's fingerprint and which operating point answered."""
    name = operating._check_name(name)
    record = {
        "name": name, "date": utc_timestamp(),
        "data": Path(data_dir).name, "data_fingerprint": result.get("data_fingerprint"),
        "n": result["n"], "prevalence": result["prevalence"], "operating_point": result.get("operating_point"),
        "threshold": result["threshold"], "note": note,
        "metrics": {k: result.get(k) for k in ("accuracy", "precision", "recall", "specificity", "f1", "fbeta",
                                                "auroc", "auprc", "confusion_matrix")},
        "ci95": result.get("ci95"), "skipped": result.get("skipped", 0),
    }
    path = Path(model_dir) / EVALUATIONS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)
    return path


def list_evaluations(model_dir: str | Path) -> list[dict[str, Any]]:
    """Every saved external evaluation of a model directory, oldest first."""
    folder = Path(model_dir) / EVALUATIONS_DIR
    records = [read_json_file(path, None) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return sorted((r for r in records if isinstance(r, dict)), key=lambda r: r.get("date", ""))


def evidence(model_dir: str | Path) -> list[dict[str, Any]]:
    """What a model's figures rest on, one row per data set: internal validation first (labelled as such:
    the same collection as its training images, so optimistic), then every saved external evaluation.
    Shown together wherever figures are shown, never the internal ones alone."""
    run = runs.Run(Path(model_dir))
    rows = []
    internal = (run.read_json(runs.SUMMARY_FILE, {}) or {}).get("val") or {}
    if internal.get("n"):
        rows.append({"data": "internal validation (same collection as training: optimistic)", "kind": "internal",
                     "n": internal["n"], "prevalence": internal.get("prevalence"), "auroc": internal.get("auroc"),
                     "accuracy": internal.get("accuracy"), "sensitivity": internal.get("recall"),
                     "specificity": internal.get("specificity"), "operating_point": "internal", "date": None})
    for record in list_evaluations(model_dir):
        found = record.get("metrics", {})
        rows.append({"data": f"external: {record['name']} ({record.get('data')})", "kind": "external",
                     "n": record.get("n"), "prevalence": record.get("prevalence"), "auroc": found.get("auroc"),
                     "accuracy": found.get("accuracy"), "sensitivity": found.get("recall"),
                     "specificity": found.get("specificity"), "operating_point": record.get("operating_point"),
                     "date": (record.get("date") or "")[:10], "note": record.get("note", "")})
    return rows
