"""``python -m xraycore VERB``: the parser and one module per group of verbs.

    main           `python -m xraycore VERB ...`: everything the app does, from a terminal
    progress_bars  Progress reporting for the CLI: the trainer's events drawn as tqdm bars on stderr

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "main": ("build_parser", "cmd_train", "cmd_evaluate", "cmd_predict", "cmd_pacs", "cmd_selfcheck",
        "cmd_runs", "cmd_presets", "cmd_report", "cmd_export", "cmd_bundle", "cmd_build", "cmd_calibrate",
        "cmd_ood_expose", "cmd_operating_point", "cmd_release", "cmd_audit"),
    "progress_bars": ("TqdmProgress",),
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
