"""Run directories on disk, written so a killed process never leaves a lie, and process liveness.

    directory        The run directory: one folder per training run, written so that a killed process never
                     leaves a lie
    liveness         Is a recorded process still running? One answer for the training queue, the jobs and the
                     run directories
    predictions_csv  A run's `<split>_predictions.csv`: one row per image (file, patient, label, then a prob_
                     and a logit_ column per class), written atomically and read back as arrays

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "directory": ("runs_root", "sanitize_run_id", "new_run_id", "Run", "create_run", "open_run", "is_run_dir",
        "list_runs"),
    "liveness": ("started_at", "process_alive"),
    "predictions_csv": ("predictions_file", "write_predictions_csv", "read_predictions_csv"),
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
