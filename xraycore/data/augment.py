"""Training augmentations: one implementation, on whole batches on the training device, built on kornia.

A recipe is a list of specs, each a name ("hflip") or a dict with "name" and the option's parameters
({"name": "rotate", "degrees": [-25, 20]}), so recipes live in presets (TOML) and run configs (JSON). The
names, parameters and defaults are those every earlier version accepted (torchvision's conventions: a
number d means the range (-d, d), a pair is the range itself), so old configs and presets still load.

Batches arrive as the cache's uint8 images (N, 1, H, W) on the device; the options run in order on floats
in [0, 1], then the batch is resized to the network's size and normalised. Consecutive affine options
(rotate, zoom, shift, shear and the flips among them) are composed into one matrix per image and applied
with one interpolation, so a recipe like "rotate, shift, zoom" blurs an image once, not three times. Random
draws use torch's generator: the trainer's per-epoch torch.manual_seed keeps runs reproducible.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import kornia.augmentation as K
import torch
from kornia.augmentation.random_generator import PlainUniformGenerator
from kornia.filters import get_gaussian_kernel1d
from kornia.geometry.conversions import normalize_homography

from xraycore.data.decode import IMAGENET_MEAN, IMAGENET_STD

Spec = str | dict[str, Any]


def _span(value: Any) -> tuple[float, float]:
    """torchvision's convention: a number d is the range (-d, d), a pair is the range itself."""
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    return -float(value), float(value)


def _pair(value: Any) -> tuple[float, float]:
    """A range given as a pair, or one number meaning that value exactly."""
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    return float(value), float(value)


def _size(value: Any) -> tuple[int, int]:
    """A kernel or crop size: one number for both sides, or (height, width)."""
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


class UnitClamp(torch.nn.Module):
    """Back into [0, 1] after an option that can leave it (kornia's Gaussian noise does not clamp)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


class RandomLogGamma(K.RandomGamma):
    """kornia's RandomGamma (x ** g) with log g uniform in [-log gamma, log gamma]: another film's exposure
    curve, darker or brighter equally often (a uniform g in [1/gamma, gamma] darkens more often)."""

    def __init__(self, gamma: float = 1.5) -> None:
        super().__init__(gamma=(1.0 / gamma, gamma), p=1.0)
        self.log_gamma = math.log(gamma)

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        params = super().generate_parameters(batch_shape)
        log_factor = torch.empty_like(params["gamma_factor"]).uniform_(-self.log_gamma, self.log_gamma)
        params["gamma_factor"] = log_factor.exp()
        return params


def gaussian_blur(x: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Separable blur with a 1-D kernel (odd length), replicated borders, as weighted sums of shifted slices.

    Equal to kornia's gaussian_blur2d to float rounding, but a convolution with one input channel is slow on
    the CPU (71 ms for 32 images of 224 px on 2 cores, against 2.3 ms here).
    """
    radius = len(weights) // 2
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="replicate")
    rows = padded[..., :, :width] * weights[0]
    for shift, weight in enumerate(weights[1:], start=1):
        rows.add_(padded[..., :, shift:shift + width], alpha=weight)
    out = rows[..., :height, :] * weights[0]
    for shift, weight in enumerate(weights[1:], start=1):
        out.add_(rows[..., shift:shift + height, :], alpha=weight)
    return out


class RandomBlurSharpen(K.IntensityAugmentationBase2D):
    """x + a * (x - gaussian_blur(x, sigma)), a uniform in [-amount, amount]: a < 0 blurs, a > 0 sharpens,
    as other detectors, post-processing and resampling do. kornia's RandomSharpness blends with a fixed
    3 x 3 smoothing instead, so it could not honour this option's `sigma`."""

    def __init__(self, amount: float = 1.0, sigma: float = 1.0) -> None:
        super().__init__(p=1.0)
        self._param_generator = PlainUniformGenerator(((-float(amount), float(amount)), "strength", None, None))
        radius = max(1, int(round(3 * sigma)))
        kernel = get_gaussian_kernel1d(2 * radius + 1, float(sigma))
        self.flags = {"weights": [float(w) for w in kernel.flatten()]}

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any],
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        blurred = gaussian_blur(input, flags["weights"])
        strength = params["strength"].to(input).view(-1, 1, 1, 1)
        return (input + strength * (input - blurred)).clamp(0.0, 1.0)


