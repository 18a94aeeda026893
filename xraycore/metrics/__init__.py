"""Pure metric functions over numpy arrays: classification, ranking, calibration, bootstrap.

    core  Evaluation metrics, confidence intervals and calibration as pure functions over numpy arrays

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "core": ("confusion_matrix", "binary_counts", "accuracy", "precision", "recall", "specificity", "f1",
        "fbeta", "roc_curve", "pr_curve", "roc_auc", "average_precision", "threshold_sweep",
        "best_fbeta_threshold", "binary_report", "predictive_values", "classification_report",
        "multiclass_report", "one_vs_rest", "mean_std", "bootstrap_ci", "bootstrap_report", "report_with_ci",
        "reliability_bins", "expected_calibration_error", "softmax", "fit_temperature"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use: importing the package itself costs nothing."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF, *_EXPORTS})
