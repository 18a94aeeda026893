"""The reading-room install (`pip install ".[serve]"`): no torch, timm, grad-cam, scikit-learn or scipy.

A subprocess makes them unimportable (an import blocker first on sys.meta_path), then runs the app's
Diagnose page on an exported model, scores an image through the onnxruntime backend and opens Train,
which must say that training needs the full install.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.synthetic import xray_like

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "torchvision", "timm", "pytorch_grad_cam", "sklearn", "scipy")

SCRIPT = r'''
import importlib.abc, json, sys

BLOCKED = set(sys.argv[1].split(","))


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a serving install has none)")
        return None


sys.meta_path.insert(0, Blocker())
try:
    import torch  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the blocker let torch through")
from streamlit.testing.v1 import AppTest

from xraycore.inference.predictor import Predictor

at = AppTest.from_file(sys.argv[2], default_timeout=60).run()
assert not at.exception, [e.value for e in at.exception]
at.multiselect(key="samples").set_value(["PNEUMONIA/one.png"]).run()
assert not at.exception, [e.value for e in at.exception]
captions = [caption for image in at.image for caption in image.captions]
sidebar = " ".join(c.value for c in at.sidebar.caption)
methods = at.sidebar.selectbox(key="cam_method").options
metrics = [m.label for m in at.metric]
at.switch_page("pages/train.py").run()
train_info = [i.value for i in at.info]
prediction = next(Predictor(sys.argv[3]).predict_files([sys.argv[4]], cam="gradcam"))
print(json.dumps({
    "metrics": metrics, "captions": captions, "sidebar": sidebar,
    "methods": methods, "train_info": train_info, "backend": prediction.backend, "ok": prediction.ok,
    "cam_method": prediction.cam_method, "heatmap": None if prediction.heatmap is None else list(prediction.heatmap.shape),
    "imported": sorted({name.split(".")[0] for name in sys.modules} & BLOCKED),
}))
'''


def test_diagnose_runs_and_scores_without_torch(tiny_exported, tmp_path):
    samples = tmp_path / "samples" / "PNEUMONIA"
    samples.mkdir(parents=True)
    image = samples / "one.png"
    Image.fromarray(xray_like(np.random.default_rng(2), 64, pneumonia=True)).save(image)
    env = {**os.environ, "XRAY_MODEL_DIR": str(tiny_exported), "XRAY_SAMPLES_DIR": str(samples.parent),
           "XRAY_RUNS_DIR": str(tmp_path / "no-runs"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, ",".join(BLOCKED), str(REPO / "app.py"), str(tiny_exported),
                           str(image)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["imported"] == [], "Diagnose must reach none of the full install's packages"
    assert answer["backend"] == "onnxruntime" and answer["ok"] and answer["cam_method"] == "cam"
    assert answer["heatmap"] == [48, 48] and answer["metrics"] == ["P(PNEUMONIA)"]
    assert "answered by **ONNX Runtime**" in answer["sidebar"]
    assert answer["methods"] == ["gradcam"], "only what the exported graph gives"
    assert "Grad-CAM (one forward pass, as CAM) overlay" in answer["captions"]
    assert any("training needs the full install" in text for text in answer["train_info"])
