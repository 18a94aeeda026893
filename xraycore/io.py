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
"""
from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Mapping

import numpy as np
from PIL import ExifTags, Image, ImageOps

if TYPE_CHECKING:
    from .intended_use import IntendedUse

MAX_PIXELS: int = 50_000_000
"""Images with more pixels are refused before any decoding (decompression-bomb guard)."""
MIN_SIDE: int = 32
"""Images narrower or shorter than this carry too little detail to assess."""
MAX_FILE_BYTES: int = 1 << 30
"""Files larger than 1 GiB are refused before being read into memory."""
MIN_CONTRAST: float = 2 / 255
"""An image whose brightest and darkest pixels differ by less than two 8-bit grey levels is blank."""
COLOURFULNESS_WARNING: float = 25.0
"""Hasler & Süsstrunk colourfulness (0-255 RGB scale) from which an image is flagged as a colour photo.

Their scale calls < 15 "slightly colourful" and > 33 "moderately colourful". X-rays stored as RGB
score about 0; a mild tint (blue channel x0.85) scores about 12 and a strong sepia (green x0.9,
blue x0.7) about 24, just under the line; photographs and colour graphics usually score 40-100+.
"""
COLOUR_SAMPLE_SIDE = 256
"""Colourfulness is measured on a box-averaged copy about this many pixels on its long side."""

ERROR_KINDS = frozenset({"empty", "corrupt", "not_image", "unsupported", "too_large", "too_small",
                         "no_pixels", "constant"})
COLOUR_PHOTO_WARNING = "colour photograph, probably not an X-ray"


class XrayReadError(ValueError):
    """One typed error for every unreadable input; .kind is a short code, str(err) is a plain message a clinician understands."""

    def __init__(self, kind: str, message: str) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown XrayReadError kind {kind!r}")
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):  # keep kind when the error crosses a process boundary (worker pools)
        return type(self), (self.kind, str(self))


@dataclass(frozen=True, eq=False)
class XrayImage:
    """A greyscale X-ray: float32 HxW pixels in [0, 1] with bone bright, and non-identifying metadata.

    metadata keys: format, width, height, bit_depth, mode (images) or photometric (DICOM), colourfulness,
    warnings (list of plain sentences); DICOM adds modality, view_position, body_part when present,
    frames, compression and dicom_guards (yes/no flags, see io.dicom_guards).
    """

    pixels: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return self.metadata.get("warnings", [])

    def __repr__(self) -> str:  # the default would print the pixel array
        height, width = self.pixels.shape
        return (f"XrayImage({width}x{height}, format={self.metadata.get('format')!r}, "
                f"warnings={self.warnings!r})")


# ----------------------------------------------------------------------------- public helpers

def looks_like_colour_photo(metadata_or_colourfulness: Mapping[str, Any] | float) -> bool:
    """True when the colourfulness (or metadata["colourfulness"]) reaches COLOURFULNESS_WARNING."""
    if isinstance(metadata_or_colourfulness, Mapping):
        metadata_or_colourfulness = metadata_or_colourfulness.get("colourfulness", 0.0)
    return float(metadata_or_colourfulness) >= COLOURFULNESS_WARNING


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 0-255 (rounded, clipped) for display and caching."""
    scaled = np.multiply(pixels, 255, dtype=np.float32)
    np.clip(scaled, 0, 255, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def colourfulness(rgb: Image.Image) -> float:
    """Hasler & Süsstrunk (2003) colourfulness of an RGB image, measured on a box-downscaled copy."""
    factor = max(1, max(rgb.size) // COLOUR_SAMPLE_SIDE)
    sample = np.asarray(rgb.reduce(factor) if factor > 1 else rgb, dtype=np.float32)
    red, green, blue = sample[..., 0], sample[..., 1], sample[..., 2]
    red_green = red - green
    yellow_blue = 0.5 * (red + green) - blue
    spread = np.hypot(red_green.std(), yellow_blue.std())
    mean = np.hypot(red_green.mean(), yellow_blue.mean())
    return float(spread + 0.3 * mean)


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
        return _read_dicom(_parse_dicom(data, force=False), max_pixels, intended)
    pillow_format = _pillow_format(data)
    if pillow_format is not None:
        return _read_with_pillow(data, pillow_format, max_pixels, max_side)
    if _is_heic(data):
        raise XrayReadError("unsupported", "HEIC/HEIF photos (the iPhone format) are not supported. "
                                           "Please export the image as PNG, JPEG or DICOM.")
    description = _describe_non_image(data)
    if description is None:
        dataset = _parse_dicom(data, force=True, quiet=True)
        if dataset is not None and _looks_like_dicom(dataset):
            return _read_dicom(dataset, max_pixels, intended)
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


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise XrayReadError("too_large", f"The image is too large to open safely: {width} × {height} pixels, "
                                         f"the limit is {max_pixels / 1e6:g} million. Please export a smaller copy.")
    if min(width, height) < MIN_SIDE:
        raise XrayReadError("too_small", f"The image is only {width} × {height} pixels; at least {MIN_SIDE} "
                                         "pixels on each side are needed. Is this a thumbnail or an icon?")


def _finish(pixels: np.ndarray, metadata: dict[str, Any]) -> XrayImage:
    """Shared last step: refuse blank images, clip, record size and the colour-photo warning."""
    if float(pixels.max()) - float(pixels.min()) < MIN_CONTRAST:
        raise XrayReadError("constant", "The image is blank: every pixel has (almost) the same brightness, "
                                        "so there is nothing to analyse.")
    np.clip(pixels, 0.0, 1.0, out=pixels)
    metadata["height"], metadata["width"] = (int(side) for side in pixels.shape)
    if looks_like_colour_photo(metadata):
        metadata["warnings"].append(COLOUR_PHOTO_WARNING)
    return XrayImage(pixels=np.ascontiguousarray(pixels, dtype=np.float32), metadata=metadata)


def _stretch(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map [low, high] (default: the data's own range) onto [0, 1] as float32; equal ends mean a blank image."""
    values = values.astype(np.float32, copy=True)
    finite = np.isfinite(values)
    if not finite.all():  # float TIFFs can hold NaN/inf where the detector had no reading: show them black
        if not finite.any():
            raise XrayReadError("constant", "The image holds no numbers (every pixel is NaN or infinite).")
        values[~finite] = values[finite].min()
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high <= low:
        raise XrayReadError("constant", "The image is blank: every pixel has the same value, so there is nothing to analyse.")
    values -= low
    values *= 1.0 / (high - low)
    return values


# ----------------------------------------------------------------------------- Pillow formats

_FRIENDLY_NAMES = {"JPEG2000": "JPEG 2000", "WEBP": "WebP"}
_DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_BIT_DEPTHS = {"1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}


def _read_with_pillow(data: bytes, pillow_format: str, max_pixels: int, max_side: int | None = None) -> XrayImage:
    friendly = _FRIENDLY_NAMES.get(pillow_format, pillow_format)
    corrupt = XrayReadError("corrupt", f"The {friendly} image is damaged or incomplete and cannot be read. "
                                       "It may have been cut off while uploading or copying; please export it again.")
    # Decoders of untrusted files raise many exception types (OSError, SyntaxError, struct.error, ...):
    # every one of them means "this file cannot be decoded".
    try:
        image = Image.open(io.BytesIO(data), formats=[pillow_format])  # lazy: reads the header only
    except Image.DecompressionBombError:
        raise XrayReadError("too_large", f"The image is too large to open safely (more than "
                                         f"{max_pixels / 1e6:g} million pixels). Please export a smaller copy.") from None
    except Exception as error:
        raise corrupt from error
    _check_dimensions(*image.size, max_pixels)
    original_size = list(image.size)
    if max_side and pillow_format == "JPEG" and min(image.size) > max_side:
        image.draft(image.mode, (max_side, max_side))
    warnings: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        warnings.append("multi-frame image: first frame used")
    try:
        image.load()
    except Exception as error:
        raise corrupt from error
    image, rotated = _apply_exif_orientation(image)
    if rotated:
        warnings.append("EXIF rotation applied")
    metadata: dict[str, Any] = {"format": pillow_format.lower(), "mode": image.mode,
                                "bit_depth": _BIT_DEPTHS.get(image.mode, 8), "colourfulness": 0.0,
                                "warnings": warnings, "original_size": original_size}
    if image.mode in _DEEP_MODES:
        pixels = np.asarray(image)
        if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
            warnings.append(f"{int((~np.isfinite(pixels)).sum())} pixels were not numbers (NaN or infinite); shown black")
        return _finish(_stretch(pixels), metadata)
    if image.mode not in ("L", "1"):
        image = _rgb_on_black(image, warnings)
        metadata["colourfulness"] = round(colourfulness(image), 2)
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    pixels *= 1.0 / 255.0
    return _finish(pixels, metadata)


def _apply_exif_orientation(image: Image.Image) -> tuple[Image.Image, bool]:
    """Turn camera/phone images upright; a damaged EXIF block is ignored rather than failing the read."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (None, 1):
            return image, False
        return ImageOps.exif_transpose(image), True
    except Exception:
        return image, False


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


# ----------------------------------------------------------------------------- DICOM

_DICOM_DAMAGED = "The DICOM file is damaged or incomplete and cannot be read. Please export it again."


def _parse_dicom(data: bytes, *, force: bool, quiet: bool = False):
    """pydicom Dataset, or None (quiet) / a corrupt error when pydicom cannot parse the bytes."""
    import pydicom  # lazy: most uploads are PNG/JPEG

    try:
        return pydicom.dcmread(io.BytesIO(data), force=force)
    except Exception:
        if quiet:
            return None
        raise XrayReadError("corrupt", _DICOM_DAMAGED) from None  # pydicom's text may quote tag values


def _looks_like_dicom(dataset) -> bool:
    """A forced parse of arbitrary bytes 'succeeds' with junk; real DICOM has these elements."""
    try:
        return any(keyword in dataset for keyword in ("PixelData", "Rows", "SOPClassUID", "Modality"))
    except Exception:
        return False


def _read_dicom(dataset, max_pixels: int, intended: IntendedUse | None = None) -> XrayImage:
    """Any failure inside pydicom (odd values, broken sequences, ...) means a damaged file.

    The original exception is dropped, not chained: pydicom's messages may quote element values.
    """
    try:
        return _decode_dicom(dataset, max_pixels, intended)
    except XrayReadError:
        raise
    except Exception:
        raise XrayReadError("corrupt", _DICOM_DAMAGED) from None


def _decode_dicom(dataset, max_pixels: int, intended: IntendedUse | None) -> XrayImage:
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        # pydicom quietly stops at the end of a cut-off file, so "no pixels" needs a closer look: an
        # image object without pixels was cut off, and without a SOP class it is no DICOM object at all
        sop_class = dataset.get("SOPClassUID")
        if sop_class is None or "Rows" in dataset or "Image" in sop_class.name:
            raise XrayReadError("corrupt", _DICOM_DAMAGED)
        raise XrayReadError("no_pixels", "This DICOM file contains no image (it may be a report or other "
                                         "non-image data), so there is nothing to analyse.")
    _check_dimensions(int(dataset.Columns), int(dataset.Rows), max_pixels)

    transfer_syntax = _transfer_syntax(dataset)
    compression = _compression(transfer_syntax)
    frames = _int_or(dataset.get("NumberOfFrames"), 1)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    metadata: dict[str, Any] = {
        "format": "dicom", "photometric": photometric, "bit_depth": _int_or(dataset.get("BitsStored"), 0) or None,
        "frames": frames, "colourfulness": 0.0, "warnings": [],
    }
    if compression is not None:
        metadata["compression"] = compression
    for key, keyword in (("modality", "Modality"), ("view_position", "ViewPosition"), ("body_part", "BodyPartExamined")):
        value = dataset.get(keyword)
        if value not in (None, ""):
            metadata[key] = str(value)[:64]
    guards = dicom_guards(dataset, intended)
    if guards:
        metadata["dicom_guards"] = guards
    if frames > 1:
        metadata["warnings"].append("multi-frame DICOM: first frame used")

    from pydicom.pixels import pixel_array

    try:
        array = pixel_array(dataset, index=0 if frames > 1 else None)
    except Exception:  # pydicom and its plugins raise many types; the reason is worked out from the file itself
        if compression is None:
            raise
        raise _unsupported_compression(compression, _undecodable_reason(dataset, transfer_syntax)) from None

    if photometric == "PALETTE COLOR" or array.ndim == 3:
        return _dicom_colour(array, dataset, photometric, metadata)
    pixels = _dicom_grey(array, dataset, metadata["warnings"])
    if displays_inverted(photometric, dataset.get("PresentationLUTShape")):
        pixels = np.subtract(1.0, pixels, out=pixels)
    return _finish(pixels, metadata)


def displays_inverted(photometric: str, presentation_lut_shape: object) -> bool:
    """Whether the stored values show bone dark. MONOCHROME1 says so; so does a Presentation LUT
    Shape of INVERSE (DX objects pair INVERSE with MONOCHROME1 to say the same thing once, so the
    two together still mean one inversion, as in clinical viewers)."""
    shape = str(presentation_lut_shape or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def _dicom_grey(array: np.ndarray, dataset, warnings: list[str]) -> np.ndarray:
    """Modality LUT, then VOI LUT/window via pydicom, mapped onto [0, 1] (before any MONOCHROME1 inversion)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

    values = apply_modality_lut(array, dataset)
    has_lut = bool(dataset.get("VOILUTSequence"))
    has_window = dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None
    if not (has_lut or has_window):
        return _stretch(values)
    try:
        windowed = apply_voi_lut(values, dataset, index=0)
        if has_lut:
            low, high = None, None
        else:  # the window's output range: what -inf and +inf map to
            low, high = (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), dataset, index=0))
        pixels = _stretch(windowed, low, high)
    except Exception:
        warnings.append("the DICOM window could not be applied; full range shown")
        return _stretch(values)
    if float(pixels.max()) - float(pixels.min()) < MIN_CONTRAST:
        warnings.append("the DICOM window left the image blank; full range shown")
        return _stretch(values)
    return pixels


def _dicom_colour(array: np.ndarray, dataset, photometric: str, metadata: dict[str, Any]) -> XrayImage:
    """RGB (pydicom already converted YBR) or palette colour → the same greying as colour images."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, dataset)
    if array.dtype != np.uint8:
        array = (array.astype(np.float32) * (255.0 / np.iinfo(array.dtype).max)).astype(np.uint8)
    rgb = Image.fromarray(np.ascontiguousarray(array[..., :3]), "RGB")
    metadata["colourfulness"] = round(colourfulness(rgb), 2)
    pixels = np.asarray(rgb.convert("L"), dtype=np.float32)
    pixels *= 1.0 / 255.0
    return _finish(pixels, metadata)


def _transfer_syntax(dataset):
    """The file's transfer syntax; a bare dataset (no file meta) gets the encoding pydicom detected."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in dataset.file_meta:
        implicit_vr, little_endian = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian)
    return dataset.file_meta.TransferSyntaxUID


def _compression(transfer_syntax) -> str | None:
    """Name of the pixel-data compression; None for native (uncompressed) pixels."""
    try:
        return transfer_syntax.name if transfer_syntax.is_compressed else None
    except ValueError:  # not a transfer syntax pydicom knows: private or damaged
        return "an unrecognised compression"


def _decoder_available(transfer_syntax) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(transfer_syntax).is_available
    except Exception:  # NotImplementedError: no decoder exists for this syntax at all
        return False


def _unsupported_compression(compression: str, reason: str) -> XrayReadError:
    if compression.startswith(("1.", "2.")):  # pydicom names unknown syntaxes by their UID: do not echo it
        compression = "an unrecognised compression"
    return XrayReadError("unsupported", f"This DICOM image is compressed with {compression}, which cannot be "
                                        f"decoded here: {reason}. Please export it uncompressed (Explicit VR "
                                        "Little Endian) or as PNG.")


# ----------------------------------------------------------------------------- DICOM: why compressed pixels fail

_DAMAGED_START = "its compressed data does not begin like {} data, so it is damaged or mislabelled"
_SIZE_MISMATCH = ("the image size recorded inside its compressed data differs from the one in the DICOM header, "
                  "so the data is damaged")
_CUT_SHORT = "its compressed data ends too early, so the file is incomplete"
_JPEG_BROKEN_SCAN = ("its compressed data breaks a rule of the JPEG standard (wrong scan parameters, a fault of "
                     "some older software) that the decoders installed here do not tolerate")
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
                          0xF7})  # F7: JPEG-LS
