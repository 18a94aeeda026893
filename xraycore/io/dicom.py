"""DICOM files for :func:`xraycore.io.reader.read_xray`: parsing, pixels through the LUTs, why compressed pixels
fail (worked out by :mod:`xraycore.io.codestream`), and the yes/no intended-use flags.

pydicom decodes element values lazily, so a damaged file can fail at any element access, not only while
parsing. Every pydicom call (element reads go through :func:`_get`) therefore runs inside
:func:`_damage_means_corrupt`, which turns what pydicom and its decoder plugins raise for such files
(:data:`DICOM_ERRORS`) into the product's one typed error. The code between those calls is outside it, so a
bug there surfaces instead of reading as a damaged file.
The privacy rules of :mod:`xraycore.io.reader` hold here: only image-description elements are touched, and
pydicom's messages (which may quote element values) are never passed on.
"""
from __future__ import annotations

import io
import struct
import zlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from PIL import Image
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID

from xraycore.io.codestream import JP2_BOX_LOOP, codestream_problem, jp2_boxes_never_end
from xraycore.io.image import (CHEST_BODY_PARTS, FRONTAL_VIEWS, MIN_CONTRAST, XrayImage, XrayReadError,
                               check_dimensions, colourfulness, finish_image, stretch_to_unit)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from xraycore.io.intended_use import IntendedUse

# What pydicom and its decoder plugins raised for damaged files when truncated and bit-flipped copies of every
# test file pydicom ships (and of the synthetic films in tests/helpers/corpus.py) were read: parsing
# (InvalidDicomError, BytesLengthException, OSError, ValueError, NotImplementedError, struct.error, zlib.error for deflated files),
# element values (AttributeError for a missing element, TypeError for a value of the wrong type, KeyError) and
# the decoders (RuntimeError, ValueError). pydicom's own source adds OverflowError, EOFError and LookupError.
DICOM_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError, BytesLengthException, OSError, ValueError, TypeError, AttributeError, LookupError,
    NotImplementedError, RuntimeError, OverflowError, EOFError, struct.error, zlib.error,
)

_DICOM_DAMAGED = "The DICOM file is damaged or incomplete and cannot be read. Please export it again."


@contextmanager
def _damage_means_corrupt() -> Iterator[None]:
    """pydicom failing on the file's content → XrayReadError("corrupt"), with pydicom's message dropped (not
    chained: it may quote element values). The product's own XrayReadError (a ValueError) passes through."""
    try:
        yield
    except XrayReadError:
        raise
    except DICOM_ERRORS:
        raise XrayReadError("corrupt", _DICOM_DAMAGED) from None


def _get(dataset: Dataset, keyword: str, default: Any = None) -> Any:
    """An element's value (``default`` when absent); a value pydicom cannot decode means a damaged file."""
    with _damage_means_corrupt():
        return dataset.get(keyword, default)


def _is_decoder_panic(error: BaseException) -> bool:
    """A Rust decoder's panic (pylibjpeg-rle on some damaged RLE streams): pyo3 raises it as PanicException,
    a BaseException that no module exports by name, yet it only means "this data cannot be decoded"."""
    return type(error).__name__ == "PanicException"


def parse_dicom(data: bytes, *, force: bool, quiet: bool = False) -> Dataset | None:
    """pydicom Dataset, or None (quiet) / a corrupt error when pydicom cannot parse the bytes."""
    import pydicom  # lazy: most uploads are PNG/JPEG

    try:
        return pydicom.dcmread(io.BytesIO(data), force=force)
    except DICOM_ERRORS:
        if quiet:
            return None
        raise XrayReadError("corrupt", _DICOM_DAMAGED) from None  # pydicom's text may quote tag values


def looks_like_dicom(dataset: Dataset) -> bool:
    """A forced parse of arbitrary bytes 'succeeds' with junk; real DICOM has these elements.
    (A keyword lookup decodes no value, so it cannot fail on damaged data.)"""
    return any(keyword in dataset for keyword in ("PixelData", "Rows", "SOPClassUID", "Modality"))


def read_dicom(dataset: Dataset, max_pixels: int, intended: IntendedUse | None = None) -> XrayImage:
    """A parsed dataset's first frame as an XrayImage: modality LUT, VOI LUT or window, MONOCHROME1 inversion."""
    metadata, transfer_syntax = _describe(dataset, max_pixels, intended)
    samples = _int_or(_get(dataset, "SamplesPerPixel"), 1)
    array = _first_frame_pixels(dataset, transfer_syntax, metadata)
    if array.ndim != (3 if samples > 1 else 2):  # a damaged frame count, say, makes pydicom return every frame
        raise XrayReadError("corrupt", _DICOM_DAMAGED)
    photometric = metadata["photometric"]
    if photometric == "PALETTE COLOR" or samples > 1:
        return _dicom_colour(array, dataset, photometric, metadata)
    pixels = _dicom_grey(array, dataset, metadata["warnings"])
    if displays_inverted(photometric, _get(dataset, "PresentationLUTShape")):
        pixels = np.subtract(1.0, pixels, out=pixels)
    return finish_image(pixels, metadata)


