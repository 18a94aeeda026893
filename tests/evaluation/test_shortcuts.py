"""The shortcut report (issue 33): its figures on crafted heat maps, where the answer is known, and the whole
report on the tiny fixture model (heat maps and occlusion probes run, every figure carries a CI and a verdict),
kept with the model and shown by the model card and Compare."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from xraycore.evaluation import shortcuts
from xraycore.evaluation.compare_tables import shortcut_rows
from xraycore.evaluation.shortcut_probes import blanked, shortcut_report
from xraycore.metrics.regions import body_grey
from xraycore.runs.directory import Run

SHAPE = (100, 100)


def lung_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[20:80, 15:40] = True
    mask[20:80, 60:85] = True
    return mask


def test_all_mass_in_the_band_gives_band_mass_one_and_the_peak_in_the_band():
    heat = shortcuts.band_mask(SHAPE).astype(float)
    heat[0, 0] = 2.0
    measures = shortcuts.heat_measures(heat, lung_mask())
    assert measures["band_mass"] == pytest.approx(1.0)
    assert measures["peak_in_band"] == 1.0
    assert measures["lung_mass"] == pytest.approx(0.0)


def test_all_mass_on_the_lungs_gives_a_lift_of_one_over_their_area_share():
    lungs = lung_mask()
    films = [{"label": float(i % 2), **shortcuts.heat_measures(lungs.astype(float), lungs)} for i in range(10)]
    figures = shortcuts.summarise(films)
    assert figures["lung_mass"]["value"] == pytest.approx(1.0)
    assert figures["lung_area"]["value"] == pytest.approx(lungs.mean())
    assert figures["lung_lift"]["value"] == pytest.approx(1.0 / lungs.mean())
    assert figures["mostly_outside"]["value"] == 0.0  # Diagnose would warn on none of them
    assert figures["lung_lift"]["pass"] is True and figures["lung_lift"]["ci95"] == pytest.approx([1 / 0.3, 1 / 0.3])
    assert figures["band_mass"]["value"] == pytest.approx(0.0) and figures["peak_in_band"]["pass"] is True


def test_the_pointing_game_asks_whether_the_hottest_pixel_is_in_a_box_around_a_lung_field():
    lungs = lung_mask()
    lungs[60:80, 30:40] = False  # the heart's notch: inside the left box, outside the field
    in_the_notch = np.zeros(SHAPE)
    in_the_notch[70, 35] = 1.0
    on_the_mediastinum = np.zeros(SHAPE)
    on_the_mediastinum[50, 50] = 1.0
    hit, miss = shortcuts.heat_measures(in_the_notch, lungs), shortcuts.heat_measures(on_the_mediastinum, lungs)
    assert hit["pointing"] == 1.0 and hit["lung_mass"] == 0.0 and hit["box_mass"] == 1.0
    assert miss["pointing"] == 0.0 and miss["box_mass"] == 0.0
    assert hit["box_area"] == pytest.approx(lung_mask().mean())  # the boxes take the notch back in
    figures = shortcuts.summarise([{"label": 1.0, **hit}] * 6 + [{"label": 0.0, **miss}] * 4)
    assert figures["pointing_game"]["value"] == pytest.approx(0.6) and figures["pointing_game"]["pass"] is False
    assert figures["box_lift"]["value"] == pytest.approx(0.6 / lung_mask().mean())
    assert figures["box_lift"]["pass"] is True
    old = shortcuts.summarise([{"label": 1.0, "band_mass": 0.1, "peak_in_band": 0.0, "lung_mass": 0.5,
                                "lung_area": 0.2}])
    assert "pointing_game" not in old  # a report made before the boxes: no box figures, nothing invented


def test_a_uniform_map_has_lift_one_and_the_bands_area_as_band_mass():
    uniform = np.ones(SHAPE)
    measures = shortcuts.heat_measures(uniform, lung_mask())
    assert measures["band_mass"] == pytest.approx(shortcuts.band_mask(SHAPE).mean())  # 0.36 of the image
    films = [{"label": 1.0, **measures}] * 4
    figures = shortcuts.summarise(films)
    assert figures["lung_lift"]["value"] == pytest.approx(1.0) and figures["lung_lift"]["pass"] is False
    assert figures["mostly_outside"]["value"] == 1.0  # no denser on the lungs than elsewhere: Diagnose warns
    assert figures["band_mass"]["pass"] is False


def test_films_without_lung_fields_or_heat_leave_only_those_figures():
    band_heat = shortcuts.band_mask(SHAPE).astype(float)
    films = [{"label": 1.0, **shortcuts.heat_measures(band_heat, None)},
             {"label": 0.0, **shortcuts.heat_measures(np.zeros(SHAPE), lung_mask())},  # empty: no figure at all
             {"label": 0.0, **shortcuts.heat_measures(lung_mask().astype(float), lung_mask())}]
    figures = shortcuts.summarise(films)
    assert figures["band_mass"]["n"] == 2 and figures["band_mass"]["value"] == pytest.approx(0.5)
    assert figures["lung_lift"]["n"] == 1 and figures["lung_mass"]["value"] == pytest.approx(1.0)


def test_occlusion_figures_count_drops_on_pneumonia_films_and_flipped_calls():
    films = [{"label": 1.0, "p": 0.9, "p_lungs": 0.4, "call": 1.0, "call_band": 1.0, "call_corners": 0.0},
             {"label": 1.0, "p": 0.8, "p_lungs": 0.9, "call": 1.0, "call_band": 1.0, "call_corners": 1.0},
             {"label": 0.0, "p": 0.1, "p_lungs": 0.0, "call": 0.0, "call_band": 1.0, "call_corners": 0.0},
             {"label": 0.0, "p": 0.2, "call": 0.0, "call_band": 0.0, "call_corners": 0.0}]
    figures = shortcuts.summarise(films)
    assert figures["lungs_blanked_drop"]["n"] == 2  # pneumonia films only
    assert figures["lungs_blanked_drop"]["value"] == pytest.approx((0.5 - 0.1) / 2)
    assert figures["lungs_blanked_share"]["value"] == pytest.approx(0.5) and not figures["lungs_blanked_share"]["pass"]
    assert figures["band_blanked_flips"]["value"] == pytest.approx(0.25) and not figures["band_blanked_flips"]["pass"]
    assert figures["corners_blanked_flips"]["value"] == pytest.approx(0.25)
    low, high = figures["band_blanked_flips"]["ci95"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0
    assert shortcuts.verdict(figures) is False


def test_corners_are_four_squares_inside_the_band():
    corners, band = shortcuts.corner_mask(SHAPE), shortcuts.band_mask(SHAPE)
    assert corners.sum() == 4 * 15 * 15 and corners[0, 0] and corners[-1, -1] and not corners[50, 0]
    assert band[0, 50] and band[50, -1] and not band[50, 50] and band[:, :10].all()


def test_blanking_fills_the_region_with_the_bodys_median_grey():
    grey = np.full((50, 50), 40, dtype=np.uint8)
    grey[10:40, 10:40] = 150
    region = np.zeros_like(grey, dtype=bool)
    region[:5] = True
    image = blanked(grey, region)
    assert body_grey(grey) == 150
    assert np.allclose(image.pixels[:5], 150 / 255) and np.allclose(image.pixels[5:], grey[5:] / 255)


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tiny_dataset):
    return shortcut_report(tiny_run, tiny_dataset / "test")


def test_the_report_on_the_tiny_model_has_every_figure_with_a_ci_and_a_verdict(tiny_report):
    assert tiny_report["n"] == 32 and tiny_report["n_positive"] == 16
    assert set(tiny_report["figures"]) == set(shortcuts.LIMITS)
    assert tiny_report["lungs_not_found"] < 8  # synthetic chest-like films: lung fields are found on most
    for name, figure in tiny_report["figures"].items():
        assert set(figure) >= {"what", "value", "ci95", "n", "limit", "pass"}, name
        if figure["value"] is not None:
            low, high = figure["ci95"]
            assert low <= figure["value"] + 1e-9 and figure["value"] <= high + 1e-9, name
    assert tiny_report["figures"]["band_blanked_flips"]["n"] == 32  # every film probed
    assert tiny_report["figures"]["lungs_blanked_drop"]["n"] >= 1  # pneumonia films with lung fields
    assert tiny_report["passed"] in (True, False)
    assert "seconds" in tiny_report and "data_fingerprint" in tiny_report


def test_a_kept_report_reaches_the_model_card_and_compare(tiny_run, tiny_report, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_run, model)
    assert shortcuts.card_section(model) == [] and shortcut_rows([Run(model)]) == []
    path = shortcuts.save_report(model, "tiny-test", tiny_report)
    assert path.parent.name == shortcuts.SHORTCUTS_DIR and path.parent.parent == model
    section = "\n".join(shortcuts.card_section(model))
    assert "## Where the heat map looks" in section and "### tiny-test" in section
    assert "CAM mass in the outer 10% band" in section and "<= 0.15" in section
    [row] = shortcut_rows([Run(model)])
    assert row["report"] == "tiny-test" and row["n"] == 32 and row["all limits met"] in ("yes", "no")
    from xraycore.evaluation.external import list_evaluations

    assert list_evaluations(model) == []  # a shortcut report is no accuracy record