_MARKERS_WITHOUT_LENGTH = frozenset({0x01, *range(0xD0, 0xDA)})  # TEM, RSTn, SOI, EOI


def _undecodable_reason(dataset, transfer_syntax) -> str:
    """Why no installed decoder read the pixels, in words a clinician can pass on to whoever sent the file.

    pydicom's own messages name libraries and may quote values, so the reason comes from the file:
    the decoders present, then the first frame's codestream header against the DICOM header.
    """
    if not _decoder_available(transfer_syntax):
        return "no decoder for this compression is installed"
    frame = _first_frame(dataset)
    if not frame:
        return "its compressed data is damaged (no image can be found in it)"
    problem = _codestream_problem(frame, str(transfer_syntax), _int_or(dataset.get("Rows"), 0),
                                  _int_or(dataset.get("Columns"), 0))
    return problem or ("the decoders installed here reject its compressed data, which is probably damaged or "
                       "uses a rare variant of this compression")


def _first_frame(dataset) -> bytes | None:
    from pydicom.encaps import generate_frames

    try:
        return next(generate_frames(dataset.PixelData, number_of_frames=_int_or(dataset.get("NumberOfFrames"), 1)),
                    None)
    except (ValueError, TypeError, struct.error):  # encapsulation items that do not parse
        return None


