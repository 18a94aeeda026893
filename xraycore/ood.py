"""Out-of-domain scoring: is this image like the ones the model was trained on?

A Mahalanobis distance on the backbone's pre-logit features, with a shrunk (Ledoit-Wolf) covariance
fitted on the training images. The flag threshold is a high quantile of the distances of held-out
validation images, so by construction about ``1 - quantile`` of in-domain images are flagged.
Pure numpy/scikit-learn: the caller extracts the features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf


@dataclass(frozen=True)
class OodModel:
    mean: np.ndarray  # (d,)
    precision: np.ndarray  # (d, d) inverse covariance
    threshold: float  # distances above this are out of domain
    quantile: float

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (n, d) to the training distribution."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", centred, self.precision, centred), 0.0))

    def is_out_of_domain(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean.astype(np.float32),
            "precision": self.precision.astype(np.float32),
            "threshold": np.array([self.threshold], dtype=np.float64),
            "quantile": np.array([self.quantile], dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "OodModel":
        return cls(
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            precision=np.asarray(arrays["precision"], dtype=np.float64),
            threshold=float(np.asarray(arrays["threshold"]).ravel()[0]),
            quantile=float(np.asarray(arrays["quantile"]).ravel()[0]),
        )


def fit_ood(train_features: np.ndarray, heldout_features: np.ndarray, quantile: float = 0.99) -> OodModel:
    """Fit on training features; set the threshold on held-out in-domain features."""
    estimator = LedoitWolf().fit(np.asarray(train_features, dtype=np.float64))
    model = OodModel(estimator.location_, estimator.precision_, float("inf"), quantile)
    threshold = float(np.quantile(model.score(heldout_features), quantile))
    return OodModel(model.mean, model.precision, threshold, quantile)
