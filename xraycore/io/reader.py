"""Reading chest X-ray files: PNG, JPEG, BMP, TIFF, GIF, WebP and DICOM, into one greyscale float image.

Everything a user can upload goes through :func:`read_xray`. It either returns an :class:`XrayImage`
(pixels in [0, 1], bright = bone, plus metadata that identifies nobody) or raises one
:class:`XrayReadError` whose ``kind`` a program can switch on and whose text a clinician can read.

The format is decided by the file's content (magic bytes), never by its name: a web page saved as
``scan.jpg`` is reported as a web page. DICOM files carrying the standard "DICM" marker are recognised
first; bare datasets without it are tried with pydicom after every image format and known non-image
format has been ruled out.

Intensity rules
    * 8-bit data is divided by 255: its nominal range is its real range.
    * Deeper data (16-bit PNG/TIFF, 32-bit, float) is stretched from its own minimum to its own
      maximum. A 16-bit container rarely holds 16 bits of signal (12-bit detectors are common), so
      dividing by 65535 would show such an image nearly black.
    * DICOM: modality LUT (rescale slope/intercept), then the VOI LUT or window stored in the file,
      mapped onto [0, 1] by the window's own output range; without a VOI, the data's own range.
      MONOCHROME1 (bone dark) is inverted last, so every image follows the display convention.

Privacy: DICOM values are decoded lazily by pydicom and this module only touches image-description
elements (size, bit depth, photometric interpretation, modality, view, body part, window), so names,
IDs, dates, UIDs and institution tags are never decoded, copied into metadata, warned about or put
into an error message. The one patient attribute read is the age, and only when the caller gives a
model's intended use: it is compared with the model's age range and only the yes/no outcome is kept
(``metadata["dicom_guards"]``).

Compressed DICOM is decoded by pydicom's plugins (pylibjpeg, pyjpegls, Pillow, ...), all tried before a
file is refused; the refusal then says why in words (no decoder, damaged data, a non-standard stream).
DICOM reading lives in :mod:`xraycore.io.dicom`, imported only when a DICOM arrives; the result type, the
error and the steps both readers share live in :mod:`xraycore.io.image`.

Errors: only what the decoders raise for a bad file (:data:`PILLOW_ERRORS`, ``dicom.DICOM_ERRORS``) becomes
an XrayReadError, and only around the decoders' own calls; anything else is a bug and propagates.
"""
from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps

from xraycore.io.image import (MAX_PIXELS, XrayImage, XrayReadError, check_dimensions, colourfulness, finish_image,
                               stretch_to_unit)

if TYPE_CHECKING:
    from xraycore.io.intended_use import IntendedUse

logger = logging.getLogger(__name__)

MAX_FILE_BYTES: int = 1 << 30
"""Files larger than 1 GiB are refused before being read into memory."""
# What Pillow raised for damaged files when truncated and bit-flipped PNG, JPEG, TIFF, GIF, WebP, BMP and
# JPEG 2000 files were opened and decoded: OSError (UnidentifiedImageError, "image file is truncated", decoder
# errors), ValueError ("Invalid dimensions"), and from TIFF tags of the wrong type or size TypeError ("Missing
# dimensions") and OverflowError. Its plugins also use SyntaxError, EOFError and struct.error for broken streams.
PILLOW_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, TypeError, OverflowError, SyntaxError, EOFError,
                                              struct.error)
# A damaged EXIF block (only read for the orientation) also raised AttributeError and struct.error from
# Pillow's tag writer; the image itself is fine then, so this only costs the rotation, with a warning.
EXIF_ERRORS: tuple[type[Exception], ...] = (*PILLOW_ERRORS, AttributeError, LookupError)
EXIF_UNREADABLE_WARNING = "the EXIF orientation could not be read (damaged metadata); shown as stored"


# ----------------------------------------------------------------------------- entry point

