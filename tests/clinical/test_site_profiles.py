"""Site profiles on disk and as operating points: written whole or not at all, never rewritten, activated and
rolled back with the history kept, renamed with their history, removed when retired, and the ONNX graph rewritten with their weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xraycore.access import identity as roles
from xraycore.access.policy import AccessDenied
from xraycore.clinical import operating_points as operating
from xraycore.clinical import site_profiles
from xraycore.common.model_directory import ModelDirectoryError


def _model(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"class_names": ["NORMAL", "PNEUMONIA"]}))
    (model / "operating_point.json").write_text(json.dumps({"threshold": 0.5, "temperature": 1.0, "positive_index": 1}))
    return model


def _point(name: str) -> dict:
    return {"kind": site_profiles.PROFILE_KIND, "profile": name, "threshold": 0.4, "temperature": 1.2,
            "n_positive": 60, "n_negative": 55}


def _profile(model, name="site-a"):
    delta = {"classifier.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    site_profiles.write_profile(model, name, {"method": "head", "networks": {"model": {"graph_sha256": None}}},
                                {"model": delta})
    return delta


def test_a_profile_round_trips_and_is_never_rewritten(tmp_path):
    model = _model(tmp_path)
    delta = _profile(model)
    loaded = site_profiles.load_delta(model, "site-a", "model")
    assert np.array_equal(loaded["classifier.weight"], delta["classifier.weight"])
    profile = site_profiles.load_profile(model, "site-a")
    assert profile["name"] == "site-a" and profile["networks"]["model"]["tensors"] == 1
    assert not [p for p in (model / "sites").iterdir() if p.name.startswith(".")], "no temporary folder is left"
    with pytest.raises(ValueError, match="already has a site profile"):
        _profile(model)
    with pytest.raises(ValueError):
        site_profiles.check_profile_name("../escape")


def test_profile_point_activates_rolls_back_and_keeps_history(tmp_path):
    model = _model(tmp_path)
    _profile(model)
    operating.save(model, "site-a", _point("site-a"))
    assert operating.get(model)["profile"] == "site-a"
    operating.activate(model, operating.INTERNAL)
    operating.activate(model, "site-a")  # survives a restart: everything is on disk
    state = operating.load(model)
    assert state["active"] == "site-a"
    assert [entry["action"] for entry in state["history"]] == ["save", "activate", "activate"]


def test_a_profile_point_with_too_few_films_or_no_weights_is_refused(tmp_path, log):
    model = _model(tmp_path)
    with pytest.raises(ValueError, match="at least 50"):
        operating.save(model, "small", {**_point("small"), "n_negative": 12})
    operating.save(model, "gone", _point("gone"), activate=False)  # a point whose folder is missing
    with pytest.raises(ModelDirectoryError, match="missing"):
        operating.activate(model, "gone")
    assert operating.active_name(model) == operating.INTERNAL


def test_a_reader_may_not_activate_a_profile(tmp_path, log):
    model = _model(tmp_path)
    _profile(model)
    operating.save(model, "site-a", _point("site-a"), activate=False)
    reader = roles.Identity("reader", "r@example.org", frozenset({roles.READER}))
    with pytest.raises(AccessDenied):
        operating.activate(model, "site-a", identity=reader)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[-1]["outcome"] == "refused" and lines[-1]["action"] == "operating_point.activate"


def test_rename_keeps_values_activity_shipped_and_history(tmp_path, log):
    model = _model(tmp_path)
    operating.save(model, "kermany-site", {"threshold": 0.6, "temperature": 1.1})
    operating.mark_shipped(model)
    operating.rename(model, "kermany-site", "kermany-site-calibration")
    state = operating.load(model)
    assert state["active"] == state["shipped"] == "kermany-site-calibration"
    assert state["points"]["kermany-site-calibration"]["threshold"] == 0.6 and "kermany-site" not in state["points"]
    assert [entry["action"] for entry in state["history"]] == ["save", "rename"]
    with pytest.raises(ValueError):
        operating.rename(model, operating.INTERNAL, "other")


def test_remove_retires_a_profile_and_its_weights_but_never_the_point_in_use_or_shipped(tmp_path, log):
    from xraycore.clinical import point_history

    model = _model(tmp_path)
    _profile(model, "site-a")
    _profile(model, "site-b")
    operating.save(model, "site-a", _point("site-a"))
    operating.mark_shipped(model)
    operating.save(model, "site-b", _point("site-b"))
    operating.activate(model, "site-a")
    reader = roles.Identity("reader", "r@example.org", frozenset({roles.READER}))
    with pytest.raises(AccessDenied):
        operating.remove(model, "site-b", identity=reader)
    assert (model / "sites" / "site-b").is_dir() and "site-b" in operating.names(model)
    for kept in ("site-a", operating.INTERNAL):  # in use and shipped; the internal point
        with pytest.raises(ValueError, match="shipped with|in use"):
            operating.remove(model, kept)
    operating.remove(model, "site-b")
    state = operating.load(model)
    assert "site-b" not in state["points"] and not (model / "sites" / "site-b").exists()
    assert (model / "sites" / "site-a").is_dir() and state["active"] == "site-a"
    assert state["history"][-1]["action"] == "remove" and state["history"][-1]["removed"]["threshold"] == 0.4
    assert point_history.previous_active(model) is None  # site-b, the point before, is gone: nothing to roll back to
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["action"], line["outcome"]) for line in lines if "remove" in line["action"]][0][1] == "refused"
    assert lines[-1]["action"] == "operating_point.remove" and lines[-1]["outcome"] != "refused"
    with pytest.raises(ValueError, match="no operating point named"):
        operating.remove(model, "site-b")


def test_graph_rewritten_with_a_profiles_weights(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    weight = np.ones((2, 3), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "model.w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(weight, "model.w")])
    data = helper.make_model(graph).SerializeToString()
    replaced = np.arange(6, dtype=np.float32).reshape(2, 3)
    rewritten = onnx.load_from_string(site_profiles.with_initializers(data, {"model.w": replaced}))
    assert np.array_equal(numpy_helper.to_array(rewritten.graph.initializer[0]), replaced)
    with pytest.raises(ValueError, match="no weight named"):
        site_profiles.with_initializers(data, {"model.other": replaced})
    with pytest.raises(ValueError, match="shape"):
        site_profiles.with_initializers(data, {"model.w": np.zeros((3, 2), dtype=np.float32)})


def test_the_bundled_site_profile_weighs_at_most_five_mb_per_network():
    bundled = Path(__file__).resolve().parents[2] / "models" / "default"
    state = json.loads((bundled / "operating_points.json").read_text())
    folder = site_profiles.profile_dir(bundled, state["points"][state["shipped_active"]]["profile"])
    weights = sorted(folder.glob(f"*{site_profiles.DELTA_SUFFIX}"))
    assert len(weights) == len(json.loads((bundled / "ensemble.json").read_text())["members"])
    assert all(0 < file.stat().st_size <= site_profiles.MAX_MEMBER_BYTES for file in weights)
