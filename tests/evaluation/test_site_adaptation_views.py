"""The lung fields site adaptation's lung penalty takes: estimated on each augmented view itself, so a mask follows
its view's flip; a view with no lungs gets an empty mask, which the penalty leaves out."""
from __future__ import annotations

import numpy as np
import torch

from tests.helpers.synthetic import xray_like
from xraycore.evaluation.site_adaptation_fit import view_lungs


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_each_views_lung_mask_follows_that_view():
    film = xray_like(np.random.default_rng(0), 128, pneumonia=False).astype(np.float32)
    film = film / max(1.0, float(film.max()))
    off_centre = np.pad(film[:, 24:], ((0, 0), (0, 24)), mode="edge")  # lungs no longer symmetric about the middle
    views = torch.from_numpy(np.stack([off_centre, off_centre[:, ::-1].copy(), np.full_like(film, 0.5)]))
    masks = view_lungs(views[None, :, None]).numpy()[0]
    assert masks.shape == (3, 128, 128) and masks.dtype == bool
    assert masks[0].any() and _iou(masks[0], masks[1]) < 0.8, "the flipped view's lungs lie elsewhere"
    assert _iou(masks[1], masks[0][:, ::-1]) > 0.9, "and its mask is the flipped mask"
    assert not masks[2].any(), "a flat view has no lung fields"
