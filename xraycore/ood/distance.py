"""Out-of-domain scoring: is this image like the ones the model was trained on?

Mahalanobis distances with shrunk (Ledoit-Wolf) covariances fitted on the training images, one per
feature block: the pre-logit features and, where the backbone's registry entry names them, pooled
(mean and standard deviation per channel) activations of intermediate layers. Early layers see what a
fine-tuned head has learnt to ignore: another hospital's detector, exposure and anatomy (adult chests).
Each block's distance is divided by its median on held-out validation images and the quotients of the
blocks the registry scores (``BackboneSpec.ood_scored``; by default every block) are summed; the flag
threshold is a high quantile of that sum on validation, so by construction about ``1 - quantile`` of
in-domain images are flagged. Measured on the bundled model in its card.

A distance only knows the training images. Where films from elsewhere are at hand (adults, other hospitals),
``fit_discriminator`` adds a linear classifier of training images against them over the same standardised
features ("outlier exposure", Hendrycks et al. 2019); an image is flagged when either check says so
(``OodModel.ratio``). Its threshold is a high quantile of its logit on held-out in-domain images, so it adds few
flags at home.
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
class DomainDiscriminator:
    """Logistic regression of "from elsewhere" against the training images, over standardised features."""
    mean: np.ndarray  # (d,) standardisation, fitted on the in-domain images
    scale: np.ndarray  # (d,)
    weights: np.ndarray  # (d,)
    bias: float
    threshold: float  # logits above this are out of domain
    spread: float  # standard deviation of the logit on held-out in-domain images: the ratio's unit
    quantile: float

    def logit(self, features: np.ndarray) -> np.ndarray:
        standardised = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return standardised @ self.weights + self.bias

    def ratio(self, features: np.ndarray) -> np.ndarray:
        """1 at the threshold, one more per held-out spread above it, never below 0: on the scale of
        the distance check's ratio, so the larger of the two can be taken and averaged over an ensemble's members."""
        return np.maximum(1.0 + (self.logit(features) - self.threshold) / self.spread, 0.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"discriminator.mean": self.mean.astype(np.float32),
                "discriminator.scale": self.scale.astype(np.float32),
                "discriminator.weights": self.weights.astype(np.float32),
                "discriminator.scalars": np.array([self.bias, self.threshold, self.spread, self.quantile])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "DomainDiscriminator | None":
        if "discriminator.weights" not in arrays:
            return None
        bias, threshold, spread, quantile = (float(v) for v in np.ravel(arrays["discriminator.scalars"]))
        return cls(*(np.asarray(arrays[f"discriminator.{key}"], np.float64) for key in ("mean", "scale", "weights")),
                   bias, threshold, spread, quantile)


@dataclass(frozen=True)
class OodModel:
    blocks: tuple[_Block, ...]
    threshold: float  # scores above this are out of domain
    quantile: float
    scored: tuple[int, ...] | None = None  # indices of the blocks the score sums; None: every block
    discriminator: DomainDiscriminator | None = None  # fitted on films from elsewhere, when any were given

    @property
    def widths(self) -> list[int]:
        return [block.mean.size for block in self.blocks]

    def with_scored_blocks(self, heldout_features: np.ndarray, scored: Sequence[int] | None) -> "OodModel":
        """The same fitted blocks, scoring only ``scored`` (None: all), the threshold re-fitted on held-out
        in-domain features at the same quantile."""
        if scored is not None and (not scored or not set(scored) <= set(range(len(self.blocks)))):
            raise ValueError(f"scored blocks {list(scored)} are not a non-empty subset of 0..{len(self.blocks) - 1}")
        missing = [i for i in (scored if scored is not None else range(len(self.blocks)))
                   if self.blocks[i].precision.shape != (self.blocks[i].mean.size,) * 2]
        if missing:
            raise ValueError(f"blocks {missing} were stored without their precision (left out of the score): "
                             "fit the detector again to score them")
        chosen = OodModel(self.blocks, float("inf"), self.quantile, None if scored is None else tuple(sorted(scored)),
                          self.discriminator)
        return replace(chosen, threshold=float(np.quantile(chosen.score(heldout_features), self.quantile)))

    def with_discriminator(self, discriminator: DomainDiscriminator | None) -> "OodModel":
        if discriminator is not None and discriminator.mean.size != sum(self.widths):
            raise ValueError(f"the discriminator reads {discriminator.mean.size} features, "
                             f"the detector {sum(self.widths)}")
        return replace(self, discriminator=discriminator)

    def own_features(self, features: np.ndarray) -> np.ndarray:
        """The columns this detector reads: a detector fitted on fewer blocks (an older model: pre-logit features
        only) reads the last ones, as the pre-logit features always come last."""
        features = np.asarray(features, dtype=np.float64)
        if features.shape[-1] < sum(self.widths):
            raise ValueError(f"expected {sum(self.widths)} features per image, got {features.shape[-1]}")
        return features[..., features.shape[-1] - sum(self.widths):]

    def score(self, features: np.ndarray) -> np.ndarray:
        """Summed, validation-scaled distances of the scored blocks, for each row of ``features`` (n, sum of block
        widths)."""
        parts = np.split(self.own_features(features), np.cumsum(self.widths)[:-1], axis=-1)
        counted = range(len(self.blocks)) if self.scored is None else self.scored
        return np.sum([self.blocks[i].distance(parts[i]) / self.blocks[i].scale for i in counted], axis=0)

    def ratio(self, features: np.ndarray) -> np.ndarray:
        """How far out of domain, in units of the flag threshold (> 1: flagged): the distance over its threshold,
        or the discriminator's ratio where it is larger."""
        distance = self.score(features) / self.threshold
        if self.discriminator is None:
            return distance
        return np.maximum(distance, self.discriminator.ratio(self.own_features(features)))

    def is_out_of_domain(self, features: np.ndarray) -> np.ndarray:
        return self.ratio(features) > 1.0

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"threshold": np.array([self.threshold]), "quantile": np.array([self.quantile]),
                  "scales": np.array([block.scale for block in self.blocks])}
        if self.scored is not None:
            arrays["scored"] = np.array(self.scored, dtype=np.int64)
        for i, block in enumerate(self.blocks):
            arrays[f"mean.{i}"] = block.mean.astype(np.float32)
            if self.scored is not None and i not in self.scored:
                continue  # a block the score leaves out needs no precision: 3.3 MB for 1280 pre-logit features
            # Symmetric: its upper triangle is all there is to store (half the bytes of a bundled model's detector).
            arrays[f"precision_upper.{i}"] = block.precision[np.triu_indices(block.mean.size)].astype(np.float32)
        if self.discriminator is not None:
            arrays.update(self.discriminator.to_arrays())
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "OodModel":
        """Also reads the single-block files of earlier versions (keys mean / precision, raw distance), the
        multi-block files written before blocks could be left out of the score (no "scored": every block) and
        files without a discriminator."""
        if "mean" in arrays:
            block = _Block(np.asarray(arrays["mean"], np.float64), np.asarray(arrays["precision"], np.float32), 1.0)
            return cls((block,), float(np.ravel(arrays["threshold"])[0]), float(np.ravel(arrays["quantile"])[0]))
        scales = np.ravel(arrays["scales"])
        blocks = tuple(_Block(np.asarray(arrays[f"mean.{i}"], np.float64), _precision(arrays, i).astype(np.float32),
                              float(scales[i])) for i in range(scales.size))
        scored = tuple(int(i) for i in np.ravel(arrays["scored"])) if "scored" in arrays else None
        return cls(blocks, float(np.ravel(arrays["threshold"])[0]), float(np.ravel(arrays["quantile"])[0]), scored,
                   DomainDiscriminator.from_arrays(arrays))