def _codestream_problem(frame: bytes, uid: str, rows: int, columns: int) -> str | None:
    """What is wrong with a JPEG-family or JPEG 2000 codestream's header, or None if nothing is seen."""
    from pydicom.uid import (JPEG2000TransferSyntaxes, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSTransferSyntaxes,
                             JPEGTransferSyntaxes)

    if uid in JPEGTransferSyntaxes or uid in JPEGLSTransferSyntaxes:
        return _jpeg_problem(frame, rows, columns, sequential=uid in (JPEGBaseline8Bit, JPEGExtended12Bit))
    if uid in JPEG2000TransferSyntaxes:
        return _jpeg2000_problem(frame, rows, columns)
    return None


def _jpeg_problem(frame: bytes, rows: int, columns: int, sequential: bool) -> str | None:
    """Walk the marker segments up to the first scan: start marker, frame size, scan parameters."""
    if frame[:2] != b"\xff\xd8":
        return _DAMAGED_START.format("JPEG")
    position = 2
    while position + 4 <= len(frame):
        if frame[position] != 0xFF:
            return _DAMAGED_START.format("JPEG")
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _MARKERS_WITHOUT_LENGTH:
            position += 2
            continue
        length = int.from_bytes(frame[position + 2:position + 4], "big")
        segment = frame[position + 4:position + 2 + length]
        if length < 2 or len(segment) < length - 2:
            return _CUT_SHORT
        if marker in _SOF_MARKERS and len(segment) >= 5:
            height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            if width != columns or height not in (0, rows):  # height 0: given later by a DNL segment
                return _SIZE_MISMATCH
        elif marker == 0xDA:  # start of scan: components, then spectral selection start and end
            end = 3 + 2 * segment[0] if segment else len(segment) + 1
            if sequential and len(segment) >= end and tuple(segment[end - 2:end]) != (0, 63):
                return _JPEG_BROKEN_SCAN
            return None
        position += 2 + length
    return _CUT_SHORT


