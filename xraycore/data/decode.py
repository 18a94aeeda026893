"""Image files → uint8 grey arrays, and those → network input, the same at training and prediction.

decode_to_uint8 (training's cache), resize_uint8 / prepare_grey / match_stored_encoding (both sides) and
network_input (prediction on either backend, in numpy) live here so that serving installs, which have no
torch, share every number with training. Nothing here imports torch.
"""
from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Bump when decoding changes, so persisted caches made by older code are not reused.
DECODER_VERSION = "pillow-draft-bilinear-1"

# What Pillow raises for a file it cannot decode (UnidentifiedImageError and "image file is truncated" are
# OSErrors; broken PNG chunks raise SyntaxError; malformed tiles ValueError). Such a file goes to
# xraycore.io.reader.read_xray, which either reads it or says why not with a typed XrayReadError.
_PILLOW_FILE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)

_EXIF_ORIENTATION = 0x0112


def _needs_full_reader(image: Image.Image) -> bool:
    """Images the fast path would read differently from xraycore.io.reader.read_xray (and so from prediction):
    high bit depth (convert("L") would clip), alpha or palette modes, EXIF-rotated photos."""
    return image.mode not in {"L", "RGB"} or image.getexif().get(_EXIF_ORIENTATION, 1) not in (None, 1)


def decode_to_uint8(path: str, size: int) -> np.ndarray:
    """One file as a uint8 greyscale size x size array; raises xraycore.io.image.XrayReadError when the file
    cannot be used.

    Plain 8-bit grey or RGB files (nearly every training image) take a fast Pillow path: JPEGs are
    decoded at reduced scale (draft mode), several times faster than a full decode. Everything else
    (DICOM, 16-bit, alpha, EXIF rotation, and files Pillow fails on) goes through xraycore.io.reader.read_xray,
    exactly as at prediction time. Images are stretched to size x size without keeping the aspect ratio: the
    Kermany set ships already stretched that way.
    """
    grey = None
    if Path(path).suffix.lower() not in {".dcm", ".dicom"}:
        try:
            grey = _decode_with_pillow(path, size)
        except _PILLOW_FILE_ERRORS:
            grey = None
    if grey is None:
        return _decode_with_reader(path, size)
    return resize_uint8(grey, size)


def _decode_with_pillow(path: str, size: int) -> np.ndarray | None:
    """The file's grey pixels (JPEGs at reduced scale), or None when it needs the full reader."""
    with Image.open(path) as image:
        if _needs_full_reader(image):
            return None
        if image.format == "JPEG":
            image.draft("L", (size, size))
        return np.asarray(image.convert("L"), dtype=np.uint8)


def _equalize(grey: np.ndarray) -> np.ndarray:
    """Global histogram equalisation (Pillow's): films from other collections or machines differ mostly
    in exposure and contrast; equalised, their grey levels use the same range as the training films."""
    return np.asarray(ImageOps.equalize(Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8))))


def _standardize(grey: np.ndarray) -> np.ndarray:
    """Each film to the same mean and spread of grey levels (mean 128, standard deviation 60, clipped): the
    new-patient normals the bundled models call pneumonia are brighter overall than the training normals,
    while the shape of their histogram is kept (unlike equalisation)."""
    values = grey.astype(np.float32)
    spread = float(values.std()) or 1.0
    return np.clip(np.rint(128.0 + (values - float(values.mean())) * (60.0 / spread)), 0, 255).astype(np.uint8)


def _opencv() -> Any:
    try:
        import cv2  # lazy: only runs trained with CLAHE need OpenCV (the serving install has none)
    except ImportError as error:
        raise ImportError("this model normalises grey levels with CLAHE (intensity 'clahe'), which needs OpenCV: "
                          "pip install opencv-python-headless, or use the full install") from error
    return cv2


