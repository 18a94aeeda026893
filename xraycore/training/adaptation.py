"""Site adaptation's torch side: fine-tune the tail of a trained network on a site's films, fast on a CPU.

Why a module of its own: a site has a few hundred labelled films and a CPU, and every estimate is cross-fitted
(each fold adapts again). So the frozen part of the network runs once per film and view: :func:`cache_views`
keeps the activations that enter the adapted part (the classifier's input for ``head``, the last stage's input for
``last-stage``, the augmented grey film itself for ``full``) over a few augmented views, and :func:`fit_tail`
trains only the tail on them, as often as the cross-fitting asks, from the original weights each time.
Batch norm keeps its running statistics (the network is in eval mode throughout), so a film's clean view gives
the logits the Predictor will give. The result is a *delta*: only the tensors that changed
(:func:`changed_tensors`), which a site profile stores and both backends lay over the original weights.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from xraycore.data.augment import BatchAugmentation, build_augmentation
from xraycore.metrics.regions import band_mask, body_grey

HEAD, LAST_STAGE, LAST_TWO_BLOCKS, FULL = "head", "last-stage", "last-two-blocks", "full"
METHODS = (HEAD, LAST_STAGE, LAST_TWO_BLOCKS, FULL)
# Learning rates per method (AdamW), chosen by cross-fitted figures on the site sample (docs/model.md).
LEARNING_RATES = {HEAD: 1e-3, LAST_STAGE: 3e-4, LAST_TWO_BLOCKS: 3e-4, FULL: 1e-4}
DEFAULT_VIEWS = 6  # the clean film and five augmented views, cached once
BATCH_SIZE = 32
# Added to a member's own augmentations when the views should not let the border speak (the shortcut remedy)
ERASING_VIEW = {"name": "border_erase", "p": 0.5}

Progress = Callable[[int, int], None]


@dataclass
class Split:
    """A network cut in two: ``trunk`` (frozen, run once per view) and the trained tail, ``features`` (the map the
    heat map is drawn on, (N, C, h, w); the pooled features for ``head``) then ``head`` (pooling and classifier);
    ``prefixes`` name the state-dict entries the tail owns."""

    trunk: Callable[[torch.Tensor], torch.Tensor]
    features: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]
    prefixes: tuple[str, ...]

    def tail(self, activations: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(activations))


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, candidate in model.named_modules() if candidate is module)


def split_network(model: nn.Module, method: str) -> Split:
    """Where ``method`` cuts ``model`` (timm's EfficientNet family, MobileNetV2 among them, or the scratch CNN
    for ``last-stage`` and ``last-two-blocks``; any timm-shaped network for ``head`` and ``full``). ValueError in
    one sentence otherwise."""
    if method not in METHODS:
        raise ValueError(f"Unknown adaptation method {method!r}; choose {', '.join(METHODS)}.")
    if method == FULL:
        return Split(lambda x: x, model.forward_features, model.forward_head, ("",))
    classifier = model.get_classifier()
    if method == HEAD:
        return Split(lambda x: model.forward_head(model.forward_features(x), pre_logits=True), lambda a: a, classifier,
                     (_module_name(model, classifier) + ".",))
    head = _module_name(model, classifier) + "."
    if all(hasattr(model, name) for name in ("blocks", "conv_stem", "bn1", "conv_head", "bn2")):
        last = len(model.blocks) - 1
        trunk, tail, owned = list(model.blocks[:last]), [model.blocks[last]], [f"blocks.{last}."]
        if method == LAST_TWO_BLOCKS:  # and the last block of the stage before it
            before = trunk.pop()
            trunk, tail = trunk + list(before[:-1]), [before[-1]] + tail
            owned.insert(0, f"blocks.{last - 1}.{len(before) - 1}.")
        return Split(nn.Sequential(model.conv_stem, model.bn1, *trunk),
                     nn.Sequential(*tail, model.conv_head, model.bn2), model.forward_head,
                     (*owned, "conv_head.", "bn2.", head))
    if isinstance(getattr(model, "features", None), nn.Sequential):
        first = len(model.features) - (2 if method == LAST_TWO_BLOCKS else 1)
        return Split(model.features[:first], model.features[first:], model.forward_head,  # slices share the modules
                     tuple(f"features.{index}." for index in range(first, len(model.features))) + (head,))
    raise ValueError(f"The {LAST_STAGE} method does not know where the last stage of this network begins; "
                     f"use {HEAD} or {FULL}.")


def band_share(features: torch.Tensor, classifier: nn.Module, size: int) -> torch.Tensor:
    """Each film's share (N, K) of each class's CAM in the film's outer band (:func:`region_share`)."""
    return region_share(features, classifier, size, torch.from_numpy(band_mask((size, size))).to(features.device))


