"""The ONNX Runtime inference backend: the graph ``python -m xraycore export --format onnx`` wrote for a network.

The graph answers what the torch backend's forward gives, from one run: raw logits (the temperature is applied
afterwards in numpy, so a named operating point saved after the export still applies), the out-of-domain
features and, for heads where Grad-CAM is CAM, the class maps Σ_k w_ck A_k / (h·w). Its metadata records the
sha256 of the weights it was exported from: a graph of other weights is never served. No torch here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime

from xraycore.clinical import site_profiles
from xraycore.explain import cam as explain
from xraycore.runs import directory as runs
from xraycore.common.model_directory import ModelDirectoryError
from xraycore.common.hashing import sha256_of_file
from xraycore.inference.backends.choice import GRAPH_FILE, ONNXRUNTIME, EngineOutput

NAME = ONNXRUNTIME
INPUT = "image"
LOGITS, FEATURES, CLASS_MAPS = "logits", "features", "class_maps"
META_WEIGHTS, META_IMAGE_SIZE, META_OOD_WIDTHS = "xraycore.weights_sha256", "xraycore.image_size", "xraycore.ood_widths"

_state = onnxruntime.capi.onnxruntime_pybind11_state
LOAD_ERRORS = (_state.Fail, _state.InvalidProtobuf, _state.InvalidGraph, _state.NoSuchFile, OSError)


class StaleGraph(ModelDirectoryError):
    """The exported graph is not of this network's current weights or input size: export it again."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(path, problem, "Export it again (python -m xraycore export --model MODEL --format onnx), "
                                        "or use the torch backend.")


class OnnxEngine:
    """One network's exported graph in an ONNX Runtime session (CPU)."""

    name = NAME

    def __init__(self, run: runs.Run, config: Mapping[str, Any], overrides: Mapping[str, np.ndarray] | None = None) -> None:
        """``overrides``: initializers (by the graph's names) replaced at load, a site profile's delta."""
        path = run.file(GRAPH_FILE)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: the optimiser's notes are not the user's business
        # ONNX Runtime's threads spin after each run by default, taking the cores from what follows on this
        # thread (reading the next films, the out-of-domain distance's BLAS): 1.2-1.4x slower bulk scoring here.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model: str | bytes = str(path)
        if overrides:  # a site profile: its weights written into the graph (add_initializer loses to the optimiser)
            try:
                model = site_profiles.with_initializers(path.read_bytes(), overrides)
            except (ValueError, IndexError, OSError) as error:
                raise ModelDirectoryError(path, f"cannot take the site profile's weights: {error}") from None
        try:
            self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except LOAD_ERRORS:
            raise ModelDirectoryError(path, "is damaged: ONNX Runtime cannot load it (export it again)") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        weights = run.file(runs.WEIGHTS_FILE)
        if not weights.is_file() or meta.get(META_WEIGHTS) != sha256_of_file(weights):
            raise StaleGraph(path, f"was not exported from this {runs.WEIGHTS_FILE}")
        if meta.get(META_IMAGE_SIZE) != str(config["image_size"]):
            raise StaleGraph(path, f"takes other inputs than the {config['image_size']} px {runs.CONFIG_FILE} describes")
        self.ood_widths: list[int] = json.loads(meta.get(META_OOD_WIDTHS, "[]"))
        self.one_pass_cam = CLASS_MAPS in {output.name for output in self.session.get_outputs()}

    def cam_methods(self) -> list[str]:
        return list(explain.ONE_PASS_METHODS) if self.one_pass_cam else []

    def forward(self, batch: np.ndarray, tta: bool, cam: str | None, class_index: int | None) -> EngineOutput:
        """Logits, features and (one-pass heads) CAMs of a batch from one run of the graph; ValueError for a CAM
        method the graph cannot give (the caller then asks the torch backend)."""
        if cam and cam not in self.cam_methods():
            raise ValueError(f"the exported graph gives no {cam} heat maps")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        names = [LOGITS, FEATURES, CLASS_MAPS] if cam else [LOGITS, FEATURES]
        logits, features, *maps = self.session.run(names, {INPUT: batch})
        heatmaps = None
        if maps:
            heatmaps = explain.one_pass_cam(maps[0], explain.cam_classes(logits, class_index), tuple(batch.shape[-2:]))
        if tta:
            flipped = self.session.run([LOGITS], {INPUT: np.ascontiguousarray(batch[..., ::-1])})[0]
            logits = (logits + flipped) / 2
        return EngineOutput(logits, features, heatmaps, explain.ONE_PASS if maps else None)