def _jpeg2000_problem(frame: bytes, rows: int, columns: int) -> str | None:
    """The SIZ segment (right after the start of a codestream, possibly inside a JP2 file) against the header."""
    marker = b"\xff\x4f\xff\x51"  # SOC then SIZ
    start = 0 if frame.startswith(marker) else frame.find(marker) if frame[4:8] == b"jP  " else -1
    if start < 0:
        return _DAMAGED_START.format("JPEG 2000")
    size = frame[start + 8:start + 24]  # after the markers: Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz
    if len(size) < 16:
        return _CUT_SHORT
    width, height, left, top = struct.unpack(">4I", size)
    return _SIZE_MISMATCH if (width - left, height - top) != (columns, rows) else None


# ----------------------------------------------------------------------------- DICOM: intended-use flags

FRONTAL_VIEWS = ("PA", "AP")
"""View Position values of a frontal film, compared with when no intended use names the views."""
CHEST_BODY_PARTS = ("CHEST",)
_BODY_PART_SYNONYMS = {"THORAX": "CHEST", "LUNG": "CHEST", "LUNGS": "CHEST"}  # written by some vendors
_AGE_UNITS = {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}


def dicom_guards(dataset, intended: IntendedUse | None = None) -> dict[str, bool]:
    """Yes/no flags from the DICOM's own description: non_frontal, non_chest, age_outside_range.

    Views and body parts are compared with the intended use's (default: frontal, chest); the age only
    when a range is given. It counts in completed years, as ages are spoken (a child of five years and
    eleven months is five), and is never returned or stored. A missing or unreadable element sets no
    flag: absence is not evidence.
    """
    guards: dict[str, bool] = {}
    view = str(dataset.get("ViewPosition") or "").strip().upper()
    if view:
        views = intended.views if intended and intended.views else FRONTAL_VIEWS
        guards["non_frontal"] = view.split()[0] not in views
    part = str(dataset.get("BodyPartExamined") or "").strip().upper()
    if part:
        parts = intended.body_parts if intended and intended.body_parts else CHEST_BODY_PARTS
        guards["non_chest"] = _BODY_PART_SYNONYMS.get(part, part) not in parts and part not in parts
    if intended is not None and intended.age_years is not None:
        years = _age_in_years(dataset.get("PatientAge"))
        if years is not None:
            youngest, oldest = intended.age_years
            guards["age_outside_range"] = not youngest <= years < oldest + 1
    return guards


def _age_in_years(value: Any) -> float | None:
    """A DICOM age string (nnnD, nnnW, nnnM or nnnY) in years; None when absent or malformed."""
    text = str(value or "").strip().upper()
    if len(text) < 2 or not text[:-1].isdigit() or text[-1] not in _AGE_UNITS:
        return None
    return int(text[:-1]) / _AGE_UNITS[text[-1]]


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
