"""The Predictor: same numbers as training, one forward for probability + CAM, bad files isolated."""
from __future__ import annotations

import io as stdio

import numpy as np
import torch
import pytest
from PIL import Image

from xraycore.runs import directory as runs
from xraycore.app.catalog import for_display
from xraycore.inference.export import export_model
from xraycore.inference.predictor import Predictor
from tests.helpers.synthetic import xray_like


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = stdio.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor(tiny_run, device="cpu")


def test_predictions_match_the_runs_own_test_predictions(predictor, tiny_run):
    stored = runs.Run(tiny_run).predictions("test")
    files = stored["file"][:8]
    got = np.array([p.probabilities["PNEUMONIA"] for p in predictor.predict_files(files)])
    # training decodes JPEGs through Pillow's draft mode; prediction reads them in full: same size here
    np.testing.assert_allclose(got, stored["probs"][:8, 1], atol=2e-3)


def test_cam_comes_from_the_same_forward_and_changes_nothing(predictor):
    rng = np.random.default_rng(1)
    sources = [(f"img{i}.png", _png_bytes(xray_like(rng, 64, pneumonia=i % 2 == 0))) for i in range(4)]
    plain = list(predictor.predict_sources(sources))
    with_cam = list(predictor.predict_sources(sources, cam="gradcam"))
    for a, b in zip(plain, with_cam):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
        assert b.heatmap.shape == (48, 48) and b.overlay.shape == (64, 64, 3) and b.overlay.dtype == np.uint8
        assert a.ood_score == pytest.approx(b.ood_score, rel=1e-4)


def test_call_follows_the_threshold(tiny_run):
    rng = np.random.default_rng(2)
    source = [("x.png", _png_bytes(xray_like(rng, 48, pneumonia=True)))]
    low = next(Predictor(tiny_run, threshold=0.0).predict_sources(source))
    high = next(Predictor(tiny_run, threshold=1.0 + 1e-9).predict_sources(source))
    assert low.label == "PNEUMONIA" and high.label == "NORMAL"
    assert low.threshold == 0.0 and low.to_json()["probability"] == pytest.approx(high.to_json()["probability"])
    # a probability exactly at the threshold is positive, in the Predictor and in the display result alike
    exact = next(Predictor(tiny_run, threshold=low.positive_probability).predict_sources(source))
    assert exact.positive_probability == low.positive_probability and exact.label == "PNEUMONIA"
    assert for_display(exact).call(exact.positive_probability) == "PNEUMONIA"


def test_bad_file_in_a_batch_is_reported_in_place(predictor):
    rng = np.random.default_rng(3)
    good = _png_bytes(xray_like(rng, 48, pneumonia=False))
    results = list(predictor.predict_sources([("a.png", good), ("b.png", b"not an image at all"), ("c.png", good)]))
    assert [r.name for r in results] == ["a.png", "b.png", "c.png"]
    assert results[0].ok and results[2].ok and not results[1].ok
    assert results[1].error_kind == "not_image" and "Traceback" not in results[1].error
    assert results[1].to_json() == {"file": "b.png", "error": results[1].error, "error_kind": "not_image"}


def test_colour_photo_is_flagged_out_of_domain(predictor):
    rng = np.random.default_rng(4)
    photo = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((96, 96))
    buffer = stdio.BytesIO()
    photo.save(buffer, format="PNG")
    result = next(predictor.predict_sources([("photo.png", buffer.getvalue())]))
    assert result.ok and any("colour photograph" in w for w in result.warnings)
    assert result.out_of_domain is True


def test_tta_averages_the_flipped_image(predictor):
    rng = np.random.default_rng(5)
    source = [("x.png", _png_bytes(xray_like(rng, 48, pneumonia=True)))]
    plain = next(predictor.predict_sources(source))
    tta = next(predictor.predict_sources(source, tta=True))
    assert tta.ok and tta.positive_probability != pytest.approx(plain.positive_probability, abs=1e-7)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_gives_the_same_probabilities(tiny_run, tmp_path, fmt):
    path, difference = export_model(tiny_run, fmt, tmp_path / f"model.{fmt}")
    assert path.exists() and path.stat().st_size > 1000 and difference < 1e-4


def test_describe_says_which_model_and_what_validation(predictor):
    about = predictor.describe()
    assert about["backbone"] == "simple_cnn" and about["validation"]["n"] > 0
    assert "random initialisation" in about["weights_source"]


# ------------------------------------------------------------------ matching the training images' JPEG encoding
def _jpegs(folder, size: int, quality: int, count: int = 4) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(quality)
    paths = []
    for i in range(count):
        paths.append(str(folder / f"{i}.jpeg"))
        Image.fromarray(xray_like(rng, size, pneumonia=bool(i % 2))).save(paths[-1], quality=quality)
    return paths


def test_stored_jpeg_quality_is_read_from_the_quantisation_tables(tmp_path):
    from xraycore.data import stored_jpeg_quality

    for quality in (50, 75, 95):
        assert stored_jpeg_quality(_jpegs(tmp_path / str(quality), 32, quality), 32) == quality
    assert stored_jpeg_quality(_jpegs(tmp_path / "q75", 32, 75), 64) is None, "stored larger or smaller: resized anyway"
    mixed = _jpegs(tmp_path / "a", 32, 60) + _jpegs(tmp_path / "b", 32, 90)
    assert stored_jpeg_quality(mixed, 32) is None
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(png)
    assert stored_jpeg_quality([str(png)], 32) is None


def test_training_records_the_encoding_and_prediction_reencodes_only_resized_inputs(tiny_run):
    from xraycore.data.dataset import to_network_input
    from xraycore.data.decode import match_stored_encoding, resize_uint8
    from xraycore.io.image import to_uint8
    from xraycore.io.reader import read_xray

    run = runs.open_run(tiny_run)
    assert run.config["input_jpeg_quality"] == 95  # tests.helpers.synthetic saves its 48 px JPEGs at quality 95
    predictor = Predictor(tiny_run)
    predictor.networks[0].input_jpeg_quality = 40  # strong enough to see
    rng = np.random.default_rng(5)
    large = read_xray(_png_bytes(xray_like(rng, 96, pneumonia=True)))
    expected = to_network_input(
        match_stored_encoding(resize_uint8(to_uint8(large.pixels), 48), 40), 48, predictor.mean, predictor.std)
    assert torch.equal(predictor.to_tensor(large), expected)
    plain = to_network_input(resize_uint8(to_uint8(large.pixels), 48), 48, predictor.mean, predictor.std)
    assert not torch.equal(predictor.to_tensor(large), plain)
    same_size = read_xray(_png_bytes(xray_like(rng, 48, pneumonia=False)))
    untouched = to_network_input(to_uint8(same_size.pixels), 48, predictor.mean, predictor.std)
    assert torch.equal(predictor.to_tensor(same_size), untouched), "an image already at the training size is left alone"