def _describe(dataset: Dataset, max_pixels: int, intended: IntendedUse | None) -> tuple[dict[str, Any], UID]:
    """(metadata, transfer syntax) from the header; refuses files without pixels or with too many."""
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        # pydicom quietly stops at the end of a cut-off file, so "no pixels" needs a closer look: an
        # image object without pixels was cut off, and without a SOP class it is no DICOM object at all
        sop_class = _get(dataset, "SOPClassUID")
        if not isinstance(sop_class, UID) or "Rows" in dataset or "Image" in sop_class.name:
            raise XrayReadError("corrupt", _DICOM_DAMAGED)
        raise XrayReadError("no_pixels", "This DICOM file contains no image (it may be a report or other "
                                         "non-image data), so there is nothing to analyse.")
    columns, rows = _get(dataset, "Columns"), _get(dataset, "Rows")
    if not (isinstance(columns, int) and isinstance(rows, int)):
        raise XrayReadError("corrupt", _DICOM_DAMAGED)
    check_dimensions(columns, rows, max_pixels)

    with _damage_means_corrupt():
        transfer_syntax = _transfer_syntax(dataset)
    compression = _compression(transfer_syntax)
    frames = _int_or(_get(dataset, "NumberOfFrames"), 1)
    metadata: dict[str, Any] = {
        "format": "dicom", "photometric": str(_get(dataset, "PhotometricInterpretation", "MONOCHROME2")).strip().upper(),
        "bit_depth": _int_or(_get(dataset, "BitsStored"), 0) or None, "frames": frames, "colourfulness": 0.0,
        "warnings": [],
    }
    if compression is not None:
        metadata["compression"] = compression
    for key, keyword in (("modality", "Modality"), ("view_position", "ViewPosition"), ("body_part", "BodyPartExamined")):
        value = _get(dataset, keyword)
        if value not in (None, ""):
            metadata[key] = str(value)[:64]
    guards = dicom_guards(dataset, intended)
    if guards:
        metadata["dicom_guards"] = guards
    if frames > 1:
        metadata["warnings"].append("multi-frame DICOM: first frame used")
    return metadata, transfer_syntax


def _first_frame_pixels(dataset: Dataset, transfer_syntax: UID, metadata: dict[str, Any]) -> np.ndarray:
    """The stored values of the first frame; a compressed one that no plugin decodes is refused with the
    reason worked out from the file itself (pydicom and its plugins raise many types, with their own words)."""
    from pydicom.pixels import pixel_array
    from pydicom.uid import JPEG2000TransferSyntaxes

    if transfer_syntax in JPEG2000TransferSyntaxes:
        with _damage_means_corrupt():
            frame = _first_frame(dataset)
        if frame is not None and jp2_boxes_never_end(frame):
            raise _unsupported_compression(metadata["compression"], JP2_BOX_LOOP)
    try:
        return pixel_array(dataset, index=0 if metadata["frames"] > 1 else None)
    except BaseException as error:
        if not isinstance(error, DICOM_ERRORS) and not _is_decoder_panic(error):
            raise
    compression = metadata.get("compression")  # outside the handler, so no pydicom message is chained
    if compression is None:
        raise XrayReadError("corrupt", _DICOM_DAMAGED)
    with _damage_means_corrupt():
        reason = _undecodable_reason(dataset, transfer_syntax)
    raise _unsupported_compression(compression, reason)


