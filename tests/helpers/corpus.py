"""A generated corpus of good and bad X-ray files, shared by the io, CLI and app tests.

Every case is a small real file written with Pillow, numpy or pydicom (plus one hand-built PNG
decompression bomb), so tests need no data on disk and the whole corpus is written in well under
a second. ``expected`` is "ok" or the XrayReadError kind the file must produce.
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

SIDE = 64
"""Side of the ordinary test images: big enough to pass MIN_SIDE, small enough to be instant."""

PHI = {  # identifying values planted in DICOM files; none may ever leave xraycore.io.read_xray
    "PatientName": "Doe^Janet^Marie",
    "PatientID": "PID-73519-XQ",
    "PatientBirthDate": "19610214",
    "InstitutionName": "Saint Examplia Hospital",
    "ReferringPhysicianName": "Houseman^Greg",
    "AccessionNumber": "ACC-998877",
}
PHI_UIDS = {  # fixed so a test can search for them
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.11111111111111",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.22222222222222",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.33333333333333",
}


@dataclass(frozen=True)
class CorpusCase:
    path: Path
    expected: str                  # "ok" or an XrayReadError kind
    warning: str | None = None     # substring one of the returned warnings must contain
    name: str = ""                 # the case's key in the corpus, for failure messages


def chest_like(height: int = SIDE, width: int = SIDE, seed: int = 0) -> np.ndarray:
    """A float [0, 1] picture with chest-X-ray structure: bright body, two dark lungs, a spine, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    y, x = y / height, x / width
    picture = 0.55 + 0.25 * np.abs(x - 0.5)
    for centre in (0.3, 0.7):
        lung = ((x - centre) / 0.17) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1
        picture[lung] = 0.2 + 0.2 * y[lung]
    picture[np.abs(x - 0.5) < 0.04] = 0.9
    picture += rng.normal(0, 0.03, picture.shape)
    return np.clip(picture, 0, 1)


def _chest_uint8(**kwargs: int) -> np.ndarray:
    return (chest_like(**kwargs) * 255).round().astype(np.uint8)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- plain images

