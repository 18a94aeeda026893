"""Files to images: PNG/JPEG/DICOM reading, typed read errors, intended-use facts.

    codestream    Why a compressed DICOM frame did not decode, read from the frame's own bytes: JPEG, JPEG-LS
                  and JPEG 2000
    dicom         DICOM files for :func:`xraycore.io.reader.read_xray`: parsing, pixels through the LUTs, why
                  compressed pixels fail (worked out by :mod:`xraycore.io.codestream`), and the yes/no
                  intended-use flags
    image         The image every reader returns, its one typed error, and the pixel steps every file format
                  shares
    intended_use  What a model was trained to read (ages, views, body parts, population), kept as
                  `intended_use.json`
    reader        Reading chest X-ray files: PNG, JPEG, BMP, TIFF, GIF, WebP and DICOM, into one greyscale
                  float image

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "codestream": ("jp2_boxes_never_end", "codestream_problem"),
    "dicom": ("parse_dicom", "looks_like_dicom", "read_dicom", "displays_inverted", "dicom_guards"),
    "image": ("XrayReadError", "XrayImage", "looks_like_colour_photo", "to_uint8", "colourfulness",
        "check_dimensions", "finish_image", "stretch_to_unit"),
    "intended_use": ("IntendedUse", "load", "save", "guard_warnings", "card_section", "SkipNonFrontal"),
    "reader": ("read_xray",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