class RandomJpeg(torch.nn.Module):
    """Re-encoded as JPEG at a random quality: the 8 x 8 block artefacts and lost fine detail of films that were
    compressed on their way to the reader (kornia's differentiable JPEG; it codes colour, so the grey image
    travels as three equal channels and comes back as their mean)."""

    def __init__(self, quality: Any = (30, 90), p: float = 1.0) -> None:
        super().__init__()
        self.jpeg = K.RandomJPEG(jpeg_quality=_pair(quality), p=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.jpeg(x.expand(-1, 3, -1, -1)).mean(dim=1, keepdim=True).clamp(0.0, 1.0)


class RandomBorderErase(torch.nn.Module):
    """The film's outer band, or some of its corners, painted one random grey (with probability p): the markers,
    text and collimator edges that sit there then say nothing of the class, so a network cannot rest on them
    (a shortcut remedy, docs/heat-maps.md). ``width`` is the band's share of each side (a corner's is twice it, as
    printed text reaches further in than collimator edges); ``corners`` the chance that corners are painted instead
    of the whole band, each corner with probability one half."""

    def __init__(self, width: Any = (0.06, 0.14), corners: float = 0.5, p: float = 0.5) -> None:
        super().__init__()
        self.width, self.corners, self.p = _pair(width), float(corners), float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        share = torch.empty(n, 1, 1, device=x.device).uniform_(*self.width)
        top, bottom, left, right = _edges(share, height, width, x.device)
        band = top | bottom | left | right
        top, bottom, left, right = _edges(2 * share, height, width, x.device)
        chosen = torch.rand(n, 4, 1, 1, device=x.device) < 0.5
        corner = ((top & left & chosen[:, 0]) | (top & right & chosen[:, 1]) | (bottom & left & chosen[:, 2])
                  | (bottom & right & chosen[:, 3]))
        use_corners = torch.rand(n, 1, 1, device=x.device) < self.corners
        painted = torch.where(use_corners, corner, band) & (torch.rand(n, 1, 1, device=x.device) < self.p)
        grey = torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype)
        return torch.where(painted.unsqueeze(1), grey, x)


