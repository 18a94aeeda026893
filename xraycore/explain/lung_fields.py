"""A lung-field estimate from the film's intensities alone: no weights, no model hub, no torch, no scipy.

Why it exists: a heat map is trusted when it lies on the lungs, and no lung-segmentation weights ship in a
wheel we can use. So the lungs are found the way a radiologist's eye first finds them: the two large dark
regions inside the brighter body, one on each side of the bright mediastinum (the midline column of the
spine and heart), roughly side by side. Steps, at 128 px a side: contrast from the 1st to 99th percentile;
a light blur; the dark/bright cut (Otsu) taken in the film's central window, where the air outside the body
rarely is; a morphological opening that cuts thin dark bridges (armpits, the air around the neck); dark
components that run along the image border (the air outside the body) dropped; the largest plausible
component on each side of the midline (one component that crosses it is split there); each closed and its
holes filled (a consolidation inside a lung stays in its field). The result is checked for being two
lungs (both present, similar sizes, side by side) and is otherwise ``None`` with the reason in words.

Numpy and Pillow only, so the reading-room install (no scipy) has it. Its accuracy, checked by eye on real
films, is in docs/heat-maps.md. The heat map itself is never masked with it: that would hide a shortcut.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

WORK_SIDE = 128  # the estimate is made at this size and resized back: lung fields are large and smooth
MIN_LUNG_SHARE = 0.03  # each lung covers at least this share of the image
MAX_LUNGS_SHARE = 0.70  # both together cover at most this share (more: the cut found the background)
MIN_SIZE_RATIO = 0.25  # the smaller lung is at least this fraction of the larger
MIN_LUNG_HEIGHT = 0.3  # each lung spans at least this share of the image's height
MIN_MEDIASTINUM_CONTRAST = 30  # grey levels (of 255) the midline is brighter than the lungs: 34 or more on 176 films


@dataclass
class LungFields:
    """The estimate for one film: ``mask`` (bool, the film's shape) or None, and why none was found."""

    mask: np.ndarray | None
    reason: str | None = None  # set when mask is None: one plain sentence
    area_share: float | None = None  # the share of the image the lung fields cover

    @property
    def found(self) -> bool:
        return self.mask is not None


def _not_found(reason: str) -> LungFields:
    return LungFields(None, reason)


def estimate_lung_fields(image: np.ndarray) -> LungFields:
    """The two lung fields of a frontal chest film (grey or RGB, any size, uint8 or float in [0, 1])."""
    grey = np.asarray(image, dtype=np.float32)
    if grey.ndim == 3:
        grey = grey[..., :3].mean(axis=2)
    if grey.ndim != 2 or min(grey.shape) < 16:
        return _not_found("the image is too small to find lung fields in")
    small = np.array(Image.fromarray(grey).resize((WORK_SIDE, WORK_SIDE), Image.BILINEAR))
    low, high = np.percentile(small, [1, 99])
    if high - low < 1e-3 * max(1.0, float(np.abs(small).max())):
        return _not_found("the image is flat: no lung fields to find")
    scaled = np.uint8(np.round(255 * np.clip((small - low) / (high - low), 0, 1)))
    smooth = np.asarray(Image.fromarray(scaled).filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)
    midline = _midline(smooth)
    prior = _thorax_prior(smooth, midline)
    if prior is None:
        return _not_found("no body found across the image: not a chest film")
    cut = _otsu(smooth[prior])
    air = _morph(_touching_border(smooth < cut / 2), 5, True)  # the air outside the body, and its edge
    dark = _open((smooth < cut) & prior & ~air, 5)
    lungs = _pick_lungs(_components(dark), midline)
    if isinstance(lungs, str):
        return _not_found(lungs)
    left, right = (_fill_holes(_close(lung, 7)) & prior for lung in lungs)
    problem = _implausible(left, right) or _no_mediastinum(smooth, left | right, midline)
    if problem:
        return _not_found(problem)
    work_mask = left | right
    mask = np.array(Image.fromarray(np.uint8(work_mask) * 255).resize(grey.shape[::-1], Image.NEAREST)) > 127
    return LungFields(mask, None, float(mask.mean()))


def _otsu(values: np.ndarray) -> float:
    """The grey level (0-255) that best splits ``values`` in two (Otsu's between-class variance)."""
    histogram = np.bincount(np.clip(values.astype(np.int64).ravel(), 0, 255), minlength=256).astype(np.float64)
    levels = np.arange(256)
    weight = np.cumsum(histogram)
    total = weight[-1]
    mean = np.cumsum(histogram * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    return float(np.nanargmax(np.where(np.isfinite(between), between, np.nan)) + 0.5)


def _morph(mask: np.ndarray, size: int, grow: bool) -> np.ndarray:
    """A square dilation (``grow``) or erosion of a boolean mask with Pillow's rank filters."""
    picture = Image.fromarray(np.uint8(mask) * 255)
    return np.asarray(picture.filter(ImageFilter.MaxFilter(size) if grow else ImageFilter.MinFilter(size))) > 127


def _open(mask: np.ndarray, size: int) -> np.ndarray:
    return _morph(_morph(mask, size, False), size, True)


def _close(mask: np.ndarray, size: int) -> np.ndarray:
    padded = np.pad(mask, size)  # so the closing does not weld a lung to the image edge
    return _morph(_morph(padded, size, True), size, False)[size:-size, size:-size] | mask


def _components(mask: np.ndarray) -> np.ndarray:
    """4-connected labels (0: background), with no scipy: each pixel takes the largest label among its
    neighbours, then follows that label's own pixel (pointer jumping), until nothing changes; a few dozen
    vectorised steps at 128 px."""
    flat_index = np.arange(1, mask.size + 1).reshape(mask.shape)
    labels = np.where(mask, flat_index, 0)
    while True:
        grown = labels.copy()
        grown[1:, :] = np.maximum(grown[1:, :], labels[:-1, :])
        grown[:-1, :] = np.maximum(grown[:-1, :], labels[1:, :])
        grown[:, 1:] = np.maximum(grown[:, 1:], labels[:, :-1])
        grown[:, :-1] = np.maximum(grown[:, :-1], labels[:, 1:])
        grown = np.where(mask, grown, 0)
        flat = grown.ravel()
        for _ in range(4):  # a label names a pixel; that pixel may already carry a larger one
            flat = np.where(flat > 0, np.maximum(flat, flat[np.maximum(flat - 1, 0)]), 0)
        grown = flat.reshape(mask.shape)
        if np.array_equal(grown, labels):
            return labels
        labels = grown


def _touching_border(mask: np.ndarray) -> np.ndarray:
    """The parts of a mask connected to the image border."""
    labels = _components(mask)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region it encloses filled: what the outside, grown from the border, cannot reach."""
    outside = np.pad(~mask, 1, constant_values=True)
    labels = _components(outside)
    return mask | (labels[1:-1, 1:-1] != labels[0, 0])


def _midline(smooth: np.ndarray) -> int:
    """The column of the mediastinum: the brightest column of the central rows within the middle 40%."""
    side = smooth.shape[1]
    rows = smooth[side // 5: 4 * side // 5]
    lo, hi = int(0.3 * side), int(0.7 * side)
    profile = rows[:, lo:hi].mean(axis=0)
    profile = np.convolve(profile, np.ones(5) / 5, mode="same")
    return lo + int(np.argmax(profile))


def _thorax_prior(smooth: np.ndarray, midline: int) -> np.ndarray | None:
    """Where lungs may be: a rounded box on each side of the midline, from the body's edge (the first column,
    from the image edge in, as bright as the body's columns are) to the mediastinum, 6% to 92% of the height."""
    side = smooth.shape[1]
    columns = smooth[side // 5: 4 * side // 5].mean(axis=0)
    body_level = 0.7 * float(np.median(columns[side // 4: 3 * side // 4]))
    inside = np.flatnonzero(columns > body_level)
    if inside.size < side // 3:
        return None
    left_edge, right_edge = int(inside[0]), int(inside[-1])
    if not left_edge < midline < right_edge:
        return None
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    y = (rows - 0.49 * side) / (0.43 * side)
    prior = np.zeros((side, side), dtype=bool)
    margin = 0.03 * side  # the skin and the soft tissue outside the ribs
    for start, stop in ((left_edge + margin, midline - margin), (midline + margin, right_edge - margin)):
        x = (cols - (start + stop) / 2) / max(1.0, (stop - start) / 2)
        medial = x > 0 if start < midline else x < 0
        taper = np.where((y < 0) & ~medial, x ** 2 + y ** 2, x ** 4 + y ** 4)  # the apex: no shoulder, no axilla
        prior |= taper <= 1
    return prior


def _pick_lungs(labels: np.ndarray, midline: int) -> tuple[np.ndarray, np.ndarray] | str:
    """The largest plausible dark component on each side of the midline (image left, image right), or why not."""
    side = labels.shape[0]
    best: dict[str, np.ndarray] = {}
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    for index in ids[np.argsort(-sizes)]:
        component = labels == index
        if component.sum() < MIN_LUNG_SHARE * component.size / 2:
            continue
        columns = np.zeros_like(component)
        columns[:, :midline] = True
        for name, part in (("left", component & columns), ("right", component & ~columns)):
            rows = np.flatnonzero(part.any(axis=1))
            if part.sum() < MIN_LUNG_SHARE * part.size / 2 or not 0.12 * side < rows.mean() < 0.85 * side:
                continue
            if name not in best or part.sum() > best[name].sum():
                best[name] = part
    if not best:
        return "no dark lung-like regions inside the body: not a frontal chest film, or the lungs are white-out"
    if len(best) == 1:
        return f"only one lung field found (the {next(iter(best))} side of the image)"
    return best["left"], best["right"]


def _implausible(left: np.ndarray, right: np.ndarray) -> str | None:
    """Why two regions are not a pair of lung fields, or None when they may be."""
    side = left.shape[0]
    areas = np.array([left.sum(), right.sum()], dtype=np.float64) / left.size
    if areas.min() < MIN_LUNG_SHARE:
        return "one lung field is too small to trust"
    if areas.sum() > MAX_LUNGS_SHARE:
        return "the dark region is too large to be lungs (the background or an unusual exposure)"
    if areas.min() / areas.max() < MIN_SIZE_RATIO:
        return "the two lung fields differ too much in size to trust"
    spans = [np.flatnonzero(part.any(axis=1)) for part in (left, right)]
    for part, rows in zip((left, right), spans):
        if np.ptp(rows) + 1 < MIN_LUNG_HEIGHT * side:
            return "a dark region is too short to be a lung"
    overlap = min(spans[0].max(), spans[1].max()) - max(spans[0].min(), spans[1].min())
    shorter = min(np.ptp(spans[0]), np.ptp(spans[1]))
    if overlap < 0.5 * shorter or abs(spans[0].mean() - spans[1].mean()) > 0.2 * side:
        return "the two dark regions are not side by side as lungs are"
    return None


def _no_mediastinum(smooth: np.ndarray, lungs: np.ndarray, midline: int) -> str | None:
    """Why the midline between the two regions is no mediastinum (not brighter than them), or None."""
    rows = np.flatnonzero(lungs.any(axis=1))
    strip = smooth[rows.min():rows.max() + 1, max(0, midline - 4):midline + 5]
    if strip.mean() - smooth[lungs].mean() < MIN_MEDIASTINUM_CONTRAST:
        return "no bright mediastinum between the two dark regions: not a frontal chest film"
    return None


def lung_share(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """The share of a heat map's mass (any size, non-negative) that lies on the lung fields; None for an empty map."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != mask.shape:
        heat = np.array(Image.fromarray(heat).resize(mask.shape[::-1], Image.BILINEAR))
    heat = np.maximum(heat, 0)
    total = float(heat.sum())
    return None if total <= 0 else float(heat[mask].sum() / total)


def lung_boxes(mask: np.ndarray) -> np.ndarray:
    """The bounding box of each side's lung field, as a mask of the same shape: the region of the pointing game's
    expert lung boxes (issue 33), which takes in the hila and the bases that the field's own outline leaves out."""
    boxes, half = np.zeros_like(mask, dtype=bool), mask.shape[1] // 2
    for low, high in ((0, half), (half, mask.shape[1])):
        rows, cols = np.nonzero(mask[:, low:high])
        if rows.size:
            boxes[rows.min():rows.max() + 1, low + cols.min():low + cols.max() + 1] = True
    return boxes


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The mask's boundary pixels (``width`` thick): the lung outline drawn over an overlay."""
    return mask & ~_morph(mask, 2 * width + 1, False)


def draw_outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 overlay with the lung-field outline drawn on it (mask resized to fit)."""
    picture = np.array(rgb, copy=True)
    if mask.shape != picture.shape[:2]:
        mask = np.array(Image.fromarray(np.uint8(mask) * 255).resize(picture.shape[1::-1], Image.NEAREST)) > 127
    picture[outline(mask, max(1, round(max(mask.shape) / 300)))] = colour
    return picture
