"""Score a model on a folder of class folders: the numbers a reviewer asks for, as one dict."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import data as xdata
from . import metrics
from .predict import Predictor


def evaluate_folder(model_dir: str | Path, data_dir: str | Path, *, threshold: float | None = None,
                    positive: str | None = None, beta: float = 2.0, tta: bool = False,
                    with_ci: bool = False, prevalence: float | None = None,
                    predictor: Predictor | None = None) -> dict[str, Any]:
    """Binary report (positive class vs the rest) at the model's saved or a given threshold.

    Unreadable files are skipped and counted, never fatal. Multi-class models also get the
    multi-class report when the folder names match their classes. ``prevalence`` adds the
    precision and NPV expected where the positive class is that common.
    """
    predictor = predictor or Predictor(model_dir, threshold=threshold)
    samples, folder_classes = xdata.scan_class_folders(data_dir)
    if not samples:
        raise ValueError(f"no images found in class folders under {data_dir}")
    positive = positive or predictor.positive_class or "PNEUMONIA"
    if positive not in folder_classes:
        raise ValueError(f"no folder named {positive!r} under {data_dir} (found: {', '.join(folder_classes)})")
    if positive not in predictor.class_names:
        raise ValueError(f"the model does not know the class {positive!r} (it knows: {', '.join(predictor.class_names)})")
    positive_index = predictor.class_names.index(positive)
    labels, probs, skipped = [], [], []
    for sample, prediction in zip(samples, predictor.predict_files([s.path for s in samples], tta=tta)):
        if not prediction.ok:
            skipped.append({"file": Path(sample.path).name, "error": prediction.error})
            continue
        labels.append(folder_classes[sample.label])
        probs.append([prediction.probabilities[c] for c in predictor.class_names])
    if not probs:
        raise ValueError("none of the images could be read")
    probs_array = np.asarray(probs)
    y_true = np.array([label == positive for label in labels], dtype=int)
    cut = next(value for value in (threshold, predictor.threshold, 0.5) if value is not None)  # 0.0 is a threshold
    result: dict[str, Any] = metrics.binary_report(y_true, probs_array[:, positive_index], cut, beta)
    result.update(model=predictor.run.id, positive=positive, skipped=len(skipped), skipped_files=skipped[:50])
    if prevalence is not None:
        result["at_prevalence"] = metrics.predictive_values(result["recall"], result["specificity"], prevalence)
    if with_ci:
        result["ci95"] = metrics.bootstrap_report(y_true, probs_array[:, positive_index], cut, beta)
    if len(predictor.class_names) > 2 and set(folder_classes) <= set(predictor.class_names):
        truth = np.array([predictor.class_names.index(label) for label in labels])
        result["multiclass"] = metrics.multiclass_report(truth, probs_array, predictor.class_names)
    return result
