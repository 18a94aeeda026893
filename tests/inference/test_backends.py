"""Two inference backends behind one Predictor: same calls, probabilities within 1e-4, heat maps and
out-of-domain scores alike; the automatic choice, its overrides and a stale graph."""
from __future__ import annotations

import io as stdio
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.synthetic import xray_like
from xraycore.explain import cam as explain
from xraycore.runs import directory as runs
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.tensor_files import load_weights, save_weights
from xraycore.inference.backends.choice import BackendUnavailable
from xraycore.inference.export import export_model
from xraycore.inference.predictor import Predictor
from xraycore.data.dataset import to_network_input
from xraycore.data.decode import IMAGENET_MEAN, IMAGENET_STD, network_input


def _png(pixels: np.ndarray) -> bytes:
    buffer = stdio.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _sources(count: int = 6) -> list[tuple[str, bytes]]:
    """At the training size and larger (resized and re-encoded like the training JPEGs)."""
    rng = np.random.default_rng(7)
    return [(f"x{i}.png", _png(xray_like(rng, 48 if i % 2 else 80, pneumonia=i % 3 == 0))) for i in range(count)]


def _assert_alike(a, b) -> None:
    assert a.label == b.label and a.out_of_domain == b.out_of_domain
    assert a.positive_probability == pytest.approx(b.positive_probability, abs=1e-4)
    for name in a.probabilities:
        assert a.probabilities[name] == pytest.approx(b.probabilities[name], abs=1e-4)
    assert a.ood_score == pytest.approx(b.ood_score, rel=1e-3)


def test_numpy_network_input_is_trainings_to_the_bit():
    rng = np.random.default_rng(0)
    for shape, size in [((48, 48), 48), ((64, 64), 48), ((57, 91), 33), ((40, 40), 64), ((224, 224), 210)]:
        grey = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = to_network_input(grey, size, IMAGENET_MEAN, IMAGENET_STD).numpy()
        assert np.array_equal(network_input(grey, size, IMAGENET_MEAN, IMAGENET_STD), expected), shape


def test_backends_answer_alike_and_say_which_answered(tiny_exported):
    served, reference = Predictor(tiny_exported), Predictor(tiny_exported, backend="torch")
    assert served.backend == "onnxruntime" and served.backend_reason == "exported graph, CPU"
    assert served.describe()["backend"] == "onnxruntime" and reference.describe()["backend"] == "torch"
    sources = _sources()
    for options in ({}, {"cam": "gradcam"}, {"tta": True}):
        pairs = zip(served.predict_sources(sources, **options), reference.predict_sources(sources, **options))
        for a, b in pairs:
            _assert_alike(a, b)
            assert (a.backend, b.backend) == ("onnxruntime", "torch")
            assert a.to_json()["backend"] == "onnxruntime" and json.dumps(a.to_json())
            if options.get("cam"):
                assert a.cam_method == b.cam_method == explain.ONE_PASS
                assert float(np.mean(np.abs(a.heatmap - b.heatmap))) < 1e-4 and a.overlay.shape == b.overlay.shape


def test_methods_the_graph_cannot_give_are_answered_by_torch(tiny_exported):
    served = Predictor(tiny_exported)
    assert served.cam_methods() == list(explain.CAM_METHODS), "torch is installed here: every method"
    [prediction] = served.predict_sources(_sources(1), cam="gradcam++")
    assert prediction.backend == "torch" and prediction.cam_method == "gradcam++" and prediction.heatmap is not None


def test_graph_of_other_weights_is_never_served(tiny_exported, tmp_path):
    model = tmp_path / "retrained"
    shutil.copytree(tiny_exported, model)
    weights = load_weights(model / runs.WEIGHTS_FILE)
    save_weights(model / runs.WEIGHTS_FILE, {name: tensor + 0.01 if tensor.is_floating_point() else tensor
                                             for name, tensor in weights.items()})
    fallback = Predictor(model)
    assert fallback.backend == "torch" and "was not exported from this model.safetensors" in fallback.backend_reason
    with pytest.raises(ModelDirectoryError, match="Export it again"):
        Predictor(model, backend="onnxruntime")


