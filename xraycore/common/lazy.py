"""Lazy re-exports for a room's ``__init__``: the public names of its modules, imported on first use.

Every room (``from xraycore import metrics; metrics.roc_auc``) and the top-level API work this way, so that
importing a package costs nothing and pulls in no torch until a name that needs it is used (PEP 562). One
implementation: each ``__init__`` declares only which module holds which names.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping, Sequence


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose module ``exports[m]`` holds the names listed."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{module_of[name]}", package), name)

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *module_of, *exports})

    return __getattr__, __dir__, sorted(module_of)
