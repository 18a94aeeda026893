"""The torch side of the cache: a Dataset over its rows, and the training input (raw rows + batch augmentation).

Validation and prediction images are normalised per image here (to_network_input, the twin of
decode.network_input); training images leave the DataLoader as uint8 and are finished a batch at a time on
the training device by augment.BatchAugmentation.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torchvision.transforms import v2

from xraycore.data.augment import BatchAugmentation
from xraycore.data.cache import ImageCache
from xraycore.data.decode import IMAGENET_MEAN, IMAGENET_STD


def to_network_input(
    grey: np.ndarray | torch.Tensor,
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 grey (H, W) or (1, H, W) -> float (3, size, size): scaled to [0, 1], repeated to 3 channels, normalised.

    Used by XrayDataset; :func:`xraycore.data.decode.network_input` is its numpy twin for prediction (tested equal).
    """
    image = torch.from_numpy(np.array(grey)) if isinstance(grey, np.ndarray) else grey  # a copy: cache rows are read-only
    image = image.reshape(1, *image.shape[-2:])
    if size and tuple(image.shape[-2:]) != (size, size):
        image = v2.functional.resize(image, [size, size], antialias=True)
    image = image.float().div_(255.0).expand(3, -1, -1)
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (image - mean_tensor) / std_tensor


class XrayDataset(torch.utils.data.Dataset):
    """(image, label, cache row) triples from an ImageCache.

    By default the image is a float tensor (3, output_size, output_size) normalised with the model's mean/std
    (the grey channel repeated three times); with `raw` it is the cached uint8 (1, H, W), for a
    BatchAugmentation to finish on the device. The cache row indexes `cache.samples`, which maps predictions
    back to files.
    """

    def __init__(
        self,
        cache: ImageCache,
        indices: Sequence[int] | None = None,
        output_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        raw: bool = False,
    ) -> None:
        self.cache = cache
        self.indices = list(range(len(cache))) if indices is None else list(indices)
        self.output_size = output_size or cache.size
        self.mean, self.std = tuple(mean), tuple(std)
        self.raw = raw

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self) -> np.ndarray:
        return np.array([self.cache.samples[row].label for row in self.indices], dtype=np.int64)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, int]:
        row = self.indices[item]
        image = torch.from_numpy(np.array(self.cache.images[row], copy=True)).unsqueeze(0)
        if not self.raw:
            image = to_network_input(image, self.output_size, self.mean, self.std)
        return image, self.cache.samples[row].label, row


def training_input(cache: ImageCache, indices: Sequence[int], specs: Sequence[str | dict[str, Any]],
                   output_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   ) -> tuple[XrayDataset, BatchAugmentation]:
    """The training dataset (uint8 rows) and the per-batch step that augments and normalises them on the device."""
    return XrayDataset(cache, indices, raw=True), BatchAugmentation(specs, output_size, mean, std)