def test_without_a_graph_torch_answers_and_onnxruntime_says_why(tiny_run):
    predictor = Predictor(tiny_run)
    assert predictor.backend == "torch" and "no exported graph" in predictor.backend_reason
    with pytest.raises(BackendUnavailable, match="export"):
        Predictor(tiny_run, backend="onnxruntime")
    with pytest.raises(ValueError, match="unknown backend"):
        Predictor(tiny_run, backend="tensorflow")


def test_an_ensemble_exports_one_graph_per_member(tiny_exported, tmp_path):
    from xraycore.evaluation.model_card import bundle_ensemble

    second = tmp_path / "second"
    shutil.copytree(tiny_exported, second)
    runs.Run(second).save_operating_point(temperature=2 * runs.Run(tiny_exported).operating_point["temperature"])
    ensemble = bundle_ensemble([tiny_exported, second], tmp_path / "ensemble", "two runs")
    members = sorted((ensemble / "members").iterdir())
    assert len(members) == 2 and all((member / "model.onnx").is_file() for member in members), "bundles carry graphs"
    (members[1] / "model.onnx").unlink()
    assert Predictor(ensemble).backend == "torch", "one member without a graph: torch answers"
    export_model(ensemble, "onnx")
    assert all((member / "model.onnx").is_file() for member in members)
    served, reference = Predictor(ensemble), Predictor(ensemble, backend="torch")
    assert served.backend == "onnxruntime"
    sources = _sources(4)
    for a, b in zip(served.predict_sources(sources, cam="gradcam"), reference.predict_sources(sources, cam="gradcam")):
        _assert_alike(a, b)
        assert a.cam_method == explain.ONE_PASS and float(np.mean(np.abs(a.heatmap - b.heatmap))) < 1e-4


def test_a_named_operating_point_saved_after_the_export_applies(tiny_exported, tmp_path):
    """The graph gives raw logits: the temperature of whichever operating point is active applies in numpy."""
    from xraycore.clinical import operating_points as operating

    model = tmp_path / "calibrated"
    shutil.copytree(tiny_exported, model)
    operating.save(model, "ward 3", {**runs.Run(model).operating_point, "temperature": 3.0, "threshold": 0.4})
    served, reference = Predictor(model), Predictor(model, backend="torch")
    assert served.backend == "onnxruntime" and served.temperature == 3.0
    for a, b in zip(served.predict_sources(_sources(3)), reference.predict_sources(_sources(3))):
        _assert_alike(a, b)
        assert a.operating_point == "ward 3"


def test_torch_one_pass_cam_matches_grad_cam_on_the_trained_network(tiny_run):
    network = Predictor(tiny_run, backend="torch").networks[0]
    batch = np.stack([network_input(xray_like(np.random.default_rng(i), 48, pneumonia=True), 48,
                                         network.mean, network.std) for i in range(3)])
    from xraycore import models

    expected = explain.compute_cam(network.model, torch.from_numpy(batch),
                                   models.cam_target_layer(network.model, network.spec), 1)
    got = network.forward(batch, False, "gradcam", 1)
    assert got.cam_method == explain.ONE_PASS and float(np.mean(np.abs(got.heatmaps - expected))) <= 0.005


def test_cli_predict_says_which_backend_answered(tiny_exported, tmp_path, capsys):
    from xraycore.cli.main import main

    image = tmp_path / "film.png"
    image.write_bytes(_sources(1)[0][1])
    answers = {}
    for backend in ("auto", "torch"):
        assert main(["predict", "--model", str(tiny_exported), str(image), "--json", "--backend", backend]) == 0
        answers[backend] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answers["auto"]["backend"] == "onnxruntime" and answers["torch"]["backend"] == "torch"
    assert answers["auto"]["label"] == answers["torch"]["label"]
    assert answers["auto"]["probability"] == pytest.approx(answers["torch"]["probability"], abs=1e-4)
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(tiny_exported), str(image), "--backend", "tensorflow"])
