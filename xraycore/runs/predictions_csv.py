"""A run's ``<split>_predictions.csv``: one row per image (file, patient, label, then a prob_ and a logit_
column per class), written atomically and read back as arrays.

Kept apart from :mod:`xraycore.runs.directory` because the file's columns are a format of their own, read by
the operating-point, comparison and evaluation code through ``Run.predictions``; the run directory itself
only knows where the file lies.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from xraycore.common.files import atomic_write_text, plain_name


def predictions_file(split: str) -> str:
    """The file name of ``split``'s predictions (``val_predictions.csv``); ValueError for an unsafe split name."""
    return f"{plain_name(split, 'split name')}_predictions.csv"


def write_predictions_csv(
    path: Path,
    files: Sequence[str],
    labels: Iterable[int],
    probs: np.ndarray,
    class_names: Sequence[str],
    patients: Sequence[str] | None = None,
    logits: np.ndarray | None = None,
) -> None:
    """Write one row per image, one prob_/logit_ column per class, atomically; ValueError on mismatched shapes."""
    class_names = [str(name) for name in class_names]
    probs = np.asarray(probs, dtype=float)
    count = len(files)
    labels = np.asarray(list(labels), dtype=int).reshape(-1)
    patients = [""] * count if patients is None else [str(patient) for patient in patients]
    if len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError("class_names must be non-empty and unique.")
    _check_shape("probs", probs, (count, len(class_names)))
    if logits is not None:
        logits = np.asarray(logits, dtype=float)
        _check_shape("logits", logits, (count, len(class_names)))
    if len(labels) != count or len(patients) != count:
        raise ValueError(f"files, labels and patients must all have {count} entries.")

    header = ["file", "patient", "label", *(f"prob_{name}" for name in class_names)]
    if logits is not None:
        header += [f"logit_{name}" for name in class_names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for index in range(count):
        numbers = list(probs[index]) + (list(logits[index]) if logits is not None else [])
        writer.writerow(
            [files[index], patients[index], int(labels[index]), *(repr(float(x)) for x in numbers)]
        )
    atomic_write_text(path, buffer.getvalue())


def read_predictions_csv(path: Path) -> dict | None:
    """{"file", "patient", "label", "probs", "logits", "class_names"} of a predictions file; None if it does not
    exist, ValueError if it lacks the columns."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        return None
    if not rows:
        raise ValueError(f"{path} is empty (no header).")
    header, body = rows[0], rows[1:]
    prob_columns = [i for i, name in enumerate(header) if name.startswith("prob_")]
    logit_columns = [i for i, name in enumerate(header) if name.startswith("logit_")]
    if "file" not in header or "label" not in header or not prob_columns:
        raise ValueError(f"{path} lacks the file, label or prob_<class> columns.")

    def column(name: str) -> list[str]:
        index = header.index(name)
        return [row[index] for row in body]

    def matrix(indices: list[int]) -> np.ndarray:
        return np.array([[float(row[i]) for i in indices] for row in body], dtype=float).reshape(
            len(body), len(indices)
        )

    return {
        "file": column("file"),
        "patient": column("patient") if "patient" in header else [""] * len(body),
        "label": np.array([int(value) for value in column("label")], dtype=int),
        "probs": matrix(prob_columns),
        "logits": matrix(logit_columns) if logit_columns else None,
        "class_names": [header[i][len("prob_"):] for i in prob_columns],
    }


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, int]) -> None:
    if array.shape != expected:
        raise ValueError(f"{name} has shape {array.shape}; expected {expected} (images x classes).")