def class_cams(features: torch.Tensor, classifier: nn.Module, size: int) -> torch.Tensor:
    """Each film's CAM of each class (N, K, S, S): ReLU of the classifier's weights over the feature map, which is
    Grad-CAM for a network that average-pools into a linear classifier, upsampled to ``size`` as the heat map is."""
    return nn.functional.interpolate(_cell_cams(features, classifier), size=(size, size), mode="bilinear",
                                     align_corners=False)


def _cell_cams(features: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
    return torch.relu(torch.einsum("kc,nchw->nkhw", classifier.weight, features))


def _upsampling_matrix(source: int, size: int) -> torch.Tensor:
    """(size, source): row p says how much of each source cell bilinear upsampling (as :func:`class_cams` does it)
    puts in pixel p; the 2-D upsampling is this matrix on each axis."""
    basis = torch.eye(source).unsqueeze(1)  # (source, 1, source)
    return nn.functional.interpolate(basis, size=size, mode="linear", align_corners=False)[:, 0].T


def region_weights(masks: torch.Tensor, feature_shape: Sequence[int], size: int) -> torch.Tensor:
    """Masks (..., S, S) → weights (..., h, w): the part of each feature cell's upsampled CAM that lands inside the
    mask. Upsampling is linear, so a CAM's mass inside a mask at S × S is its h × w map weighted by these: the
    penalties of :func:`fit_tail` compute them once, not an S × S map on every step."""
    rows = _upsampling_matrix(int(feature_shape[0]), size).to(masks.device)
    columns = _upsampling_matrix(int(feature_shape[1]), size).to(masks.device)
    return torch.einsum("ph,...pq,qw->...hw", rows, masks.float(), columns)


def _whole_film_weights(feature_shape: Sequence[int], size: int, device: torch.device) -> torch.Tensor:
    """The :func:`region_weights` of the whole film: the denominator of every share."""
    return region_weights(torch.ones((size, size), device=device), feature_shape, size)


def weighted_share(features: torch.Tensor, classifier: nn.Module, inside: torch.Tensor,
                   everywhere: torch.Tensor) -> torch.Tensor:
    """Each film's share (N, K) of each class's upsampled CAM inside a region given by its :func:`region_weights`
    (``inside``: one (h, w) or one per film, (N, h, w); ``everywhere``: the weights of the whole film)."""
    cams = _cell_cams(features, classifier)
    inside = inside.to(cams.dtype).unsqueeze(-3) if inside.dim() == 3 else inside.to(cams.dtype)
    return (cams * inside).sum(dim=(-2, -1)) / (cams * everywhere.to(cams.dtype)).sum(dim=(-2, -1)).clamp(min=1e-6)


def region_share(features: torch.Tensor, classifier: nn.Module, size: int, masks: torch.Tensor) -> torch.Tensor:
    """Each film's share (N, K) of each class's CAM (:func:`class_cams`) inside ``masks`` (one (S, S) mask, or one
    per film, (N, S, S)). Differentiable: the "right for the right reasons" penalties take it."""
    shape = features.shape[-2:]
    everywhere = _whole_film_weights(shape, size, features.device)
    return weighted_share(features, classifier, region_weights(masks, shape, size), everywhere)


def outside_lung_share(features: torch.Tensor, classifier: nn.Module, size: int, lungs: torch.Tensor,
                       class_index: int | None = None) -> torch.Tensor:
    """The mean share of the CAMs (of ``class_index`` only, or of every class) outside each film's lung fields
    (``lungs``: (N, S, S), all False where none were found), over the films that have lung fields; 0 when none has.
    The lung penalty of :func:`fit_tail`."""
    shape = features.shape[-2:]
    everywhere = _whole_film_weights(shape, size, features.device)
    return _outside_share(features, classifier, region_weights(lungs, shape, size), everywhere, class_index)


def _outside_share(features: torch.Tensor, classifier: nn.Module, lung_weights: torch.Tensor,
                   everywhere: torch.Tensor, class_index: int | None) -> torch.Tensor:
    found = lung_weights.flatten(1).sum(dim=1) > 0
    if not bool(found.any()):
        return features.new_zeros(())
    inside = weighted_share(features[found], classifier, lung_weights[found], everywhere)
    return (1 - (inside if class_index is None else inside[:, class_index])).mean()


def grey_views(greys: np.ndarray, specs: Sequence, views: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """(N, V, 1, S, S) float views in [0, 1] of uint8 grey films (N, H, W): the clean film first (the
    Predictor's input, to float rounding), then ``views - 1`` drawn from the training augmentation ``specs``."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        batch = torch.from_numpy(np.ascontiguousarray(greys)).unsqueeze(1).float().div_(255.0)
        augment = build_augmentation(list(specs)).train()
        out = [batch] + [augment(batch.clone()) for _ in range(views - 1)]
    finally:
        torch.random.set_rng_state(generator_state)
    stacked = torch.stack([_resize(view.clamp(0, 1), image_size) for view in out], dim=1)
    return stacked


def band_blanked(views: torch.Tensor) -> torch.Tensor:
    """Grey views (N, V, 1, S, S) with the outer band of each filled with its body's median grey: the shortcut
    report's band probe (:mod:`xraycore.evaluation.shortcut_probes`) made on cached views, so a recipe's held films
    can be probed, and the blanked views tried as training views (experiments/site_recipes.py)."""
    size = views.shape[-1]
    band = torch.from_numpy(band_mask((size, size)))
    greys = torch.tensor([[body_grey(view[0].numpy()) for view in film] for film in views], dtype=views.dtype)
    return torch.where(band, greys[..., None, None, None], views)


def _resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    if batch.shape[-2:] == (size, size):
        return batch
    return nn.functional.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def normaliser(mean: Sequence[float], std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Grey [0, 1] (N, 1, S, S) → the network's normalised (N, 3, S, S) input, as data.augment does it."""
    reference = BatchAugmentation([], 1, mean, std)
    return lambda x: torch.addcmul(reference.offset.to(x), x.expand(-1, len(mean), -1, -1), reference.scale.to(x))


@torch.no_grad()
def cache_views(model: nn.Module, method: str, views: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                device: torch.device, progress: Progress | None = None) -> torch.Tensor:
    """What enters the tail for every film and view (N, V, ...), computed once, on the CPU. ``full`` keeps the grey
    views themselves (the whole network is the tail)."""
    if method == FULL:
        return views
    model.eval().to(device)
    split, normalise = split_network(model, method), normaliser(mean, std)
    n, v = views.shape[:2]
    flat, out = views.reshape(n * v, *views.shape[2:]), []
    for start in range(0, n * v, BATCH_SIZE):
        out.append(split.trunk(normalise(flat[start:start + BATCH_SIZE].to(device))).float().cpu())
        if progress:
            progress(min(start + BATCH_SIZE, n * v), n * v)
    activations = torch.cat(out)
    return activations.reshape(n, v, *activations.shape[1:])


def _tail_input(method: str, batch: torch.Tensor, normalise: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return normalise(batch) if method == FULL else batch


def fit_tail(model: nn.Module, method: str, cached: torch.Tensor, labels: np.ndarray, *, epochs: int,
             mean: Sequence[float], std: Sequence[float], device: torch.device, seed: int = 0,
             learning_rate: float | None = None, band_penalty: float = 0.0, image_size: int = 224,
             lungs: torch.Tensor | None = None, lung_penalty: float = 0.0, lung_class: int | None = None,
             anchor: float = 0.0, label_smoothing: float = 0.0, average_from: float | None = None,
             progress: Progress | None = None) -> dict[str, torch.Tensor]:
    """Train a copy of ``model``'s tail on cached views (each epoch: every film once, in one of its views drawn at
    random), class-balanced cross-entropy, AdamW with a cosine schedule. ``band_penalty`` > 0 adds that weight times
    the mean share of each class's CAM in the film's outer band (:func:`band_share`; not for ``head``, which has no
    map). ``lung_penalty`` > 0 adds that weight times the share of the CAMs outside the lung fields of each view
    (``lungs``, (N, V, S, S) as ``cached``; :func:`outside_lung_share`), of ``lung_class``'s map only (the one the
    heat map shows) or of every class's (None). ``anchor`` > 0 adds that weight times the squared distance of the
    trained tensors from the original ones (L2-SP: the tail stays near what the large training set taught it).
    ``label_smoothing`` softens the targets (bounded logits, so the scale of networks fitted on different folds
    agrees better); ``average_from`` (a fraction of the epochs, e.g. 0.5) returns the mean of the tail's weights at
    the end of every epoch from that point on (stochastic weight averaging; batch norm is frozen, so nothing is
    re-estimated). Returns the delta (:func:`changed_tensors`);
    ``model`` itself is untouched."""
    adapted = copy.deepcopy(model).to(device).eval()  # eval: batch norm keeps its statistics, dropout is off
    split, normalise = split_network(adapted, method), normaliser(mean, std)
    trained = [p for name, p in adapted.named_parameters() if name.startswith(split.prefixes)]
    for parameter in adapted.parameters():
        parameter.requires_grad_(False)
    for parameter in trained:
        parameter.requires_grad_(True)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    counts = torch.bincount(labels_t, minlength=2).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=(counts.sum() / (len(counts) * counts)).to(device),
                                  label_smoothing=label_smoothing)
    rate, penalty = learning_rate or LEARNING_RATES[method], applied_penalty(method, band_penalty)
    lung_weight = applied_penalty(method, lung_penalty) if lungs is not None else 0.0
    originals = [parameter.detach().clone() for parameter in trained] if anchor else []
    optimiser = torch.optim.AdamW(trained, lr=rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    n, views = cached.shape[:2]
    steps_per_epoch = math.ceil(n / BATCH_SIZE)
    total = max(1, epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    weights = _penalty_weights(split, _tail_input(method, cached[:1, 0].to(device), normalise), image_size,
                               band=bool(penalty), lungs=lungs if lung_weight else None)
    done, averaged, first_averaged = 0, None, _first_averaged_epoch(epochs, average_from)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        chosen = torch.randint(views, (n,), generator=generator)
        for start in range(0, n, BATCH_SIZE):
            index = order[start:start + BATCH_SIZE]
            batch = _tail_input(method, cached[index, chosen[index]].to(device), normalise)
            features = split.features(batch)
            loss = loss_fn(split.head(features), labels_t[index].to(device))
            if penalty:
                loss = loss + penalty * weighted_share(features, adapted.get_classifier(), weights["band"],
                                                       weights["everywhere"]).mean()
            if lung_weight:
                loss = loss + lung_weight * _outside_share(features, adapted.get_classifier(),
                                                           weights["lungs"][index, chosen[index]],
                                                           weights["everywhere"], lung_class)
            if anchor:
                loss = loss + anchor * sum(((p - p0) ** 2).sum() for p, p0 in zip(trained, originals))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            done += 1
            if progress:
                progress(done, total)
        if epoch >= first_averaged:
            averaged = _running_mean(averaged, trained, epoch - first_averaged)
    if averaged is not None:
        with torch.no_grad():
            for parameter, mean_value in zip(trained, averaged):
                parameter.copy_(mean_value)
    return changed_tensors(model, adapted)


def _first_averaged_epoch(epochs: int, average_from: float | None) -> int:
    """The first epoch whose end weights enter the weight average (``epochs``: none, no averaging)."""
    return epochs if average_from is None else min(epochs - 1, int(epochs * average_from))


@torch.no_grad()
def _running_mean(averaged: list[torch.Tensor] | None, trained: list[torch.Tensor], seen: int) -> list[torch.Tensor]:
    """The mean of ``seen`` earlier snapshots (``averaged``) updated with the current weights."""
    if averaged is None:
        return [parameter.detach().clone() for parameter in trained]
    for mean_value, parameter in zip(averaged, trained):
        mean_value.add_((parameter.detach() - mean_value) / (seen + 1))
    return averaged


@torch.no_grad()
def _penalty_weights(split: Split, sample: torch.Tensor, size: int, *, band: bool,
                     lungs: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The :func:`region_weights` the penalties need, computed once per fit on the feature map's grid: the whole
    film's, the outer band's and every view's lung fields' ((N, V, h, w)), on the fit's device."""
    if not band and lungs is None:
        return {}
    shape = split.features(sample).shape[-2:]
    device = sample.device
    weights = {"everywhere": _whole_film_weights(shape, size, device)}
    if band:
        weights["band"] = region_weights(torch.from_numpy(band_mask((size, size))).to(device), shape, size)
    if lungs is not None:
        weights["lungs"] = torch.cat([region_weights(chunk, shape, size) for chunk in lungs.split(64)]).to(device)
    return weights


def applied_penalty(method: str, weight: float) -> float:
    """The heat-map penalty (band or lung) ``method`` can apply: none for ``head``, whose tail sees pooled features,
    not a map."""
    return 0.0 if method == HEAD else float(weight)


def changed_tensors(original: nn.Module, adapted: nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries of ``adapted`` that differ from ``original``'s, on the CPU, float32."""
    before = original.state_dict()
    return {name: tensor.detach().float().cpu().contiguous().clone() for name, tensor in adapted.state_dict().items()
            if not torch.equal(tensor.detach().cpu(), before[name].detach().cpu())}


@torch.no_grad()
def tail_logits(model: nn.Module, method: str, cached: torch.Tensor, delta: dict[str, torch.Tensor], *,
                mean: Sequence[float], std: Sequence[float], device: torch.device) -> np.ndarray:
    """Raw logits (N, K) of the clean view (view 0) of cached films through the tail with ``delta`` laid over it."""
    adapted = with_delta(model, delta).to(device).eval()
    split, normalise = split_network(adapted, method), normaliser(mean, std)
    out = [split.tail(_tail_input(method, cached[start:start + BATCH_SIZE, 0].to(device), normalise)).float().cpu()
           for start in range(0, cached.shape[0], BATCH_SIZE)]
    return torch.cat(out).numpy().astype(np.float64)


def with_delta(model: nn.Module, delta: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with ``delta``'s tensors laid over its weights (ValueError naming a tensor it lacks)."""
    adapted = copy.deepcopy(model)
    apply_delta(adapted, delta)
    return adapted


def apply_delta(model: nn.Module, delta: dict[str, torch.Tensor]) -> None:
    """Lay ``delta`` over ``model``'s weights in place; ValueError when a name or shape is not the network's."""
    state = model.state_dict()
    wrong = [name for name, tensor in delta.items() if name not in state or state[name].shape != tensor.shape]
    if wrong:
        raise ValueError(f"This site profile's weights do not fit the network (first misfit: {wrong[0]}); "
                         "it was adapted from another model.")
    with torch.no_grad():
        for name, tensor in delta.items():
            state[name].copy_(tensor.to(state[name].dtype))
