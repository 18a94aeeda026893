"""The lung-field estimate: two lungs on chest-like images, a reason instead of a mask on anything else, and the
share of a heat map that lies on the lungs (issue 33). Synthetic images only: tests/helpers/synthetic.py
draws dark lung fields at x = 0.3 and 0.7 of the width inside a brighter body."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.synthetic import xray_like
from xraycore.explain import lung_fields


@pytest.mark.parametrize("size", [48, 224, 700])
@pytest.mark.parametrize("seed", [0, 1])
def test_two_lung_fields_are_found_on_chest_like_images(size, seed):
    image = xray_like(np.random.default_rng(seed), size, pneumonia=False)
    fields = lung_fields.estimate_lung_fields(image)
    assert fields.found and fields.reason is None
    mask = fields.mask
    assert mask.shape == image.shape and mask.dtype == bool
    middle = size // 2
    assert mask[middle, round(0.3 * size)] and mask[middle, round(0.7 * size)]  # the centre of each lung
    assert not mask[middle, middle]  # the mediastinum between them
    assert not mask[:, : max(1, size // 20)].any() and not mask[: max(1, size // 20)].any()  # nor the film's edge
    assert 0.08 < fields.area_share < 0.45


def test_lungs_with_opacities_are_mostly_found_and_otherwise_said_not_found():
    """Bright blotches inside a lung can cut it short, as a consolidation does: then a reason, never a half mask."""
    results = [lung_fields.estimate_lung_fields(xray_like(np.random.default_rng(seed), 224, pneumonia=True))
               for seed in range(12)]
    assert sum(fields.found for fields in results) >= 9
    assert all(fields.found or (fields.mask is None and fields.reason) for fields in results)


def test_float_and_rgb_films_give_the_same_fields_as_uint8():
    image = xray_like(np.random.default_rng(3), 128, False)
    grey = lung_fields.estimate_lung_fields(image).mask
    assert np.array_equal(lung_fields.estimate_lung_fields(image / 255.0).mask, grey)
    assert np.array_equal(lung_fields.estimate_lung_fields(np.repeat(image[..., None], 3, axis=2)).mask, grey)


def _non_chests() -> dict[str, np.ndarray]:
    rows, cols = np.mgrid[0:128, 0:128] / 128
    return {
        "flat": np.full((100, 100), 0.5),
        "black": np.zeros((64, 64), dtype=np.uint8),
        "noise": np.random.default_rng(1).random((128, 128)),
        "gradient": np.tile(np.linspace(0, 1, 128), (128, 1)),
        "one dark blob": 0.7 - 0.4 * np.exp(-(((cols - 0.5) / 0.15) ** 2 + ((rows - 0.5) / 0.25) ** 2)),
        "one lung": np.where(cols < 0.5, xray_like(np.random.default_rng(0), 128, False) / 255, 0.6),
        "tiny": np.zeros((8, 8)),
    }


@pytest.mark.parametrize("name", list(_non_chests()))
def test_no_lung_fields_on_a_flat_or_non_chest_image_and_a_reason_in_words(name):
    fields = lung_fields.estimate_lung_fields(_non_chests()[name])
    assert not fields.found and fields.mask is None
    assert isinstance(fields.reason, str) and len(fields.reason.split()) >= 4


def test_lung_share_is_the_heat_on_the_mask_at_any_heat_map_size():
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:80, 10:40] = True
    assert lung_fields.lung_share(np.where(mask, 1.0, 0.0), mask) == pytest.approx(1.0)
    assert lung_fields.lung_share(np.where(mask, 0.0, 1.0), mask) == pytest.approx(0.0)
    assert lung_fields.lung_share(np.ones((10, 10)), mask) == pytest.approx(mask.mean(), abs=0.02)
    assert lung_fields.lung_share(np.zeros((10, 10)), mask) is None  # an empty heat map has no share


def test_outline_is_drawn_on_the_mask_boundary_only():
    mask = np.zeros((60, 60), dtype=bool)
    mask[10:50, 10:30] = True
    picture = np.zeros((120, 120, 3), dtype=np.uint8)  # the overlay is larger than the mask: resized to fit
    drawn = lung_fields.draw_outline(picture, mask)
    changed = drawn.any(axis=2)
    assert changed.any() and not picture.any()  # a copy; the overlay itself is untouched
    assert not changed[40, 40] and not changed[110, 110]  # inside the lung and far outside it stay as they were
    assert changed[20:100, 20].any() and changed[20:100, 59].any()  # its left and right borders are drawn


def test_lung_boxes_are_each_sides_bounding_box():
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:8, 1:3] = True  # a left field
    mask[3, 2:4] = True  # with a spur that crosses nothing
    mask[4:9, 7:9] = True  # a right field
    boxes = lung_fields.lung_boxes(mask)
    expected = np.zeros_like(mask)
    expected[2:8, 1:4] = True
    expected[4:9, 7:9] = True
    assert np.array_equal(boxes, expected)
    assert not lung_fields.lung_boxes(np.zeros((6, 6), dtype=bool)).any(), "no fields, no boxes"
