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

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "directory": ("runs_root", "sanitize_run_id", "new_run_id", "Run", "create_run", "open_run", "is_run_dir",
        "list_runs"),
    "liveness": ("started_at", "process_alive"),
    "predictions_csv": ("predictions_file", "write_predictions_csv", "read_predictions_csv"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