def read_xray(source: bytes | str | os.PathLike | BinaryIO, *, name: str | None = None,
              max_pixels: int = MAX_PIXELS, max_side: int | None = None,
              intended: IntendedUse | None = None) -> XrayImage:
    """Read one X-ray from bytes, a path or a binary file object; raise XrayReadError if it cannot be used.

    ``name`` (the uploaded file's name) is only used to say "although its name ends in .png" in
    messages; it never decides the format. Paths supply their own name. File objects are read from
    their current position to the end. ``max_side`` lets a JPEG decode at a reduced scale (libjpeg's
    DCT scaling: never below max_side), which is several times faster for full-size radiographs
    when only a network input and a screen-sized view are needed. ``intended`` (a model's intended use)
    sets the age flag of a DICOM's ``dicom_guards`` and the views and body parts its other flags compare with.
    """
    data = _read_source(source)
    if name is None and isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
    if not data:
        raise XrayReadError("empty", "The file is empty (0 bytes). It may not have finished uploading or copying.")

    if data[128:132] == b"DICM":  # first: a dual DICOM/TIFF file has TIFF magic in its preamble
        from xraycore.io import dicom as dicom_io  # lazy, like pydicom itself: most uploads are PNG/JPEG

        return dicom_io.read_dicom(dicom_io.parse_dicom(data, force=False), max_pixels, intended)
    pillow_format = _pillow_format(data)
    if pillow_format is not None:
        return _read_with_pillow(data, pillow_format, max_pixels, max_side)
    if _is_heic(data):
        raise XrayReadError("unsupported", "HEIC/HEIF photos (the iPhone format) are not supported. "
                                           "Please export the image as PNG, JPEG or DICOM.")
    description = _describe_non_image(data)
    if description is None:
        from xraycore.io import dicom as dicom_io

        dataset = dicom_io.parse_dicom(data, force=True, quiet=True)
        if dataset is not None and dicom_io.looks_like_dicom(dataset):
            return dicom_io.read_dicom(dataset, max_pixels, intended)
    raise XrayReadError("not_image", _not_image_message(description, name))


# ----------------------------------------------------------------------------- sources and sniffing

