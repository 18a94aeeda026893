"""Is this film like the training films? Feature distances for the out-of-domain check.

    distance  Out-of-domain scoring: is this image like the ones the model was trained on?

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "distance": ("DomainDiscriminator", "OodModel", "fit_ood", "fit_discriminator"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
