"""A site profile answers on both backends alike: torch lays its delta over the state dict, ONNX Runtime over the
exported graph's initializers (no torch needed); the Predictor names the profile, and a graph the profile was not
checked against is never served with it."""
from __future__ import annotations

import io as stdio
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers.synthetic import xray_like
from xraycore.clinical import operating_points as operating
from xraycore.clinical import site_profiles
from xraycore.common.hashing import sha256_of_file
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.tensor_files import load_weights
from xraycore.inference.predictor import Predictor
from xraycore.runs import directory as runs


def _sources(count: int = 6) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(count):
        buffer = stdio.BytesIO()
        Image.fromarray(xray_like(rng, 48, pneumonia=i % 2 == 1)).save(buffer, format="PNG")
        out.append((f"x{i}.png", buffer.getvalue()))
    return out


@pytest.fixture
def profiled(tiny_exported, tmp_path):
    """tiny_exported with a site profile whose last stage and head are perturbed, active."""
    model = tmp_path / "model"
    shutil.copytree(tiny_exported, model)
    weights = load_weights(model / runs.WEIGHTS_FILE)
    rng = np.random.default_rng(0)
    delta = {name: (tensor.numpy() * (1 + 0.5 * rng.standard_normal(tensor.shape))).astype(np.float32)
             for name, tensor in weights.items() if name.startswith(("features.3.", "classifier.")) and tensor.is_floating_point()
             and "running" not in name}
    graph = {"graph_sha256": sha256_of_file(model / "model.onnx")}
    site_profiles.write_profile(model, "site-a", {"method": "last-stage", "networks": {"model": graph}}, {"model": delta})
    operating.save(model, "site-a", {"kind": site_profiles.PROFILE_KIND, "profile": "site-a", "threshold": 0.5,
                                     "temperature": 1.0, "n_positive": 60, "n_negative": 60})
    return model


def test_torch_and_onnx_runtime_answer_alike_with_a_profile(profiled):
    served, reference = Predictor(profiled), Predictor(profiled, backend="torch")
    original = Predictor(profiled, operating_point=operating.INTERNAL, backend="torch")
    assert served.backend == "onnxruntime" and served.site_profile == "site-a"
    assert served.describe()["site_profile"] == "site-a" and original.describe()["site_profile"] is None
    pairs = zip(served.predict_sources(_sources(), cam="gradcam"), reference.predict_sources(_sources(), cam="gradcam"),
                original.predict_sources(_sources()))
    moved = 0.0
    for a, b, c in pairs:
        assert a.positive_probability == pytest.approx(b.positive_probability, abs=1e-4)
        assert float(np.mean(np.abs(a.heatmap - b.heatmap))) < 1e-4, "the graph's class maps use the adapted head too"
        assert a.operating_point == "site-a" and a.to_json()["operating_point"] == "site-a"
        moved = max(moved, abs(a.positive_probability - c.positive_probability))
    assert moved > 1e-3, "the profile's weights answered, not the original ones"


def test_a_graph_the_profile_was_not_checked_against_is_not_served_with_it(profiled):
    with open(profiled / "model.onnx", "ab") as graph:  # another graph (the same bytes and more)
        graph.write(b"\0")
    with pytest.raises(ModelDirectoryError, match="was checked against"):
        Predictor(profiled, backend="onnxruntime")
    assert Predictor(profiled).backend == "torch", "automatic choice: torch answers, with the profile"


NO_TORCH = r'''
import importlib.abc, json, sys


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "timm", "sklearn", "scipy"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a serving install has none)")
        return None


sys.meta_path.insert(0, Blocker())
from xraycore.inference.predictor import Predictor

predictor = Predictor(sys.argv[1])
prediction = next(predictor.predict_files([sys.argv[2]]))
print(json.dumps({"backend": prediction.backend, "profile": predictor.describe()["site_profile"],
                  "p": prediction.positive_probability, "point": prediction.operating_point}))
'''


def test_the_reading_room_install_answers_with_the_profile_without_torch(profiled, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    film = tmp_path / "film.png"
    film.write_bytes(_sources(1)[0][1])
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(profiled), str(film)], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert (answer["backend"], answer["profile"], answer["point"]) == ("onnxruntime", "site-a", "site-a")
    expected = next(Predictor(profiled, backend="torch").predict_files([film])).positive_probability
    assert answer["p"] == pytest.approx(expected, abs=1e-4)
