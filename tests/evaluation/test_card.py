"""Bundling a run as a shippable model: files copied, card numbers computed from the predictions."""
from __future__ import annotations

import numpy as np
import pytest

from xraycore import metrics
from xraycore.runs import directory as runs
from xraycore.evaluation.model_card import bundle_model
from xraycore.inference.predictor import Predictor


def test_bundle_has_serving_files_and_an_honest_card(tiny_run, tmp_path):
    dest = bundle_model(tiny_run, tmp_path / "default", "python -m xraycore train --data X",
                        extra={"Out of domain": "rates here"})
    for name in ("model.safetensors", "config.json", "operating_point.json", "val_predictions.csv", "ood.safetensors"):
        assert (dest / name).exists()
    assert not (dest / "last.safetensors").exists() and not (dest / "train_state.pt").exists()
    card = (dest / "MODEL_CARD.md").read_text()
    run = runs.Run(dest)
    val = run.predictions("val")
    op = run.operating_point
    y = (val["label"] == op["positive_index"]).astype(int)
    expected = metrics.binary_report(y, val["probs"][:, op["positive_index"]], op["threshold"])
    assert f"| recall | {expected['recall']:.4f} |" in card
    assert f"| accuracy | {expected['accuracy']:.4f} |" in card
    assert "python -m xraycore train --data X" in card and "## Out of domain" in card and "pediatric" in card
    # the bundle answers like the run it came from
    a, b = Predictor(tiny_run), Predictor(dest)
    image = np.full((48, 48), 0.5, dtype=np.float32)
    image[10:30, 10:30] = 0.9
    from xraycore.io.image import XrayImage

    xr = XrayImage(pixels=image, metadata={"warnings": []})
    assert a.predict_images([xr])[0].probabilities == b.predict_images([xr])[0].probabilities


def test_bundle_is_portable_not_a_run(tiny_run, tmp_path):
    """No pid, host or machine path travels with a bundle."""
    dest = bundle_model(tiny_run, tmp_path / "bundle", "python -m xraycore train --data X")
    assert not (dest / "status.json").exists() and not (dest / "train_state.pt").exists()
    texts = {path.name: path.read_text() for path in dest.iterdir() if path.suffix in (".json", ".csv", ".md", ".jsonl")}
    for name, text in texts.items():
        assert str(tiny_run.parent) not in text and str(tiny_run) not in text, name
        assert '"host"' not in text and '"pid"' not in text, name
    files = runs.Run(dest).predictions("val")["file"]
    assert files and all("/" not in name for name in files)
    card = texts["MODEL_CARD.md"]
    assert "internal validation" in card and "No external evaluation is recorded" in card
    assert "## Operating points" in card and "Active: **internal**" in card


def test_ensemble_averages_calibrated_member_logits(tiny_run, tiny_dataset, tmp_path):
    """Two members (the same run twice, one with its logits scaled) make an ensemble that loads like a model."""
    from xraycore.evaluation.model_card import bundle_ensemble
    from xraycore.io.image import XrayImage

    second = tmp_path / "second"
    import shutil

    shutil.copytree(tiny_run, second)
    runs.Run(second).save_operating_point(temperature=2 * runs.Run(tiny_run).operating_point["temperature"])
    dest = bundle_ensemble([tiny_run, second], tmp_path / "ensemble", "two runs")
    assert (dest / "ensemble.json").is_file() and len(list((dest / "members").iterdir())) == 2
    ensemble, first, other = Predictor(dest), Predictor(tiny_run), Predictor(second)
    assert len(ensemble.networks) == 2 and ensemble.describe()["members"] == 2
    image = np.full((48, 48), 0.4, dtype=np.float32)
    image[8:28, 12:40] = 0.8
    xr = XrayImage(pixels=image, metadata={"warnings": []})
    [a], [b], [e] = first.predict_images([xr]), other.predict_images([xr]), ensemble.predict_images([xr], cam="gradcam")
    expected = (np.array(a.logits) / first.temperature + np.array(b.logits) / other.temperature) / 2
    np.testing.assert_allclose(e.logits, expected, rtol=1e-5)
    assert e.probabilities["PNEUMONIA"] == pytest.approx(
        float(metrics.softmax(expected[None], ensemble.temperature)[0, 1]), rel=1e-6)
    assert e.heatmap is not None and e.heatmap.shape == (48, 48)
    assert e.out_of_domain is not None and e.operating_point == "internal"
    val = runs.Run(dest).predictions("val")
    assert len(val["file"]) == runs.Run(tiny_run).config["counts"]["val"]