def _read_source(source: bytes | str | os.PathLike | BinaryIO) -> bytes:
    """All inputs become bytes: formats are sniffed from content and DICOM needs the whole file anyway."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _file_too_large()
        return path.read_bytes()
    if hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if isinstance(data, str):
            raise TypeError("read_xray needs a file opened in binary mode ('rb')")
        if len(data) > MAX_FILE_BYTES:
            raise _file_too_large()
        return bytes(data)
    raise TypeError(f"read_xray cannot read from {type(source).__name__}; give bytes, a path or a binary file")


def _file_too_large() -> XrayReadError:
    return XrayReadError("too_large", f"The file is larger than {MAX_FILE_BYTES >> 30} GB, "
                                      "far bigger than any single X-ray; it was not opened.")


# Each format: alternative signatures; a signature is (offset, bytes) pairs that must all match.
_IMAGE_SIGNATURES: dict[str, tuple[tuple[tuple[int, bytes], ...], ...]] = {
    "PNG": (((0, b"\x89PNG\r\n\x1a\n"),),),
    "JPEG": (((0, b"\xff\xd8\xff"),),),
    "TIFF": (((0, b"II*\x00"),), ((0, b"MM\x00*"),)),
    "GIF": (((0, b"GIF87a"),), ((0, b"GIF89a"),)),
    "WEBP": (((0, b"RIFF"), (8, b"WEBP")),),
    "BMP": (((0, b"BM"), (6, b"\x00\x00\x00\x00")),),  # reserved bytes must be zero: "BM..." text is not a bitmap
    "JPEG2000": (((0, b"\x00\x00\x00\x0cjP  \r\n\x87\n"),), ((0, b"\xff\x4f\xff\x51"),)),
}

_NON_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive or an Office document"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
    (b"{\\rtf", "a rich-text document"),
    (b"\x1f\x8b", "a compressed (gzip) archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\x7fELF", "a program"),
)


def _pillow_format(data: bytes) -> str | None:
    for pillow_format, signatures in _IMAGE_SIGNATURES.items():
        for signature in signatures:
            if all(data[offset:offset + len(magic)] == magic for offset, magic in signature):
                return pillow_format
    return None


def _is_heic(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"mif1", b"msf1")


def _describe_non_image(data: bytes) -> str | None:
    """What a non-image file looks like ("an HTML web page", "a text file", ...), or None if unknown."""
    for magic, description in _NON_IMAGE_SIGNATURES:
        if data.startswith(magic):
            return description
    head = data[:4096]
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n").lower()
    if text.startswith(("<!doctype html", "<html")) or "<html" in text or "<body" in text:
        return "an HTML web page (perhaps a download page saved instead of the image)"
    if text.startswith("<svg") or (text.startswith("<?xml") and "<svg" in text):
        return "an SVG drawing"
    printable = sum(char.isprintable() or char in "\r\n\t" for char in text)
    if text and printable >= 0.95 * len(text):
        return "an XML file" if text.startswith("<?xml") else "a text file"
    return None


def _not_image_message(description: str | None, name: str | None) -> str:
    suffix = Path(name).suffix.lower() if name else ""
    named = f" (although its name ends in {suffix})" if suffix else ""
    if description is None:
        return (f"This file is not an image format that can be read here{named}. "
                "Please choose a chest X-ray saved as PNG, JPEG or DICOM.")
    return f"This is {description}, not an image{named}. Please choose a chest X-ray saved as PNG, JPEG or DICOM."


# ----------------------------------------------------------------------------- Pillow formats

_FRIENDLY_NAMES = {"JPEG2000": "JPEG 2000", "WEBP": "WebP"}
_DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_BIT_DEPTHS = {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}


def _read_with_pillow(data: bytes, pillow_format: str, max_pixels: int, max_side: int | None = None) -> XrayImage:
    friendly = _FRIENDLY_NAMES.get(pillow_format, pillow_format)
    corrupt = XrayReadError("corrupt", f"The {friendly} image is damaged or incomplete and cannot be read. "
                                       "It may have been cut off while uploading or copying; please export it again.")
    try:
        image = Image.open(io.BytesIO(data), formats=[pillow_format])  # lazy: reads the header only
    except Image.DecompressionBombError:
        raise XrayReadError("too_large", f"The image is too large to open safely (more than "
                                         f"{max_pixels / 1e6:g} million pixels). Please export a smaller copy.") from None
    except PILLOW_ERRORS as error:
        raise corrupt from error
    check_dimensions(*image.size, max_pixels)
    original_size = list(image.size)
    if max_side and pillow_format == "JPEG" and min(image.size) > max_side:
        image.draft(image.mode, (max_side, max_side))
    warnings: list[str] = []
    try:
        frames = getattr(image, "n_frames", 1)  # counting a GIF's or TIFF's frames reads through the file
        image.load()
    except PILLOW_ERRORS as error:
        raise corrupt from error
    if frames > 1:
        warnings.append("multi-frame image: first frame used")
    image = _apply_exif_orientation(image, warnings)
    metadata: dict[str, Any] = {"format": pillow_format.lower(), "mode": image.mode,
                                "bit_depth": _BIT_DEPTHS.get(image.mode, 8), "colourfulness": 0.0,
                                "warnings": warnings, "original_size": original_size}
    if image.mode in _DEEP_MODES:
        pixels = np.asarray(image)
        if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
            warnings.append(f"{int((~np.isfinite(pixels)).sum())} pixels were not numbers (NaN or infinite); shown black")
        return finish_image(stretch_to_unit(pixels), metadata)
    if image.mode not in ("L", "1"):
        image = _rgb_on_black(image, warnings)
        metadata["colourfulness"] = round(colourfulness(image), 2)
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    pixels *= 1.0 / 255.0
    return finish_image(pixels, metadata)


def _apply_exif_orientation(image: Image.Image, warnings: list[str]) -> Image.Image:
    """Turn camera/phone images upright, saying so. A damaged EXIF block does not fail the read: the image
    is kept as stored, with a warning (it may lie on its side) and a debug log line naming the error."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (None, 1):
            return image
        upright = ImageOps.exif_transpose(image)
    except EXIF_ERRORS as error:
        logger.debug("EXIF orientation unreadable, image kept as stored: %s", type(error).__name__)
        warnings.append(EXIF_UNREADABLE_WARNING)
        return image
    warnings.append("EXIF rotation applied")
    return upright


def _rgb_on_black(image: Image.Image, warnings: list[str]) -> Image.Image:
    """Any colour/palette/alpha mode → RGB; transparency is composited on black (an X-ray's background)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] < 255:
        warnings.append("transparent areas shown as black")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


