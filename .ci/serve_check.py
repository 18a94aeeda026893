"""CI, in the reading-room install (requirements-serve.txt): no torch; the bundled model, exported with the full
install, answers through ONNX Runtime with its one-pass heat maps, at its active operating point or site profile,
with the probabilities the full install's torch backend gave (``torch.jsonl``); the app's Diagnose page scores a
sample."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


TOLERANCE = 2e-3  # ONNX Runtime against torch on the same weights: float32 rounding only


def main(model: str, torch_answers: str) -> int:
    present = [name for name in ("torch", "timm", "pytorch_grad_cam", "sklearn", "scipy") if importlib.util.find_spec(name)]
    assert not present, f"the serving install must not hold {present}"
    from xraycore.inference.samples import sample_images
    from xraycore.inference.predictor import Predictor

    predictor = Predictor(model)
    assert predictor.backend == "onnxruntime", predictor.backend_reason
    expected = {Path(line["file"]).name: line for line in map(json.loads, Path(torch_answers).read_text().splitlines())}
    samples = sample_images()
    for prediction in predictor.predict_files(samples, cam="gradcam"):
        assert prediction.ok and prediction.heatmap is not None and prediction.cam_method == "cam", prediction.error
        torch_line = expected[Path(prediction.name).name]
        assert prediction.operating_point == torch_line["operating_point"], (prediction.operating_point, torch_line)
        assert abs(prediction.positive_probability - torch_line["probability"]) <= TOLERANCE, (prediction.name, torch_line)
        print(f"{prediction.name}: {prediction.label} p={prediction.positive_probability:.3f} at "
              f"{prediction.operating_point} ({prediction.backend}; torch {torch_line['probability']:.3f})")

    from streamlit.testing.v1 import AppTest

    os.environ["XRAY_MODEL_DIR"] = model
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    app.multiselect(key="samples").set_value([f"{path.parent.name}/{path.name}" for path in samples[:2]]).run()
    assert not app.exception and len(app.metric) == 2, [e.value for e in app.exception]
    app.switch_page("pages/train.py").run()
    assert any("full install" in info.value for info in app.info)
    print("serving install: Diagnose answers through ONNX Runtime; Train points to the full install")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
