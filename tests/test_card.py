"""Bundling a run as a shippable model: files copied, card numbers computed from the predictions."""
from __future__ import annotations

import numpy as np

from xraycore import metrics, runs
from xraycore.card import bundle_model
from xraycore.predict import Predictor


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
    from xraycore.io import XrayImage

    xr = XrayImage(pixels=image, metadata={"warnings": []})
    assert a.predict_images([xr])[0].probabilities == b.predict_images([xr])[0].probabilities
