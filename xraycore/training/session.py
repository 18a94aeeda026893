"""What one training process holds while it trains a run: the recipe, the images, the network, the device and,
on rank 0, the run directory.

The loop, the final scoring (:mod:`validation`) and the run's record (:mod:`run_record`) all take a
:class:`Session`; it lives in a module of its own so that they can import it without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from xraycore import data as xdata
from xraycore.models import registry as models
from xraycore.runs import directory as runs
from xraycore.training import distributed
from xraycore.training.config import TrainConfig
from xraycore.training.sharded_prediction import predict_indices

Progress = Callable[[dict[str, Any]], None]


def silent(event: dict[str, Any]) -> None:
    """The progress callback that reports nothing (training called without one)."""


@dataclass
class Splits:
    """The run's images: one decoded cache and the indices of each split in it (see run_data.prepare_data)."""

    cache: xdata.ImageCache
    class_names: list[str]
    train: list[int]
    val: list[int]
    test: list[int]
    description: str
    watch: xdata.ImageCache | None = None  # --watch-data: scored every epoch, never trained on
    watch_labels: list[int] | None = None


def per_process_batch(config: TrainConfig, ctx: distributed.Context) -> int:
    """--batch-size is the global batch: each of the world's processes takes its share."""
    return max(1, config.batch_size // ctx.world_size)


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Channels-last speeds convolutions up on CUDA and on oneDNN CPUs (2.6x for MobileNetV2 here); not on MPS."""
    return config.channels_last and device.type in ("cuda", "cpu")


@dataclass
class Session:
    """What one training process holds while it trains a run. Only rank 0 has ``run`` (it writes)."""

    config: TrainConfig
    splits: Splits
    spec: models.BackboneSpec
    model: torch.nn.Module
    device: torch.device
    ctx: distributed.Context
    progress: Progress
    run: runs.Run | None = None
    tracker: Any = None  # rank 0's tracking.Tracker while the run is tracked in MLflow

    @property
    def batch_size(self) -> int:
        return per_process_batch(self.config, self.ctx)

    @property
    def channels_last(self) -> bool:
        return uses_channels_last(self.config, self.device)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return models.input_normalisation(self.spec, self.config.normalisation)

    def say(self, text: str) -> None:
        """A message for whoever watches (rank 0 only: the others would repeat it)."""
        if self.ctx.is_main:
            self.progress({"kind": "message", "text": text})

    def evaluate(self, indices: list[int], with_features: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Logits, labels (and features) of some cached images at the evaluation size."""
        mean, std = self.mean_std
        dataset = xdata.XrayDataset(self.splits.cache, indices, output_size=self.config.eval_size or self.config.image_size,
                                    mean=mean, std=std)
        return predict_indices(self.model, dataset, self.batch_size * 2, self.device, self.ctx,
                               with_features=with_features, channels_last=self.channels_last, ood_spec=self.spec)