def displays_inverted(photometric: str, presentation_lut_shape: object) -> bool:
    """Whether the stored values show bone dark. MONOCHROME1 says so; so does a Presentation LUT
    Shape of INVERSE (DX objects pair INVERSE with MONOCHROME1 to say the same thing once, so the
    two together still mean one inversion, as in clinical viewers)."""
    shape = str(presentation_lut_shape or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def _dicom_grey(array: np.ndarray, dataset: Dataset, warnings: list[str]) -> np.ndarray:
    """Modality LUT, then VOI LUT/window via pydicom, mapped onto [0, 1] (before any MONOCHROME1 inversion).
    A window that cannot be applied or leaves nothing to see falls back to the full range, with a warning."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

    with _damage_means_corrupt():
        values = apply_modality_lut(array, dataset)
    has_lut = bool(_get(dataset, "VOILUTSequence"))
    has_window = _get(dataset, "WindowCenter") is not None and _get(dataset, "WindowWidth") is not None
    if not (has_lut or has_window):
        return stretch_to_unit(values)
    try:
        windowed = apply_voi_lut(values, dataset, index=0)
        # the window's output range: what -inf and +inf map to (a LUT's output is stretched by its own range)
        low, high = ((None, None) if has_lut else
                     (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), dataset, index=0)))
    except DICOM_ERRORS:
        warnings.append("the DICOM window could not be applied; full range shown")
        return stretch_to_unit(values)
    try:
        pixels = stretch_to_unit(windowed, low, high)
    except XrayReadError:  # the window maps every pixel to one value
        pixels = None
    if pixels is None or float(pixels.max()) - float(pixels.min()) < MIN_CONTRAST:
        warnings.append("the DICOM window left the image blank; full range shown")
        return stretch_to_unit(values)
    return pixels


def _dicom_colour(array: np.ndarray, dataset: Dataset, photometric: str, metadata: dict[str, Any]) -> XrayImage:
    """RGB (pydicom already converted YBR) or palette colour → the same greying as colour images."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        with _damage_means_corrupt():
            array = apply_color_lut(array, dataset)
    if array.shape[-1] < 3 or array.dtype.kind not in "iu":  # colour is (at least) 3 integer samples
        raise XrayReadError("corrupt", _DICOM_DAMAGED)
    if array.dtype != np.uint8:
        array = (array.astype(np.float32) * (255.0 / np.iinfo(array.dtype).max)).astype(np.uint8)
    rgb = Image.fromarray(np.ascontiguousarray(array[..., :3]), "RGB")
    metadata["colourfulness"] = round(colourfulness(rgb), 2)
    pixels = np.asarray(rgb.convert("L"), dtype=np.float32)
    pixels *= 1.0 / 255.0
    return finish_image(pixels, metadata)


def _transfer_syntax(dataset: Dataset) -> UID:
    """The file's transfer syntax; a bare dataset (no file meta) gets the encoding pydicom detected.
    Call it inside _damage_means_corrupt: it reads the file meta."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in dataset.file_meta:
        implicit_vr, little_endian = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian)
    syntax = dataset.file_meta.TransferSyntaxUID
    if not isinstance(syntax, UID):  # several values, say
        raise XrayReadError("corrupt", _DICOM_DAMAGED)
    return syntax


def _compression(transfer_syntax: UID) -> str | None:
    """Name of the pixel-data compression; None for native (uncompressed) pixels."""
    try:
        return transfer_syntax.name if transfer_syntax.is_compressed else None
    except ValueError:  # not a transfer syntax pydicom knows: private or damaged
        return "an unrecognised compression"


def _decoder_available(transfer_syntax: UID) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(transfer_syntax).is_available
    except NotImplementedError:  # no decoder exists for this syntax at all
        return False


def _unsupported_compression(compression: str, reason: str) -> XrayReadError:
    if compression.startswith(("1.", "2.")):  # pydicom names unknown syntaxes by their UID: do not echo it
        compression = "an unrecognised compression"
    return XrayReadError("unsupported", f"This DICOM image is compressed with {compression}, which cannot be "
                                        f"decoded here: {reason}. Please export it uncompressed (Explicit VR "
                                        "Little Endian) or as PNG.")


# ----------------------------------------------------------------------------- DICOM: why compressed pixels fail

def _undecodable_reason(dataset: Dataset, transfer_syntax: UID) -> str:
    """Why no installed decoder read the pixels, in words a clinician can pass on to whoever sent the file.

    pydicom's own messages name libraries and may quote values, so the reason comes from the file:
    the decoders present, then the first frame's codestream header against the DICOM header.
    """
    if not _decoder_available(transfer_syntax):
        return "no decoder for this compression is installed"
    frame = _first_frame(dataset)
    if not frame:
        return "its compressed data is damaged (no image can be found in it)"
    problem = codestream_problem(frame, str(transfer_syntax), _int_or(dataset.get("Rows"), 0),
                                 _int_or(dataset.get("Columns"), 0))
    return problem or ("the decoders installed here reject its compressed data, which is probably damaged or "
                       "uses a rare variant of this compression")


def _first_frame(dataset: Dataset) -> bytes | None:
    from pydicom.encaps import generate_frames

    try:
        return next(generate_frames(dataset.PixelData, number_of_frames=_int_or(dataset.get("NumberOfFrames"), 1)),
                    None)
    except (ValueError, TypeError, struct.error):  # encapsulation items that do not parse
        return None


# ----------------------------------------------------------------------------- DICOM: intended-use flags

_BODY_PART_SYNONYMS = {"THORAX": "CHEST", "LUNG": "CHEST", "LUNGS": "CHEST"}  # written by some vendors
_AGE_UNITS = {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}


def dicom_guards(dataset: Dataset, intended: IntendedUse | None = None) -> dict[str, bool]:
    """Yes/no flags from the DICOM's own description: non_frontal, non_chest, age_outside_range.

    Views and body parts are compared with the intended use's (default: frontal, chest); the age only
    when a range is given. It counts in completed years, as ages are spoken (a child of five years and
    eleven months is five), and is never returned or stored. A missing or unreadable element sets no
    flag: absence is not evidence.
    """
    guards: dict[str, bool] = {}
    view = str(_get(dataset, "ViewPosition") or "").strip().upper()
    if view:
        views = intended.views if intended and intended.views else FRONTAL_VIEWS
        guards["non_frontal"] = view.split()[0] not in views
    part = str(_get(dataset, "BodyPartExamined") or "").strip().upper()
    if part:
        parts = intended.body_parts if intended and intended.body_parts else CHEST_BODY_PARTS
        guards["non_chest"] = _BODY_PART_SYNONYMS.get(part, part) not in parts and part not in parts
    if intended is not None and intended.age_years is not None:
        years = _age_in_years(_get(dataset, "PatientAge"))
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
