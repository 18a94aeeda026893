"""A detector stores the precision of the blocks its score sums only: the bundled model's 1280 pre-logit features
(left out of the score) cost 3.3 MB per member for nothing. Read back, it scores exactly as before."""
from __future__ import annotations

import numpy as np
import pytest

from xraycore.ood.distance import OodModel, fit_ood

WIDTHS = [4, 6, 12]


def detector(scored):
    rng = np.random.default_rng(0)
    train, heldout = rng.normal(size=(300, sum(WIDTHS))), rng.normal(size=(80, sum(WIDTHS)))
    return fit_ood(train, heldout, widths=WIDTHS, scored=scored), rng.normal(0.5, 1.5, size=(40, sum(WIDTHS)))


def test_blocks_left_out_of_the_score_are_stored_without_their_precision_and_score_alike():
    model, films = detector(scored=[0, 1])
    arrays = model.to_arrays()
    assert "precision_upper.2" not in arrays and {"precision_upper.0", "precision_upper.1", "mean.2"} <= set(arrays)
    again = OodModel.from_arrays(arrays)
    np.testing.assert_allclose(again.ratio(films), model.ratio(films), rtol=1e-6)
    with pytest.raises(ValueError, match="without their precision"):
        again.with_scored_blocks(films, [0, 2])


def test_a_detector_scoring_every_block_keeps_every_precision():
    model, films = detector(scored=None)
    arrays = model.to_arrays()
    assert all(f"precision_upper.{i}" in arrays for i in range(len(WIDTHS)))
    np.testing.assert_allclose(OodModel.from_arrays(arrays).ratio(films), model.ratio(films), rtol=1e-6)
