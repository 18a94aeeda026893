"""What a built network's forward pass exposes: its CAM layer and classifier weights, out-of-domain features.

Split from :mod:`xraycore.models.builder` because it serves a different moment: the builder makes and freezes
a network for training; this module reads inside one that is running, at the places the registry names
(``cam_layer``, ``ood_layers``), for explain (CAM), ood (feature distances), validation and the torch backend.
"""

from __future__ import annotations

import torch
from torch import nn

from xraycore.models.registry import PROBE_SIZE, BackboneSpec, as_spec


def cam_target_layer(model: nn.Module, spec_or_name: BackboneSpec | str) -> nn.Module:
    """The registry's Grad-CAM layer inside a model built by build_model."""
    return model.get_submodule(as_spec(spec_or_name).cam_layer)


def one_pass_cam_weights(model: nn.Module, spec_or_name: BackboneSpec | str) -> torch.Tensor | None:
    """The classifier's (K, C) weights when Grad-CAM of ``model`` is CAM from its forward pass (the
    registry's one_pass_cam and timm's own linear classifier, not a custom head); None otherwise."""
    classifier = model.get_classifier()
    if not as_spec(spec_or_name).one_pass_cam or not isinstance(classifier, nn.Linear):
        return None
    return classifier.weight


class OodFeatures:
    """What out-of-domain scoring reads, captured during a model's own forward passes (no extra pass):
    mean and standard deviation per channel of the registry's ``ood_layers``, then the classifier's input.

    Use as a context manager around one or more forwards; ``features(k)`` is the (N, D) tensor of the
    k-th forward and ``widths`` the sizes of its blocks (what xraycore.ood.distance.fit_ood fits one distance
    on).
    """

    def __init__(self, model: nn.Module, spec_or_name: BackboneSpec | str | None) -> None:
        self.model = model
        names = as_spec(spec_or_name).ood_layers if spec_or_name is not None else ()
        self.layers = [model.get_submodule(name) for name in names]
        self.passes: list[list[torch.Tensor]] = []
        self._current: list[torch.Tensor] = []
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "OodFeatures":
        for layer in self.layers:
            self._hooks.append(layer.register_forward_hook(self._pool))
        self._hooks.append(self.model.get_classifier().register_forward_pre_hook(self._pre_logits))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _pool(self, _module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        activations = output.detach().float()
        self._current.append(torch.cat([activations.mean(dim=(2, 3)), activations.std(dim=(2, 3))], dim=1))

    def _pre_logits(self, _module: nn.Module, inputs: tuple) -> None:
        self.passes.append([*self._current, inputs[0].detach().float().flatten(1)])
        self._current = []

    def features(self, forward: int = 0) -> torch.Tensor:
        return torch.cat(self.passes[forward], dim=1)

    @property
    def widths(self) -> list[int]:
        return [block.shape[1] for block in self.passes[0]]


def ood_feature_widths(model: nn.Module, spec_or_name: BackboneSpec | str | None) -> list[int]:
    """Sizes of the out-of-domain feature blocks (see OodFeatures), from one tiny forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad(), OodFeatures(model, spec_or_name) as captured:
        model(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
    model.train(was_training)
    return captured.widths


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate (pre-logits) features, shape (N, D): the input of out-of-domain scoring."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