def _precision(arrays: dict[str, np.ndarray], index: int) -> np.ndarray:
    """Block ``index``'s precision matrix, stored whole (earlier files) or as its upper triangle; empty (0, 0) for a
    block the score leaves out, whose precision is not stored."""
    if f"precision.{index}" not in arrays and f"precision_upper.{index}" not in arrays:
        scored = np.ravel(arrays.get("scored", np.arange(index + 1)))
        if index in scored:
            raise KeyError(f"precision_upper.{index}")
        return np.zeros((0, 0))
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


def fit_discriminator(inlier_features: np.ndarray, outlier_features: np.ndarray, heldout_features: np.ndarray,
                      quantile: float = 0.999, strength: float = 0.01) -> DomainDiscriminator:
    """Training images (and processed copies of them) against films from elsewhere; the threshold is the
    ``quantile`` of the logit on held-out in-domain images. ``strength``: inverse L2 penalty (scikit-learn's C),
    small so that many weak cues (anatomy, exposure) count rather than one source's quirk."""
    from sklearn.linear_model import LogisticRegression  # lazy: serving only scores

    inliers = np.asarray(inlier_features, dtype=np.float64)
    outliers = np.asarray(outlier_features, dtype=np.float64)
    if len(inliers) < 2 or len(outliers) < 2:
        raise ValueError("the discriminator needs at least two in-domain and two outlier images")
    mean, scale = inliers.mean(axis=0), inliers.std(axis=0) + 1e-6
    fitted = LogisticRegression(C=strength, max_iter=5000, class_weight="balanced").fit(
        (np.concatenate([inliers, outliers]) - mean) / scale, np.r_[np.zeros(len(inliers)), np.ones(len(outliers))])
    unthresholded = DomainDiscriminator(mean, scale, fitted.coef_.ravel().astype(np.float64),
                                        float(fitted.intercept_[0]), 0.0, 1.0, quantile)
    heldout = unthresholded.logit(heldout_features)
    return replace(unthresholded, threshold=float(np.quantile(heldout, quantile)),
                   spread=max(float(np.std(heldout)), 1e-6))
