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
from xraycore.explain.lung_fields import estimate_lung_fields
from xraycore.inference.backends import choice as backends
from xraycore.inference.predictor import Predictor
from xraycore.runs import directory as runs
from xraycore.training import adaptation

Progress = Callable[[str, int, int], None]
Cached = tuple[torch.Tensor, torch.Tensor | None]  # what enters the tail (N, V, ...), and each view's lung fields
GRAPH_CHECK_FILMS = 8
GRAPH_TOLERANCE = 1e-3  # largest logit difference between ONNX Runtime and torch with the profile


def adapt_networks(predictor: Predictor, site: dict[str, Any], replayed: dict[str, Any] | None,
                   recipe: dict[str, Any], folds: int, progress: Progress | None = None, seed: int = 0) -> dict[str, Any]:
    """Cross-fitted held-fold logits of the ensemble (members' logits over their temperatures, averaged as the
    Predictor averages them), each network's delta fitted on every film, and what the profile records of each.
    ``recipe``: method, epochs, band_penalty, erasing_views and lung_penalty (:func:`site_adaptation.adapt_folder`)."""
    device, method = models.pick_device(predictor.device), recipe["method"]
    labels = site["labels"]
    splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(labels, labels, site["groups"]))
    held = np.zeros((labels.size, len(predictor.class_names)))
    deltas, records, weights, lung_memo = {}, {}, {}, []
    for index, network in enumerate(predictor.networks):
        key = site_profiles.network_key(network.run.path, predictor.run.path)
        tell = _stage(progress, f"{key}: ")
        cached = _cache(network, recipe, site["greys"][index], device, tell, seed, lung_memo)
        extra = None
        if replayed is not None and len(replayed["labels"]):
            extra = (*_cache(network, recipe, replayed["greys"][index], device, tell, seed, lung_memo),
                     replayed["labels"])
        fit = _fitter(network, recipe, device, seed, predictor.positive_index)
        for fold, (train, test) in enumerate(splits):
            delta = fit(*_with_replay(_films(cached, train), labels[train], extra),
                        lambda done, total, fold=fold: tell(f"fold {fold + 1}/{folds}", done, total))
            held[test] += adaptation.tail_logits(network.model, method, cached[0][test], delta, mean=network.mean,
                                                 std=network.std, device=device) / network.temperature
        deltas[key] = {name: tensor.numpy() for name, tensor in
                       fit(*_with_replay(cached, labels, extra), lambda d, t: tell("final fit, every film", d, t)).items()}
        records[key] = {"graph_sha256": check_graph(network, deltas[key])}
        weights[key] = network.run.file(runs.WEIGHTS_FILE)
    return {"held_logits": held / len(predictor.networks), "deltas": deltas, "networks": records, "weights": weights}


def _stage(progress: Progress | None, prefix: str) -> Callable[[str, int, int], None]:
    return (lambda stage, done, total: progress(prefix + stage, done, total)) if progress else (lambda *_: None)


def _cache(network: Any, recipe: dict[str, Any], greys: np.ndarray, device: torch.device, tell: Callable,
           seed: int, lung_memo: list[tuple[torch.Tensor, torch.Tensor]]) -> Cached:
    augment = list((network.run.config.get("train") or {}).get("augment") or ["hflip"])
    augment += [adaptation.ERASING_VIEW] if recipe["erasing_views"] else []
    views = adaptation.grey_views(greys, augment, adaptation.DEFAULT_VIEWS, network.image_size, seed=seed)
    lungs = _memo_lungs(views, lung_memo) if recipe["lung_penalty"] else None
    return (adaptation.cache_views(network.model, recipe["method"], views, network.mean, network.std, device,
                                   lambda done, total: tell("caching views", done, total)), lungs)


def _films(cached: Cached, index: np.ndarray) -> Cached:
    return cached[0][index], None if cached[1] is None else cached[1][index]


def _memo_lungs(views: torch.Tensor, memo: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The lung fields of ``views``, estimated once for views another network of the ensemble already had (members
    trained with the same augmentation draw the same views): the estimate is a large part of a lung-penalty fit."""
    for seen, lungs in memo:
        if seen.shape == views.shape and torch.equal(seen, views):
            return lungs
    memo.append((views, view_lungs(views)))
    return memo[-1][1]


def view_lungs(views: torch.Tensor) -> torch.Tensor:
    """The lung-field estimate of every grey view (N, V, 1, S, S) → (N, V, S, S) bool, all False where none was
    found: made on the augmented view itself, so the mask follows its flips, shifts and erasing."""
    n, v, _, size, _ = views.shape
    masks = torch.zeros((n, v, size, size), dtype=torch.bool)
    for film in range(n):
        for view in range(v):
            fields = estimate_lung_fields(views[film, view, 0].numpy())
            if fields.found:
                masks[film, view] = torch.from_numpy(fields.mask)
    return masks


def _with_replay(cached: Cached, labels: np.ndarray, extra: tuple[torch.Tensor, torch.Tensor | None, np.ndarray] | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    if extra is None:
        return *cached, labels
    lungs = None if cached[1] is None else torch.cat([cached[1], extra[1]])
    return torch.cat([cached[0], extra[0]]), lungs, np.concatenate([labels, extra[2]])


def _fitter(network: Any, recipe: dict[str, Any], device: torch.device, seed: int,
            shown_class: int | None) -> Callable:
    """One network's fit under ``recipe``; the lung penalty acts on ``shown_class``'s map, the one Diagnose draws."""
    def fit(cached: torch.Tensor, lungs: torch.Tensor | None, labels: np.ndarray,
            progress: Callable[[int, int], None]) -> dict[str, torch.Tensor]:
        return adaptation.fit_tail(network.model, recipe["method"], cached, labels, epochs=recipe["epochs"],
                                   mean=network.mean, std=network.std, device=device, seed=seed,
                                   band_penalty=recipe["band_penalty"], image_size=network.image_size,
                                   lungs=lungs, lung_penalty=recipe["lung_penalty"], lung_class=shown_class,
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
