"""Where on a film a heat map's mass lies: the outer band and the corners, numpy only.

One definition, shared by the shortcut report that measures the mass there (:mod:`xraycore.evaluation.shortcuts`)
and the training penalty that keeps it small (:func:`xraycore.training.adaptation.band_share`). Markers, printed
text and collimator edges sit in these regions; the lungs do not. :func:`body_grey` is the grey a region is
blanked with, by the shortcut report's occlusion probes and by the same band probe on cached adaptation views
(:func:`xraycore.training.adaptation.band_blanked`).
"""
from __future__ import annotations

import numpy as np

BAND_FRACTION = 0.10  # the outer band: 10% of each side, where markers, text and collimator edges sit
CORNER_FRACTION = 0.15  # each corner square: 15% of each side, where the text and the side marker sit


def band_mask(shape: tuple[int, int], fraction: float = BAND_FRACTION) -> np.ndarray:
    """True in the outer ``fraction`` of each side of an image of ``shape``."""
    height, width = shape
    rows, cols = max(1, round(height * fraction)), max(1, round(width * fraction))
    mask = np.ones(shape, dtype=bool)
    mask[rows:height - rows, cols:width - cols] = False
    return mask


def corner_mask(shape: tuple[int, int], fraction: float = CORNER_FRACTION) -> np.ndarray:
    """True in the four corner squares (``fraction`` of each side)."""
    height, width = shape
    rows, cols = max(1, round(height * fraction)), max(1, round(width * fraction))
    mask = np.zeros(shape, dtype=bool)
    for row_slice in (slice(0, rows), slice(height - rows, height)):
        for col_slice in (slice(0, cols), slice(width - cols, width)):
            mask[row_slice, col_slice] = True
    return mask


def body_grey(grey: np.ndarray) -> float:
    """The body's median grey: the median of the film's central window (the middle 60% of each side), where the
    body almost always is and the air outside it rarely. The grey a blanked region is filled with."""
    height, width = grey.shape[-2:]
    return float(np.median(grey[..., int(0.2 * height):int(0.8 * height), int(0.2 * width):int(0.8 * width)]))
