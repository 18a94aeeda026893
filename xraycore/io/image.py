"""The image every reader returns, its one typed error, and the pixel steps every file format shares.

A module of its own so that the PNG/JPEG reader (:mod:`xraycore.io.reader`) and the DICOM reader
(:mod:`xraycore.io.dicom`) share the result type, the limits and the last steps (size check, stretch onto
[0, 1], blank-image refusal, the colour-photo warning) without either importing the other's private helpers:
the reader imports the DICOM module when a DICOM arrives, and both import this one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
from PIL import Image

MAX_PIXELS: int = 50_000_000
"""Images with more pixels are refused before any decoding (decompression-bomb guard)."""
MIN_SIDE: int = 32
"""Images narrower or shorter than this carry too little detail to assess."""
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

FRONTAL_VIEWS = ("PA", "AP")
"""View Position values of a frontal film, compared with when no intended use names the views."""
CHEST_BODY_PARTS = ("CHEST",)
"""Body Part Examined values of a chest film (dicom.dicom_guards also accepts some vendors' synonyms)."""

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
    frames, compression and dicom_guards (yes/no flags, see :func:`xraycore.io.dicom.dicom_guards`).
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


def check_dimensions(width: int, height: int, max_pixels: int) -> None:
    """Refuse an image too large to decode safely or too small to assess, before its pixels are decoded."""
    if width * height > max_pixels:
        raise XrayReadError("too_large", f"The image is too large to open safely: {width} × {height} pixels, "
                                         f"the limit is {max_pixels / 1e6:g} million. Please export a smaller copy.")
    if min(width, height) < MIN_SIDE:
        raise XrayReadError("too_small", f"The image is only {width} × {height} pixels; at least {MIN_SIDE} "
                                         "pixels on each side are needed. Is this a thumbnail or an icon?")


def finish_image(pixels: np.ndarray, metadata: dict[str, Any]) -> XrayImage:
    """Shared last step: refuse blank images, clip, record size and the colour-photo warning."""
    if float(pixels.max()) - float(pixels.min()) < MIN_CONTRAST:
        raise XrayReadError("constant", "The image is blank: every pixel has (almost) the same brightness, "
                                        "so there is nothing to analyse.")
    np.clip(pixels, 0.0, 1.0, out=pixels)
    metadata["height"], metadata["width"] = (int(side) for side in pixels.shape)
    if looks_like_colour_photo(metadata):
        metadata["warnings"].append(COLOUR_PHOTO_WARNING)
    return XrayImage(pixels=np.ascontiguousarray(pixels, dtype=np.float32), metadata=metadata)


def stretch_to_unit(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
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
