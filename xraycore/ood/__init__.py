"""Is this film like the training films? Feature distances for the out-of-domain check.

    distance  Out-of-domain scoring: is this image like the ones the model was trained on?

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "distance": ("DomainDiscriminator", "OodModel", "fit_ood", "fit_discriminator"),
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
