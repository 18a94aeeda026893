"""Where the network looked: CAM from the forward pass and Grad-CAM overlays.

    cam             Class activation maps and their overlays on the scan
    lung_attention  What a reader is told beside a heat map: how much of it lies on the lung fields, in one
                    plain sentence
    lung_fields     A lung-field estimate from the film's intensities alone: no weights, no model hub, no
                    torch, no scipy

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "cam": ("check_method", "cam_classes", "one_pass_cam", "resize_bilinear", "compute_cam", "overlay"),
    "lung_attention": ("LungAttention", "outside_the_lungs"),
    "lung_fields": ("LungFields", "estimate_lung_fields", "lung_boxes", "lung_share", "outline", "draw_outline"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
