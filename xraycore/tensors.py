"""uint8 grey images → tensors for a network: normalisation, augmentations (per image and batched), the
torch Dataset. The training side of :mod:`xraycore.data`, split off so that what serving needs (decoding,
resizing, normalising in numpy) imports without torch; ``data.XrayDataset`` and the other names still work.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from torchvision.transforms import v2

from .data import IMAGENET_MEAN, IMAGENET_STD, ImageCache


def to_network_input(
    grey: np.ndarray | torch.Tensor,
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 grey (H, W) or (1, H, W) -> float (3, size, size): scaled to [0, 1], repeated to 3 channels, normalised.

    Used by XrayDataset; :func:`xraycore.data.network_input` is its numpy twin for prediction (tested equal).
    """
    image = torch.from_numpy(np.array(grey)) if isinstance(grey, np.ndarray) else grey  # a copy: cache rows are read-only
    image = image.reshape(1, *image.shape[-2:])
    if size and tuple(image.shape[-2:]) != (size, size):
        image = v2.functional.resize(image, [size, size], antialias=True)
    image = image.float().div_(255.0).expand(3, -1, -1)
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (image - mean_tensor) / std_tensor



# --------------------------------------------------------------------------- augmentations


class GaussianNoise(torch.nn.Module):
    """Additive Gaussian noise for uint8 images; `std` is in units of the full [0, 1] intensity range.

    torchvision's GaussianNoise only accepts float images, hence this small class.
    """

    def __init__(self, std: float = 0.05) -> None:
        super().__init__()
        self.std = std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        noisy = image.float() + torch.randn(image.shape) * (self.std * 255.0)
        return noisy.round_().clamp_(0, 255).to(image.dtype)


def _pair(value: Any) -> Any:
    """JSON turns tuples into lists; torchvision wants tuples for ranges."""
    return tuple(value) if isinstance(value, list) else value


def _maybe(transform: torch.nn.Module, p: float) -> torch.nn.Module:
    return transform if p >= 1.0 else v2.RandomApply([transform], p=p)


AUGMENTATIONS: dict[str, Callable[..., Callable]] = {
    "hflip": lambda p=0.5: v2.RandomHorizontalFlip(p=p),
    "vflip": lambda p=0.5: v2.RandomVerticalFlip(p=p),
    "rotate": lambda degrees=10: v2.RandomRotation(_pair(degrees)),
    # A no-op on greyscale data, kept so study 000's recipe reads as published.
    "grayscale": lambda p=0.1: v2.RandomGrayscale(p=p),
    "equalize": lambda p=0.5: v2.RandomEqualize(p=p),
    "center_crop": lambda size=224: v2.CenterCrop(size),
    "random_crop": lambda size=224: v2.RandomCrop(size),
    "zoom": lambda scale=(0.9, 1.1): v2.RandomAffine(degrees=0, scale=_pair(scale)),
    "shift": lambda fraction=0.1: v2.RandomAffine(
        degrees=0, translate=_pair(fraction) if isinstance(fraction, (list, tuple)) else (fraction, fraction)
    ),
    "shear": lambda degrees=10: v2.RandomAffine(degrees=0, shear=_pair(degrees)),
    "brightness_contrast": lambda brightness=0.2, contrast=0.2: v2.ColorJitter(
        brightness=brightness, contrast=contrast
    ),
    "invert": lambda p=0.5: v2.RandomInvert(p=p),
    "gaussian_blur": lambda kernel=3, sigma=(0.1, 2.0), p=1.0: _maybe(
        v2.GaussianBlur(kernel_size=kernel, sigma=_pair(sigma)), p
    ),
    "gaussian_noise": lambda std=0.05, p=1.0: _maybe(GaussianNoise(std), p),
    "resize": lambda size=224: v2.Resize((size, size), antialias=True),
}