def _truncated_jpeg() -> bytes:
    data = _encoded(Image.fromarray(_chest_uint8()), "JPEG", quality=95)
    return data[: len(data) // 2]


def _truncated_png() -> bytes:
    data = _encoded(Image.fromarray(_chest_uint8()), "PNG")
    return data[: len(data) * 6 // 10]


def _png_16bit_12bit_range() -> bytes:
    """12-bit detector values (0-4095) in a 16-bit PNG: divided by 65535 they would look black."""
    return _encoded(Image.fromarray((chest_like() * 4095).round().astype(np.uint16)), "PNG")


def _rgba_png() -> bytes:
    grey = _chest_uint8()
    alpha = np.full_like(grey, 255)
    alpha[:, : SIDE // 4] = 0  # a transparent strip on the left
    return _encoded(Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA"), "PNG")


def _la_png() -> bytes:
    grey = _chest_uint8()
    return _encoded(Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA"), "PNG")


def _palette_png() -> bytes:
    return _encoded(Image.fromarray(_chest_uint8()).convert("RGB").quantize(64), "PNG")


def _cmyk_jpeg() -> bytes:
    return _encoded(Image.fromarray(_chest_uint8()).convert("CMYK"), "JPEG", quality=95)


def _exif_rotated_jpeg() -> bytes:
    """Stored 64 wide x 40 tall with EXIF orientation 6 (rotate 90° clockwise): upright it is 40 x 64."""
    image = Image.fromarray(_chest_uint8(height=40, width=SIDE))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encoded(image, "JPEG", quality=95, exif=exif.tobytes())


def _grey_as_rgb_jpeg() -> bytes:
    return _encoded(Image.fromarray(_chest_uint8()).convert("RGB"), "JPEG", quality=95)


def _colour_photo() -> bytes:
    """Random saturated colour blocks: clearly a colour picture, not an X-ray."""
    rng = np.random.default_rng(1)
    palette = np.array([[230, 30, 30], [30, 200, 40], [40, 60, 230], [250, 220, 20], [200, 40, 200]], np.uint8)
    blocks = palette[rng.integers(0, len(palette), (8, 8))]
    return _encoded(Image.fromarray(blocks.repeat(8, 0).repeat(8, 1), "RGB"), "PNG")


def _bomb_png(side: int = 30000) -> bytes:
    """A complete, valid 1-bit PNG of side x side black pixels (112 MB decoded) in about 100 KB.

    Built by hand because Pillow would need the whole image in memory. Its IDAT stream is one
    deflate block of 1000 zero rows repeated: after a full flush deflate forgets its history, so the
    same input compresses to the same bytes every time and the block can be copied instead of
    recompressed.
    """
    rows_per_block = 1000
    assert side % rows_per_block == 0
    zero_rows = bytes(1 + (side + 7) // 8) * rows_per_block  # each row: filter byte + packed bits
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: we add the zlib header ourselves
    block = deflate.compress(zero_rows) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = (side * len(zero_rows) // rows_per_block % 65521) << 16 | 1  # Adler-32 of that many zero bytes
    stream = b"\x78\xda" + block * (side // rows_per_block) + deflate.flush(zlib.Z_FINISH) + struct.pack(">I", adler)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def _png(array: np.ndarray) -> bytes:
    return _encoded(Image.fromarray(array), "PNG")


# ----------------------------------------------------------------------------- DICOM

def _dicom(pixels: np.ndarray | None, *, photometric: str = "MONOCHROME2", bits_stored: int = 16,
           transfer_syntax: str | None = None, encapsulated: bytes | None = None, frames: int = 1,
           preamble: bool = True, **elements) -> bytes:
    """A digital X-ray DICOM file with planted patient identifiers; pixels=None leaves out Pixel Data."""
    from pydicom import dcmwrite
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

    dataset = Dataset()
    dataset.SOPClassUID = DigitalXRayImageStorageForPresentation
    dataset.Modality, dataset.ViewPosition, dataset.BodyPartExamined = "DX", "PA", "CHEST"
    for keyword, value in {**PHI, **PHI_UIDS}.items():
        setattr(dataset, keyword, value)
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    if pixels is not None or encapsulated is not None:
        dataset.Rows, dataset.Columns = (pixels.shape[-2:] if pixels is not None else (SIDE, SIDE))
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, bits_stored, bits_stored - 1
        dataset.PixelRepresentation = 0
        if frames > 1:
            dataset.NumberOfFrames = frames
    if pixels is not None:
        dataset.PixelData = pixels.astype("<u2").tobytes()
    if encapsulated is not None:
        from pydicom.encaps import encapsulate

        dataset.PixelData = encapsulate([encapsulated])
        dataset["PixelData"].VR = "OB"
        dataset["PixelData"].is_undefined_length = True

    buffer = io.BytesIO()
    if preamble:
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.file_meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
        dcmwrite(buffer, dataset, enforce_file_format=True)
    else:  # a bare dataset, as some old archives store it: no preamble, no "DICM", no file meta
        dcmwrite(buffer, dataset, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def _dicom_monochrome1() -> bytes:
    """12-bit MONOCHROME1 with rescale and a window; raw[0, 0] is the lowest value, raw[-1, -1] the highest."""
    raw = (chest_like(seed=2) * 3000 + 500).round().astype(np.uint16)
    raw[0, 0], raw[-1, -1] = 0, 4095
    return _dicom(raw, photometric="MONOCHROME1", bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                  WindowCenter=1000, WindowWidth=3000)


def _dicom_monochrome2_16bit() -> bytes:
    return _dicom((chest_like(seed=3) * 65535).round().astype(np.uint16), bits_stored=16)


def _dicom_multiframe() -> bytes:
    frames = np.stack([chest_like(seed=4), chest_like(seed=5)[::-1]])
    return _dicom((frames * 4095).round().astype(np.uint16), bits_stored=12, frames=2)


def _dicom_without_preamble() -> bytes:
    return _dicom((chest_like(seed=6) * 4095).round().astype(np.uint16), bits_stored=12, preamble=False)


def _dicom_compressed(transfer_syntax: str) -> bytes:
    return _dicom(None, bits_stored=12, transfer_syntax=transfer_syntax, encapsulated=bytes(range(256)) * 4)


# ----------------------------------------------------------------------------- the corpus

_HTML = (b"<!DOCTYPE html>\n<html><head><title>Image viewer</title></head>\n"
         b"<body><p>Your download will start shortly.</p></body></html>\n")

_CASES: dict[str, tuple[str, Callable[[], bytes], str, str | None]] = {
    # name: (file name, bytes, expected, warning)
    "chest_8bit": ("chest.png", lambda: _png(_chest_uint8()), "ok", None),
    "chest_jpeg": ("chest.jpg", lambda: _encoded(Image.fromarray(_chest_uint8()), "JPEG", quality=95), "ok", None),
    "grey_as_rgb_jpeg": ("grey_rgb.jpg", _grey_as_rgb_jpeg, "ok", None),
    "png_16bit": ("twelve_bit.png", _png_16bit_12bit_range, "ok", None),
    "rgba_png": ("rgba.png", _rgba_png, "ok", "transparent"),
    "la_png": ("la.png", _la_png, "ok", None),
    "palette_png": ("palette.png", _palette_png, "ok", None),
    "cmyk_jpeg": ("cmyk.jpg", _cmyk_jpeg, "ok", None),
    "exif_rotated_jpeg": ("rotated.jpg", _exif_rotated_jpeg, "ok", "EXIF rotation"),
    "bmp": ("chest.bmp", lambda: _encoded(Image.fromarray(_chest_uint8()), "BMP"), "ok", None),
    "tiff_16bit": ("chest.tif", lambda: _encoded(Image.fromarray((chest_like() * 1023).astype(np.uint16)), "TIFF"),
                   "ok", None),
    "colour_photo": ("holiday.png", _colour_photo, "ok", "colour photograph"),
    "empty": ("empty.png", lambda: b"", "empty", None),
    "truncated_jpeg": ("truncated.jpg", _truncated_jpeg, "corrupt", None),
    "truncated_png": ("truncated.png", _truncated_png, "corrupt", None),
    "text_named_png": ("notes.png", lambda: b"Scan requested for Monday.\nCall the ward first.\n", "not_image", None),
    "html_named_jpg": ("download.jpg", lambda: _HTML, "not_image", None),
    "pdf_named_dcm": ("report.dcm", lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not_image", None),
    "random_bytes": ("mystery.bin", lambda: np.random.default_rng(7).integers(0, 256, 3000, np.uint8).tobytes(),
                     "not_image", None),
    "bomb_png": ("bomb.png", _bomb_png, "too_large", None),
    "tiny_10x10": ("tiny.png", lambda: _png(_chest_uint8(height=10, width=10)), "too_small", None),
    "constant": ("blank.png", lambda: _png(np.full((SIDE, SIDE), 128, np.uint8)), "constant", None),
    "dicom_monochrome1": ("mono1.dcm", _dicom_monochrome1, "ok", None),
    "dicom_monochrome2_16bit": ("mono2.dcm", _dicom_monochrome2_16bit, "ok", None),
    "dicom_multiframe": ("multi.dcm", _dicom_multiframe, "ok", "multi-frame"),
    "dicom_without_preamble": ("bare.dcm", _dicom_without_preamble, "ok", None),
    "dicom_no_pixels": ("sr_report.dcm", lambda: _dicom(None, SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11", Modality="SR"),
                        "no_pixels", None),  # a Basic Text SR: a report, no image
    "dicom_jpeg2000_junk": ("j2k.dcm", lambda: _dicom_compressed("1.2.840.10008.1.2.4.91"), "unsupported", None),
    "dicom_jpeg_lossless": ("lossless.dcm", lambda: _dicom_compressed("1.2.840.10008.1.2.4.70"), "unsupported", None),
}


CASE_NAMES: tuple[str, ...] = tuple(_CASES)
"""The corpus keys, known without writing files (for pytest.mark.parametrize)."""


def make_corpus(directory: Path) -> dict[str, CorpusCase]:
    """Write every case into ``directory`` (created if needed) and describe it; keys are case names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, CorpusCase] = {}
    assert len({file_name for file_name, *_ in _CASES.values()}) == len(_CASES), "file names must be unique"
    for case_name, (file_name, make_bytes, expected, warning) in _CASES.items():
        path = directory / file_name
        path.write_bytes(make_bytes())
        corpus[case_name] = CorpusCase(path=path, expected=expected, warning=warning, name=case_name)
    return corpus
