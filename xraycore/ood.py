"""Out-of-domain scoring: is this image like the ones the model was trained on?

Mahalanobis distances with shrunk (Ledoit-Wolf) covariances fitted on the training images, one per
feature block: the pre-logit features and, where the backbone's registry entry names them, pooled
(mean and standard deviation per channel) activations of intermediate layers. Early layers see what a
fine-tuned head has learnt to ignore: another hospital's detector, exposure and anatomy (adult chests).
Each block's distance is divided by its median on held-out validation images and the quotients of the
blocks the registry scores (``BackboneSpec.ood_scored``; by default every block) are summed; the flag
threshold is a high quantile of that sum on validation, so by construction about ``1 - quantile`` of
in-domain images are flagged. Measured on the bundled model in its card.
Pure numpy (scikit-learn only to fit): the caller extracts the features (``models.OodFeatures`` or the
exported graph's ``features`` output).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class _Block:
    mean: np.ndarray  # (d,)
    precision: np.ndarray  # (d, d) inverse covariance (float32 as stored)
    scale: float  # median distance of held-out in-domain images

    def distance(self, features: np.ndarray) -> np.ndarray:
        # float32 (as stored) in a matrix product: 6x less than float64, and einsum's loop was 10x slower still
        # (1280 pre-logit features); the distances agree to ~1e-7.
        centred = (np.asarray(features, dtype=np.float64) - self.mean).astype(np.float32)
        precision = self.precision if self.precision.dtype == np.float32 else self.precision.astype(np.float32)
        return np.sqrt(np.maximum(np.sum((centred @ precision) * centred, axis=-1, dtype=np.float64), 0.0))


@dataclass(frozen=True)
class OodModel:
    blocks: tuple[_Block, ...]
    threshold: float  # scores above this are out of domain
    quantile: float
    scored: tuple[int, ...] | None = None  # indices of the blocks the score sums; None: every block

    @property
    def widths(self) -> list[int]:
        return [block.mean.size for block in self.blocks]

    def with_scored_blocks(self, heldout_features: np.ndarray, scored: Sequence[int] | None) -> "OodModel":
        """The same fitted blocks, scoring only ``scored`` (None: all), the threshold re-fitted on held-out
        in-domain features at the same quantile."""
        if scored is not None and (not scored or not set(scored) <= set(range(len(self.blocks)))):
            raise ValueError(f"scored blocks {list(scored)} are not a non-empty subset of 0..{len(self.blocks) - 1}")
        chosen = OodModel(self.blocks, float("inf"), self.quantile, None if scored is None else tuple(sorted(scored)))
        return replace(chosen, threshold=float(np.quantile(chosen.score(heldout_features), self.quantile)))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Summed, validation-scaled distances of the scored blocks, for each row of ``features`` (n, sum of block
        widths)."""
        features = np.asarray(features, dtype=np.float64)
        if features.shape[-1] < sum(self.widths):
            raise ValueError(f"expected {sum(self.widths)} features per image, got {features.shape[-1]}")
        # A detector fitted on fewer blocks (an older model: pre-logit features only) reads the last ones:
        # the pre-logit features always come last.
        features = features[..., features.shape[-1] - sum(self.widths):]
        parts = np.split(features, np.cumsum(self.widths)[:-1], axis=-1)
        counted = range(len(self.blocks)) if self.scored is None else self.scored
        return np.sum([self.blocks[i].distance(parts[i]) / self.blocks[i].scale for i in counted], axis=0)

    def is_out_of_domain(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"threshold": np.array([self.threshold]), "quantile": np.array([self.quantile]),
                  "scales": np.array([block.scale for block in self.blocks])}
        if self.scored is not None:
            arrays["scored"] = np.array(self.scored, dtype=np.int64)
        for i, block in enumerate(self.blocks):
            arrays[f"mean.{i}"] = block.mean.astype(np.float32)
            # Symmetric: its upper triangle is all there is to store (half the bytes of a bundled model's detector).
            arrays[f"precision_upper.{i}"] = block.precision[np.triu_indices(block.mean.size)].astype(np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "OodModel":
        """Also reads the single-block files of earlier versions (keys mean / precision, raw distance) and the
        multi-block files written before blocks could be left out of the score (no "scored": every block)."""
        if "mean" in arrays:
            block = _Block(np.asarray(arrays["mean"], np.float64), np.asarray(arrays["precision"], np.float32), 1.0)
            return cls((block,), float(np.ravel(arrays["threshold"])[0]), float(np.ravel(arrays["quantile"])[0]))
        scales = np.ravel(arrays["scales"])
        blocks = tuple(_Block(np.asarray(arrays[f"mean.{i}"], np.float64), _precision(arrays, i).astype(np.float32),
                              float(scales[i])) for i in range(scales.size))
        scored = tuple(int(i) for i in np.ravel(arrays["scored"])) if "scored" in arrays else None
        return cls(blocks, float(np.ravel(arrays["threshold"])[0]), float(np.ravel(arrays["quantile"])[0]), scored)


def _precision(arrays: dict[str, np.ndarray], index: int) -> np.ndarray:
    """Block ``index``'s precision matrix, stored whole (earlier files) or as its upper triangle."""
    if f"precision.{index}" in arrays:
        return np.asarray(arrays[f"precision.{index}"], np.float64)
    upper = np.asarray(arrays[f"precision_upper.{index}"], np.float64)
    size = int(round((np.sqrt(8 * upper.size + 1) - 1) / 2))
    matrix = np.zeros((size, size))
    matrix[np.triu_indices(size)] = upper
    return matrix + np.triu(matrix, 1).T


def fit_ood(train_features: np.ndarray, heldout_features: np.ndarray, quantile: float = 0.99,
            widths: list[int] | None = None, scored: Sequence[int] | None = None) -> OodModel:
    """Fit one block per ``widths`` (default: one block of every column) on training features; scale and
    threshold on held-out in-domain features. ``scored``: the blocks the score sums (None: all)."""
    from sklearn.covariance import LedoitWolf  # lazy: serving only scores

    train_features = np.asarray(train_features, dtype=np.float64)
    heldout_features = np.asarray(heldout_features, dtype=np.float64)
    widths = list(widths or [train_features.shape[1]])
    if sum(widths) != train_features.shape[1]:
        raise ValueError(f"block widths {widths} do not add up to {train_features.shape[1]} features")
    cuts = np.cumsum(widths)[:-1]
    blocks = []
    for train_part, heldout_part in zip(np.split(train_features, cuts, axis=1), np.split(heldout_features, cuts, axis=1)):
        estimator = LedoitWolf().fit(train_part)
        unscaled = _Block(estimator.location_, estimator.precision_.astype(np.float32), 1.0)
        scale = max(float(np.median(unscaled.distance(heldout_part))), 1e-12)
        blocks.append(_Block(unscaled.mean, unscaled.precision, scale))
    return OodModel(tuple(blocks), float("inf"), quantile).with_scored_blocks(heldout_features, scored)