def _edges(share: torch.Tensor, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Masks (N, H, W) of the pixels within ``share`` (N, 1, 1) of the top, bottom, left and right edges."""
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    deep, wide = torch.round(share * height), torch.round(share * width)  # whole pixels, the same on both sides
    return rows < deep, rows >= height - deep, cols < wide, cols >= width - wide


def _affine(**ranges: Any) -> K.RandomAffine:
    # Always applied (torchvision's RandomAffine has no p); pixel-centred matrices warp with align_corners=True.
    return K.RandomAffine(degrees=ranges.pop("degrees", 0.0), **ranges, p=1.0, align_corners=True)


# Every option by name: a factory taking the option's parameters (with their historical defaults).
AUGMENTATIONS: dict[str, Callable[..., torch.nn.Module]] = {
    "hflip": lambda p=0.5: K.RandomHorizontalFlip(p=p),
    "vflip": lambda p=0.5: K.RandomVerticalFlip(p=p),
    "rotate": lambda degrees=10: K.RandomRotation(_span(degrees), p=1.0),
    "zoom": lambda scale=(0.9, 1.1): _affine(scale=_pair(scale)),
    "shift": lambda fraction=0.1: _affine(translate=_pair(fraction)),
    "shear": lambda degrees=10: _affine(shear=_span(degrees)),
    "center_crop": lambda size=224: K.CenterCrop(_size(size)),
    "random_crop": lambda size=224: K.RandomCrop(_size(size)),
    "resize": lambda size=224: K.Resize(_size(size), antialias=True),
    "brightness_contrast": lambda brightness=0.2, contrast=0.2: K.ColorJitter(brightness=brightness, contrast=contrast),
    "gamma": lambda gamma=1.5: RandomLogGamma(gamma),
    "equalize": lambda p=0.5: K.RandomEqualize(p=p),
    "invert": lambda p=0.5: K.RandomInvert(max_val=1.0, p=p),
    "gaussian_blur": lambda kernel=3, sigma=(0.1, 2.0), p=1.0: K.RandomGaussianBlur(_size(kernel), _pair(sigma), p=p),
    "gaussian_noise": lambda std=0.05, p=1.0: torch.nn.Sequential(K.RandomGaussianNoise(std=std, p=p), UnitClamp()),
    "blur_sharpen": lambda amount=1.0, sigma=1.0: RandomBlurSharpen(amount, sigma),
    "jpeg": lambda quality=(30, 90), p=1.0: RandomJpeg(quality, p),
    # A rectangle set to one grey level (random erasing, Zhong et al. 2020): the network must not rest on one region.
    "erase": lambda scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.0, p=0.5: K.RandomErasing(
        _pair(scale), _pair(ratio), value=float(value), p=p),
    "border_erase": lambda width=(0.06, 0.14), corners=0.5, p=0.5: RandomBorderErase(width, corners, p),
    # A no-op on greyscale data, kept so study 000's recipe reads as published.
    "grayscale": lambda p=0.1: torch.nn.Identity(),
}

# Options whose draw is an affine matrix (kornia computes it): runs of these are fused into one warp.
_AFFINE = (K.RandomHorizontalFlip, K.RandomVerticalFlip, K.RandomRotation, K.RandomAffine)
_RESAMPLING = (K.RandomRotation, K.RandomAffine)  # flips alone are exact index operations: nothing to fuse


def build_option(spec: Spec) -> torch.nn.Module:
    """One option as a module over float batches (N, 1, H, W) in [0, 1]; ValueError names what is wrong."""
    params = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = params.pop("name", None)
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid names: {', '.join(sorted(AUGMENTATIONS))}")
    try:
        return AUGMENTATIONS[name](**params)
    except TypeError as error:
        raise ValueError(f"bad parameters for augmentation {name!r}: {error}") from error


class OneWarp(torch.nn.Module):
    """Consecutive affine options applied as one warp: kornia draws each option's matrix (input to output
    pixel coordinates, identity where its p said no), the matrices are multiplied in order, and every image
    is interpolated once with grid_sample. The sampling grid is an affine function of the pixel position,
    so it is built by broadcasting (x * a + y * b + c) rather than a (H * W, 3) matrix product or
    affine_grid: on the CPU that takes a quarter of their time."""

    def __init__(self, options: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.options = torch.nn.ModuleList(options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        matrix = torch.eye(3, dtype=x.dtype, device=x.device).expand(n, 3, 3)
        for option in self.options:
            params = option.forward_parameters(x.shape)
            matrix = option.generate_transformation_matrix(x, params, option.flags).to(x) @ matrix
        normalised = normalize_homography(matrix, (height, width), (height, width), align_corners=True)
        # grid_sample looks up where each output pixel came from: rows (x, y) of the inverse, per image (N, 1, 1, 2)
        back = torch.linalg.inv(normalised)[:, None, None, :2]
        xs = torch.linspace(-1.0, 1.0, width, dtype=x.dtype, device=x.device).view(1, 1, width, 1)
        ys = torch.linspace(-1.0, 1.0, height, dtype=x.dtype, device=x.device).view(1, height, 1, 1)
        grid = xs * back[..., 0] + (ys * back[..., 1] + back[..., 2])  # (N, H, W, 2)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _fuse_affine_runs(options: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """The options, each run of consecutive affine ones that resamples (not flips alone) made one OneWarp."""
    steps: list[torch.nn.Module] = []
    run: list[torch.nn.Module] = []

    def end_run() -> None:
        if any(isinstance(option, _RESAMPLING) for option in run):
            steps.append(OneWarp(run))
        else:
            steps.extend(run)
        run.clear()

    for option in options:
        if isinstance(option, _AFFINE):
            run.append(option)
        else:
            end_run()
            steps.append(option)
    end_run()
    return steps


def build_augmentation(specs: Sequence[Spec]) -> torch.nn.Sequential:
    """The recipe as one module over float batches (N, 1, H, W) in [0, 1], options in order, affine runs fused.

    Crops and resize change the batch's size; the caller resizes to the network's size afterwards.
    """
    return torch.nn.Sequential(*_fuse_affine_runs([build_option(spec) for spec in specs]))


class BatchAugmentation(torch.nn.Module):
    """uint8 batch (N, 1, H, W) → augmented, resized, normalised float batch (N, 3, S, S), on the batch's device.

    With no options this is the validation path's resize and normalisation, to float rounding (tested).
    """

    def __init__(self, specs: Sequence[Spec], output_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.augment = build_augmentation(specs)
        self.output_size = output_size
        std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / std_tensor, persistent=False)  # x / std - mean / std, one fused pass
        self.register_buffer("offset", -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_tensor,
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.augment(images.float().div_(255.0))
        if x.shape[-2:] != (self.output_size, self.output_size):
            x = torch.nn.functional.interpolate(x, size=(self.output_size, self.output_size), mode="bilinear",
                                                antialias=True, align_corners=False)
        return torch.addcmul(self.offset.to(x), x, self.scale.to(x))