def build_augmentation(specs: Sequence[str | dict[str, Any]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """One transform over uint8 (1, H, W) tensors from a list of named options, applied in order.

    A spec is a name ("hflip") or a dict with "name" and the option's parameters
    ({"name": "rotate", "degrees": [-25, 20]}), so recipes can live in JSON/TOML presets.
    """
    transforms = []
    for spec in specs:
        params = {"name": spec} if isinstance(spec, str) else dict(spec)
        name = params.pop("name", None)
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; valid names: {', '.join(sorted(AUGMENTATIONS))}")
        try:
            transforms.append(AUGMENTATIONS[name](**params))
        except TypeError as error:
            raise ValueError(f"bad parameters for augmentation {name!r}: {error}") from error
    return v2.Compose(transforms)


# --------------------------------------------------------------------------- batched augmentation


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high)


def _symmetric(value: Any) -> tuple[float, float]:
    """torchvision's convention: a number d means the range (-d, d), a pair is the range itself."""
    return (float(value[0]), float(value[1])) if isinstance(value, (list, tuple)) else (-float(value), float(value))


def _flip(axis: int) -> Callable[..., Callable[[int], torch.Tensor]]:
    def factory(p: float = 0.5) -> Callable[[int], torch.Tensor]:
        def matrices(n: int) -> torch.Tensor:
            m = torch.eye(3).repeat(n, 1, 1)
            m[:, axis, axis] = torch.where(torch.rand(n) < p, -1.0, 1.0)
            return m
        return matrices
    return factory


def _rotation(degrees: Any = 10) -> Callable[[int], torch.Tensor]:
    def matrices(n: int) -> torch.Tensor:
        angle = torch.deg2rad(_uniform(n, *_symmetric(degrees)))
        m = torch.eye(3).repeat(n, 1, 1)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
        return m
    return matrices


def _zoom(scale: Any = (0.9, 1.1)) -> Callable[[int], torch.Tensor]:
    def matrices(n: int) -> torch.Tensor:
        m = torch.eye(3).repeat(n, 1, 1)
        factor = _uniform(n, *map(float, scale))
        m[:, 0, 0], m[:, 1, 1] = factor, factor
        return m
    return matrices


def _shift(fraction: Any = 0.1) -> Callable[[int], torch.Tensor]:
    fx, fy = (fraction, fraction) if not isinstance(fraction, (list, tuple)) else fraction
    def matrices(n: int) -> torch.Tensor:
        m = torch.eye(3).repeat(n, 1, 1)
        m[:, 0, 2], m[:, 1, 2] = _uniform(n, -2 * fx, 2 * fx), _uniform(n, -2 * fy, 2 * fy)  # [-1, 1] coordinates
        return m
    return matrices


def _shear(degrees: Any = 10) -> Callable[[int], torch.Tensor]:
    def matrices(n: int) -> torch.Tensor:
        m = torch.eye(3).repeat(n, 1, 1)
        m[:, 0, 1] = torch.tan(torch.deg2rad(_uniform(n, *_symmetric(degrees))))
        return m
    return matrices


def _brightness_contrast(brightness: float = 0.2, contrast: float = 0.2) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        shape = (n, 1, 1, 1)
        x = x * _uniform(n, max(0.0, 1 - brightness), 1 + brightness).view(shape).to(x)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * _uniform(n, max(0.0, 1 - contrast), 1 + contrast).view(shape).to(x) + mean
        return x.clamp_(0.0, 1.0)
    return apply


def _invert(p: float = 0.5) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        chosen = (torch.rand(x.shape[0]) < p).view(-1, 1, 1, 1).to(x.device)
        return torch.where(chosen, 1.0 - x, x)
    return apply


def _noise(std: float = 0.05, p: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        chosen = (torch.rand(x.shape[0]) < p).view(-1, 1, 1, 1).to(x)
        return (x + chosen * torch.randn(x.shape).to(x) * std).clamp_(0.0, 1.0)
    return apply


def _gamma(gamma: float = 1.5) -> Callable[[torch.Tensor], torch.Tensor]:
    """x ** g with log g uniform in [-log gamma, log gamma]: another film's exposure curve, not just its level."""
    def apply(x: torch.Tensor) -> torch.Tensor:
        log_gamma = float(np.log(gamma))
        exponent = torch.exp(_uniform(x.shape[0], -log_gamma, log_gamma)).view(-1, 1, 1, 1).to(x)
        return x.clamp(min=1e-6).pow(exponent)
    return apply


def _blur_sharpen(amount: float = 1.0, sigma: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """x + a * (x - blur(x)), a uniform in [-amount, amount]: a < 0 blurs, a > 0 sharpens, as other
    detectors, post-processing and resampling do."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel_1d = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel_1d = kernel_1d / kernel_1d.sum()

    def apply(x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        k = kernel_1d.to(x)
        padded = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="replicate")
        blurred = torch.nn.functional.conv2d(padded, k.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        blurred = torch.nn.functional.conv2d(blurred, k.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
        strength = _uniform(x.shape[0], -amount, amount).view(-1, 1, 1, 1).to(x)
        return (x + strength * (x - blurred)).clamp_(0.0, 1.0)
    return apply


# Options that can run on a whole batch at once (and on the GPU): geometric ones become one affine
# resample per image, intensity ones are elementwise. Same names and defaults as AUGMENTATIONS.
GEOMETRIC_BATCH_OPS: dict[str, Callable[..., Callable[[int], torch.Tensor]]] = {
    "hflip": _flip(0), "vflip": _flip(1), "rotate": _rotation, "zoom": _zoom, "shift": _shift, "shear": _shear,
}
INTENSITY_BATCH_OPS: dict[str, Callable[..., Callable[[torch.Tensor], torch.Tensor]]] = {
    "brightness_contrast": _brightness_contrast, "invert": _invert, "gaussian_noise": _noise,
    "gamma": _gamma, "blur_sharpen": _blur_sharpen,
}


def _spec_name(spec: str | dict[str, Any]) -> str:
    return spec if isinstance(spec, str) else spec.get("name", "")


def batchable(specs: Sequence[str | dict[str, Any]]) -> bool:
    return all(_spec_name(s) in GEOMETRIC_BATCH_OPS or _spec_name(s) in INTENSITY_BATCH_OPS for s in specs)


class BatchAugmentation:
    """uint8 batch (N, 1, H, W) → augmented, resized, normalised float batch (N, 3, S, S), in one pass.

    Per-sample augmentation with torchvision costs ~1.2 ms an image on this CPU for a flip and a
    rotation; here consecutive geometric options are composed into one affine matrix per image and
    applied with a single grid_sample over the batch (one interpolation instead of several), and
    intensity options are elementwise. Random draws use torch's generator, so the per-epoch reseed
    of the trainer keeps runs reproducible. Runs on whatever device the batch is on.
    """

    def __init__(self, specs: Sequence[str | dict[str, Any]], output_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if not batchable(specs):
            raise ValueError("these augmentations need the per-image path (build_augmentation)")
        self.steps: list[tuple[str, Callable]] = []
        for spec in specs:
            params = {"name": spec} if isinstance(spec, str) else dict(spec)
            name = params.pop("name")
            kind = "geometric" if name in GEOMETRIC_BATCH_OPS else "intensity"
            table = GEOMETRIC_BATCH_OPS if kind == "geometric" else INTENSITY_BATCH_OPS
            try:
                self.steps.append((kind, table[name](**{k: _pair(v) for k, v in params.items()})))
            except TypeError as error:
                raise ValueError(f"bad parameters for augmentation {name!r}: {error}") from error
        self.output_size = output_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0)
        pending: torch.Tensor | None = None  # composed forward affine maps not yet applied
        for kind, step in self.steps:
            if kind == "geometric":
                m = step(x.shape[0])
                pending = m if pending is None else m @ pending
                continue
            x = self._resample(x, pending)
            pending = None
            x = step(x)
        x = self._resample(x, pending)
        if x.shape[-1] != self.output_size or x.shape[-2] != self.output_size:
            x = torch.nn.functional.interpolate(x, size=(self.output_size, self.output_size), mode="bilinear",
                                                antialias=True, align_corners=False)
        scale = (1.0 / self.std).to(x)  # one fused pass writes the 3-channel output: x / std - mean / std
        return torch.addcmul((-self.mean / self.std).to(x), x, scale)

    def _resample(self, x: torch.Tensor, forward: torch.Tensor | None) -> torch.Tensor:
        if forward is None:
            return x
        n, _, height, width = x.shape
        theta = torch.linalg.inv(forward)[:, :2, :].to(x)  # the grid maps output → input coordinates
        grid = (self._base_grid(height, width, x) @ theta.transpose(1, 2)).view(n, height, width, 2)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _base_grid(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """Pixel centres in [-1, 1] (affine_grid's convention), built once per size and device."""
        key = (height, width, like.device, like.dtype)
        if getattr(self, "_grid_key", None) != key:
            ys = (torch.arange(height, dtype=like.dtype, device=like.device) * 2 + 1) / height - 1
            xs = (torch.arange(width, dtype=like.dtype, device=like.device) * 2 + 1) / width - 1
            ones = torch.ones(height * width, dtype=like.dtype, device=like.device)
            self._grid = torch.stack([xs.repeat(height), ys.repeat_interleave(width), ones], dim=1)
            self._grid_key = key
        return self._grid


def training_input(cache: "ImageCache", indices: Sequence[int], specs: Sequence[str | dict[str, Any]],
                   output_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   ) -> tuple["XrayDataset", Callable[[torch.Tensor], torch.Tensor]]:
    """The training dataset and the per-batch step that finishes its images.

    Batched augmentation when every option allows it (the fast path), else torchvision per image.
    """
    if batchable(specs):
        return XrayDataset(cache, indices, raw=True), BatchAugmentation(specs, output_size, mean, std)
    dataset = XrayDataset(cache, indices, transform=build_augmentation(specs) if specs else None,
                          output_size=output_size, mean=mean, std=std)
    return dataset, lambda batch: batch


# --------------------------------------------------------------------------- torch dataset


class XrayDataset(torch.utils.data.Dataset):
    """(image, label, cache row) triples from an ImageCache, ready for a model.

    The image is a float tensor (3, H, W) normalised with the model's mean/std (the grey channel is
    repeated three times); the cache row indexes `cache.samples`, which maps predictions back to
    files. The transform runs on the uint8 (1, H, W) image; if it changes the size (crops), the
    result is resized to `output_size`. Batches can be made channels_last by the caller.
    """

    def __init__(
        self,
        cache: ImageCache,
        indices: Sequence[int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        output_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        raw: bool = False,
    ) -> None:
        self.raw = raw  # serve the cached uint8 (1, H, W) as is: a BatchAugmentation finishes the batch
        self.cache = cache
        self.indices = list(range(len(cache))) if indices is None else list(indices)
        self.transform = transform
        self.output_size = output_size or cache.size
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self) -> np.ndarray:
        return np.array([self.cache.samples[row].label for row in self.indices], dtype=np.int64)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, int]:
        row = self.indices[item]
        image = torch.from_numpy(np.array(self.cache.images[row], copy=True)).unsqueeze(0)
        if self.raw:
            return image, self.cache.samples[row].label, row
        if self.transform is not None:
            image = self.transform(image)
        return to_network_input(image, self.output_size, self.mean, self.std), self.cache.samples[row].label, row