def _clahe(grey: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV's, clip 2, 8 x 8 tiles): local contrast evened
    out across films, the usual first step for chest films from different machines."""
    return _opencv().createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(np.ascontiguousarray(grey, dtype=np.uint8))


INTENSITY_NORMALISATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda grey: grey,
    "equalize": _equalize,
    "standardize": _standardize,
    "clahe": _clahe,
}


def crop_margin(grey: np.ndarray, fraction: float = 0.0) -> np.ndarray:
    """The central part of a grey image, ``fraction`` of each side cut away, resized back to the same size.

    Film corners carry text, timestamps and markers that differ between machines and collections; a
    network that can see them may learn them instead of the lungs (seen on the bundled data's new-patient
    sample: confidently wrong normals with timestamps in the corners)."""
    if fraction <= 0:
        return grey
    height, width = grey.shape[:2]
    top, left = int(round(height * fraction)), int(round(width * fraction))
    inner = np.ascontiguousarray(grey[top:height - top, left:width - left])
    return np.asarray(Image.fromarray(inner).resize((width, height), Image.Resampling.BILINEAR))


def prepare_grey(grey: np.ndarray, intensity: str = "none", margin: float = 0.0) -> np.ndarray:
    """A run's preprocessing of a uint8 grey image at its load size, the same at training and prediction."""
    return normalise_intensity(crop_margin(grey, margin), intensity)


def require_intensity(method: str) -> str:
    """``method`` if this install can apply it; a clear error when a model is loaded, not at its first image."""
    if method not in INTENSITY_NORMALISATIONS:
        raise ValueError(f"unknown intensity normalisation {method!r}; known: {', '.join(INTENSITY_NORMALISATIONS)}")
    if method == "clahe":
        _opencv()
    return method


def normalise_intensity(grey: np.ndarray, method: str = "none") -> np.ndarray:
    """uint8 grey image → the same after the run's intensity normalisation (training and prediction alike)."""
    try:
        return INTENSITY_NORMALISATIONS[method](grey)
    except KeyError:
        raise ValueError(f"unknown intensity normalisation {method!r}; known: {', '.join(INTENSITY_NORMALISATIONS)}") from None


def _decode_with_reader(path: str, size: int) -> np.ndarray:
    from xraycore.io.image import to_uint8  # lazy: only the unusual files need them
    from xraycore.io.reader import read_xray

    return resize_uint8(to_uint8(read_xray(path).pixels), size)

def resize_uint8(grey: np.ndarray, size: int) -> np.ndarray:
    """A uint8 greyscale image stretched to size x size (aspect ratio not kept, as in the Kermany set).

    Shared with the predictor so training and prediction resize identically.
    """
    if grey.shape == (size, size):
        return grey
    return np.asarray(Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


# IJG's base luminance quantisation table (JPEG standard, Annex K), row by row as Pillow reports it.
_IJG_LUMINANCE = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
                           14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
                           18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_IJG_LUMINANCE * scale + 50) // 100, 1, 255)


def stored_jpeg_quality(paths: Sequence[str], size: int, sample: int = 20) -> int | None:
    """The JPEG quality training images were saved at, when they are JPEGs already at the network's
    load size (as Kaggle's 224 px Kermany copies are, at quality 75); None otherwise.

    Such images carry the low-pass look of their compression, and a model learns it: a sharp
    full-resolution scan resized for prediction looks out of domain to it. The predictor re-encodes
    its input at this quality to close that gap (see :func:`match_stored_encoding`).
    """
    qualities = []
    for path in list(paths)[:: max(1, len(paths) // sample)][:sample]:
        try:
            with Image.open(path) as image:
                if image.format != "JPEG" or image.size != (size, size) or 0 not in image.quantization:
                    return None
                table = np.array(list(image.quantization[0]))
        except OSError:
            continue
        qualities.append(min(range(1, 101), key=lambda q: int(np.abs(_ijg_table(q) - table).sum())))
    if not qualities or len(set(qualities)) > 1:
        return None
    return qualities[0]


def match_stored_encoding(grey: np.ndarray, jpeg_quality: int | None) -> np.ndarray:
    """A uint8 image passed through the JPEG encoding the training images were stored with (or unchanged)."""
    if not jpeg_quality:
        return grey
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=int(jpeg_quality))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def fit_within(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """A grey image shrunk (aspect kept) so its longer side is at most ``max_side``; unchanged if it fits."""
    height, width = pixels.shape[:2]
    if max(height, width) <= max_side:
        return pixels
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(np.asarray(pixels, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR))


def network_input(grey: np.ndarray, size: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """uint8 grey (H, W) -> float32 (3, size, size), the numbers ``dataset.to_network_input`` gives training's
    validation images (same resize, same float32 operations), without torch: both inference backends use it."""
    grey = np.asarray(grey, dtype=np.uint8).reshape(np.shape(grey)[-2:])
    if size and grey.shape != (size, size):
        grey = resize_like_torch(grey, size)
    scaled = grey.astype(np.float32) / np.float32(255.0)
    mean_array = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std_array = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (scaled[None] - mean_array) / std_array


def resize_like_torch(grey: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) -> (size, size) exactly as torchvision's antialiased bilinear resize of a uint8 tensor
    (integer weights at PyTorch's precision, width first): Pillow's differs by a grey level here and there."""
    if grey.shape[1] != size:
        grey = _resize_rows(grey, size)
    if grey.shape[0] != size:
        grey = _resize_rows(grey.T, size).T
    return np.ascontiguousarray(grey)


def _resize_rows(grey: np.ndarray, size: int) -> np.ndarray:
    weights, precision = _antialias_weights(grey.shape[1], size)
    # float64 products of integers stay exact here (< 2**53): BLAS speed, integer results
    summed = (grey.astype(np.float64) @ weights.T).astype(np.int64) + (1 << (precision - 1))
    return np.clip(summed >> precision, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _antialias_weights(n_in: int, n_out: int) -> tuple[np.ndarray, int]:
    """PyTorch's uint8 antialiased bilinear weights (UpSampleKernel.cpp) as an (n_out, n_in) integer matrix."""
    scale = n_in / n_out
    support, invscale = (scale, 1.0 / scale) if scale >= 1.0 else (1.0, 1.0)
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)
        start = max(int(centre - support + 0.5), 0)
        count = min(int(centre + support + 0.5), n_in) - start
        row = np.clip(1.0 - np.abs((np.arange(count) + start - centre + 0.5) * invscale), 0.0, None)
        matrix[i, start:start + count] = row / row.sum() if row.sum() else row
    precision = 0
    while precision < 22 and int(0.5 + matrix.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = matrix * (1 << precision)
    return np.where(scaled < 0, scaled - 0.5, scaled + 0.5).astype(np.int16).astype(np.float64), precision
