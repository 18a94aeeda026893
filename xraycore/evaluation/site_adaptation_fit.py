"""Site adaptation's fitting, apart from its refusals and storage (:mod:`site_adaptation`) because it imports torch:
the views of every film cached once per network, the cross-fitting (each fold adapts every network again from the
original weights and scores the films it left out), the final fit on every film, and the proof that the exported
graphs answer with the adapted weights as torch does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from xraycore import models
from xraycore.clinical import site_profiles
from xraycore.common.hashing import sha256_of_file
from xraycore.inference.backends import choice as backends
from xraycore.inference.predictor import Predictor
from xraycore.runs import directory as runs
from xraycore.training import adaptation

Progress = Callable[[str, int, int], None]
GRAPH_CHECK_FILMS = 8
GRAPH_TOLERANCE = 1e-3  # largest logit difference between ONNX Runtime and torch with the profile


def adapt_networks(predictor: Predictor, site: dict[str, Any], replayed: dict[str, Any] | None,
                   recipe: dict[str, Any], folds: int, progress: Progress | None = None, seed: int = 0) -> dict[str, Any]:
    """Cross-fitted held-fold logits of the ensemble (members' logits over their temperatures, averaged as the
    Predictor averages them), each network's delta fitted on every film, and what the profile records of each.
    ``recipe``: method, epochs, band_penalty and erasing_views (:func:`site_adaptation.adapt_folder`)."""
    device, method = models.pick_device(predictor.device), recipe["method"]
    labels = site["labels"]
    splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(labels, labels, site["groups"]))
    held = np.zeros((labels.size, len(predictor.class_names)))
    deltas, records, weights = {}, {}, {}
    for index, network in enumerate(predictor.networks):
        key = site_profiles.network_key(network.run.path, predictor.run.path)
        tell = _stage(progress, f"{key}: ")
        erasing = recipe["erasing_views"]
        cached = _cache(network, method, site["greys"][index], device, tell, seed, erasing)
        extra = None
        if replayed is not None and len(replayed["labels"]):
            extra = (_cache(network, method, replayed["greys"][index], device, tell, seed, erasing), replayed["labels"])
        fit = _fitter(network, recipe, device, seed)
        for fold, (train, test) in enumerate(splits):
            delta = fit(*_with_replay(cached[train], labels[train], extra),
                        lambda done, total, fold=fold: tell(f"fold {fold + 1}/{folds}", done, total))
            held[test] += adaptation.tail_logits(network.model, method, cached[test], delta, mean=network.mean,
                                                 std=network.std, device=device) / network.temperature
        deltas[key] = {name: tensor.numpy() for name, tensor in
                       fit(*_with_replay(cached, labels, extra), lambda d, t: tell("final fit, every film", d, t)).items()}
        records[key] = {"graph_sha256": check_graph(network, deltas[key])}
        weights[key] = network.run.file(runs.WEIGHTS_FILE)
    return {"held_logits": held / len(predictor.networks), "deltas": deltas, "networks": records, "weights": weights}


def _stage(progress: Progress | None, prefix: str) -> Callable[[str, int, int], None]:
    return (lambda stage, done, total: progress(prefix + stage, done, total)) if progress else (lambda *_: None)


def _cache(network: Any, method: str, greys: np.ndarray, device: torch.device, tell: Callable, seed: int,
           erasing: bool) -> torch.Tensor:
    augment = list((network.run.config.get("train") or {}).get("augment") or ["hflip"])
    augment += [adaptation.ERASING_VIEW] if erasing else []
    views = adaptation.grey_views(greys, augment, adaptation.DEFAULT_VIEWS, network.image_size, seed=seed)
    return adaptation.cache_views(network.model, method, views, network.mean, network.std, device,
                                  lambda done, total: tell("caching views", done, total))


def _with_replay(cached: torch.Tensor, labels: np.ndarray, extra: tuple[torch.Tensor, np.ndarray] | None
                 ) -> tuple[torch.Tensor, np.ndarray]:
    if extra is None:
        return cached, labels
    return torch.cat([cached, extra[0]]), np.concatenate([labels, extra[1]])


def _fitter(network: Any, recipe: dict[str, Any], device: torch.device, seed: int) -> Callable:
    def fit(cached: torch.Tensor, labels: np.ndarray, progress: Callable[[int, int], None]) -> dict[str, torch.Tensor]:
        return adaptation.fit_tail(network.model, recipe["method"], cached, labels, epochs=recipe["epochs"],
                                   mean=network.mean, std=network.std, device=device, seed=seed,
                                   band_penalty=recipe["band_penalty"], image_size=network.image_size,
                                   progress=progress)
    return fit


def check_graph(network: Any, delta: dict[str, np.ndarray],
                ) -> str | None:
    """The sha256 of the network's exported graph once ONNX Runtime, with the delta overriding its initializers,
    answers as torch does on a few site films (None when there is no graph or no ONNX Runtime: torch answers).
    ValueError in one sentence when the graph's tensor names or answers differ (a graph exported before profiles)."""
    graph = network.run.file(backends.GRAPH_FILE)
    if not graph.is_file() or not backends.installed("onnxruntime"):
        return None
    import onnx

    names = {initializer.name for initializer in onnx.load(str(graph), load_external_data=False).graph.initializer}
    if missing := site_profiles.missing_graph_names(delta, names):
        raise ValueError(f"The exported graph {graph} does not name its weights as the network does (first missing: "
                         f"{missing[0]}); export it again (python -m xraycore export --model MODEL --format onnx).")
    from xraycore.inference.backends.onnx_runtime import OnnxEngine

    engine = OnnxEngine(network.run, network.run.config,
                        {site_profiles.GRAPH_PREFIX + name: array for name, array in delta.items()})
    # random inputs: the check compares two runtimes on the same weights, not accuracy
    batch = np.random.default_rng(0).standard_normal((GRAPH_CHECK_FILMS, 3, network.image_size, network.image_size))
    batch = batch.astype(np.float32)
    tensors = {name: torch.from_numpy(array) for name, array in delta.items()}
    expected = adaptation.with_delta(network.model, tensors).eval()
    with torch.no_grad():
        want = expected(torch.from_numpy(batch)).numpy()
    got = engine.forward(batch, False, None, None).logits
    if float(np.max(np.abs(want - got))) > GRAPH_TOLERANCE:
        raise ValueError(f"ONNX Runtime with the adapted weights disagrees with torch on {graph}; export it again.")
    return sha256_of_file(graph)
