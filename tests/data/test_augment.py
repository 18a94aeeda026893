"""xraycore.data.augment: every augmentation option does what its name says, on the CPU and on the training device.

Each option runs alone on synthetic batches (a bright square on a dark ground, a ramp, a step edge) with fixed
parameters or p=1, and the test measures what should have changed: where the square went, its area, grey
levels, variance, high-frequency energy.
"""
from __future__ import annotations

import io
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xraycore.data import augment
from xraycore.data.augment import AUGMENTATIONS, BatchAugmentation, RandomBlurSharpen, build_augmentation
from xraycore.data.dataset import to_network_input
from xraycore.models.builder import pick_device

SIDE = 64
CENTRE = (SIDE - 1) / 2
DEVICES = ["cpu"] + ([pick_device().type] if pick_device().type != "cpu" else [])
PRESETS = Path(__file__).resolve().parents[2] / "xraycore" / "training" / "presets"

# Every name configs and presets have used (the per-image and the batched implementations together).
HISTORICAL_NAMES = {
    "hflip", "vflip", "rotate", "zoom", "shift", "shear", "center_crop", "random_crop", "resize", "grayscale",
    "equalize", "brightness_contrast", "invert", "gaussian_blur", "gaussian_noise", "gamma", "blur_sharpen", "jpeg",
}


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def square(device: torch.device, top: int = 12, left: int = 36, height: int = 16, width: int = 16, n: int = 1,
           ) -> torch.Tensor:
    """(n, 1, 64, 64) floats: 0.1 everywhere, 0.9 in a rectangle (off-centre by default)."""
    image = torch.full((n, 1, SIDE, SIDE), 0.1, device=device)
    image[..., top:top + height, left:left + width] = 0.9
    return image


def ramp(device: torch.device, low: float = 0.0, high: float = 1.0, n: int = 1) -> torch.Tensor:
    """(n, 1, 64, 64) floats rising from `low` (left column) to `high` (right column)."""
    return torch.linspace(low, high, SIDE, device=device).expand(n, 1, SIDE, SIDE).clone()


def bright_mask(image: torch.Tensor) -> torch.Tensor:
    return image[:, 0] > 0.5


def centroids(image: torch.Tensor) -> torch.Tensor:
    """(n, 2) (x, y) centre of the bright pixels of each image."""
    mask = bright_mask(image).float()
    height, width = image.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(height, device=image.device, dtype=torch.float32),
                            torch.arange(width, device=image.device, dtype=torch.float32), indexing="ij")
    area = mask.sum(dim=(1, 2))
    return torch.stack([(mask * xs).sum(dim=(1, 2)) / area, (mask * ys).sum(dim=(1, 2)) / area], dim=1).cpu()


def areas(image: torch.Tensor) -> torch.Tensor:
    return bright_mask(image).float().sum(dim=(1, 2)).cpu()


def high_frequency_energy(image: torch.Tensor) -> torch.Tensor:
    """Per image: mean squared difference between horizontal and vertical neighbours."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return (dx.pow(2).mean(dim=(1, 2, 3)) + dy.pow(2).mean(dim=(1, 2, 3))).cpu()


def run(spec, image: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    out = build_augmentation([spec])(image)
    assert out.device == image.device and out.dtype == image.dtype
    return out


# --------------------------------------------------------------------------- the registry


def test_every_historical_name_is_registered_and_builds_with_its_defaults() -> None:
    assert HISTORICAL_NAMES <= set(AUGMENTATIONS)
    for name in AUGMENTATIONS:
        assert isinstance(augment.build_option(name), torch.nn.Module), name


def test_every_preset_recipe_still_builds() -> None:
    recipes = []
    for path in sorted(PRESETS.glob("*.toml")):
        preset = tomllib.loads(path.read_text())
        sections = [preset.get("config", {}), *preset.get("per_backbone", {}).values()]
        recipes += [section["augment"] for section in sections if "augment" in section]
    assert any(recipes), "the presets carry augmentation recipes"
    for recipe in recipes:
        out = build_augmentation(recipe)(torch.rand(2, 1, 256, 256))  # larger than the presets' crops
        assert out.shape[:2] == (2, 1) and out.isfinite().all() and 0 <= float(out.min()) <= float(out.max()) <= 1


def test_unknown_names_and_bad_parameters_are_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="hflip"):  # the message lists the valid names
        build_augmentation(["hflip", "teleport"])
    with pytest.raises(ValueError, match="rotate"):
        build_augmentation([{"name": "rotate", "angle": 5}])


# --------------------------------------------------------------------------- geometric options


@pytest.mark.parametrize(("name", "dims"), [("hflip", [-1]), ("vflip", [-2])])
def test_flips_mirror_exactly_and_follow_p(device, name, dims) -> None:
    image = square(device)
    torch.testing.assert_close(run({"name": name, "p": 1.0}, image), image.flip(dims))
    torch.testing.assert_close(run({"name": name, "p": 0.0}, image), image)
    batch = square(device, n=64)
    flipped = (run({"name": name, "p": 0.5}, batch) - batch.flip(dims)).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert 16 <= int(flipped.sum()) <= 48, "about half of the batch"


@pytest.mark.parametrize("degrees", [30.0, -30.0])
def test_rotate_turns_the_square_about_the_centre_counter_clockwise_for_positive_angles(device, degrees) -> None:
    image = square(device)
    out = run({"name": "rotate", "degrees": [degrees, degrees]}, image)
    (x, y), (x1, y1) = centroids(image)[0].tolist(), centroids(out)[0].tolist()
    # angles measured with y pointing up, as on screen: counter-clockwise is positive
    before = math.degrees(math.atan2(-(y - CENTRE), x - CENTRE))
    after = math.degrees(math.atan2(-(y1 - CENTRE), x1 - CENTRE))
    assert after - before == pytest.approx(degrees, abs=2.0)
    assert math.dist((x, y), (CENTRE, CENTRE)) == pytest.approx(math.dist((x1, y1), (CENTRE, CENTRE)), abs=1.0)
    assert float(areas(out)[0]) == pytest.approx(float(areas(image)[0]), rel=0.1)


@pytest.mark.parametrize("scale", [0.5, 1.5])
def test_zoom_scales_the_square_about_the_centre(device, scale) -> None:
    image = square(device)
    out = run({"name": "zoom", "scale": [scale, scale]}, image)
    assert float(areas(out)[0]) == pytest.approx(float(areas(image)[0]) * scale ** 2, rel=0.12)
    offset, zoomed = centroids(image)[0] - CENTRE, centroids(out)[0] - CENTRE
    torch.testing.assert_close(zoomed, offset * scale, atol=1.0, rtol=0)


def test_shift_moves_the_square_by_at_most_the_fraction_and_uses_the_range(device) -> None:
    image = square(device, top=24, left=24, n=64)  # centred: a shift of a quarter keeps it inside
    out = run({"name": "shift", "fraction": [0.25, 0.0]}, image)
    moved = centroids(out) - centroids(image)
    assert moved[:, 0].abs().max() <= 0.25 * SIDE + 0.5
    assert moved[:, 0].abs().max() > 0.2 * SIDE, "draws reach near the requested fraction"
    assert (moved[:, 0] > 2).any() and (moved[:, 0] < -2).any(), "both directions"
    assert moved[:, 1].abs().max() < 0.5, "no vertical shift was asked for"
    torch.testing.assert_close(areas(out), areas(image), atol=0.1 * 256, rtol=0)


def test_shear_slants_vertical_edges_by_the_angle_and_keeps_rows(device) -> None:
    image = square(device, top=16, left=28, height=32, width=8)  # a tall bar in the middle
    xs = torch.arange(SIDE, dtype=torch.float32)
    top, bottom = 18, 45  # rows well inside the bar's 16..47
    slants = []
    for degrees in (20.0, -20.0):
        rows = bright_mask(run({"name": "shear", "degrees": [degrees, degrees]}, image))[0].cpu().float()
        slants.append(float(rows[bottom] @ xs / rows[bottom].sum() - rows[top] @ xs / rows[top].sum()))
        assert rows.any(dim=1).nonzero().min() == pytest.approx(16, abs=1), "rows stay where they were"
        assert rows.any(dim=1).nonzero().max() == pytest.approx(47, abs=1)
    expected = math.tan(math.radians(20)) * (bottom - top)
    assert abs(slants[0]) == pytest.approx(expected, rel=0.15) and abs(slants[1]) == pytest.approx(expected, rel=0.15)
    assert slants[0] * slants[1] < 0, "opposite angles slant opposite ways"


def test_center_crop_keeps_the_middle(device) -> None:
    image = ramp(device) + square(device)
    torch.testing.assert_close(run({"name": "center_crop", "size": 32}, image), image[..., 16:48, 16:48])


def test_random_crop_is_a_window_of_the_image(device) -> None:
    image = ramp(device) + square(device) + torch.linspace(0, 0.01, SIDE, device=device).view(1, 1, SIDE, 1)
    out = run({"name": "random_crop", "size": 24}, image)
    windows = [(top, left) for top in range(SIDE - 23) for left in range(SIDE - 23)
               if torch.allclose(out, image[..., top:top + 24, left:left + 24])]
    assert len(windows) == 1


def test_resize_shrinks_the_picture_not_its_content(device) -> None:
    image = square(device)
    out = run({"name": "resize", "size": 32}, image)
    assert out.shape[-2:] == (32, 32)
    assert float(areas(out)[0]) == pytest.approx(float(areas(image)[0]) / 4, rel=0.15)
    torch.testing.assert_close(centroids(out)[0], (centroids(image)[0] + 0.5) / 2 - 0.5, atol=0.5, rtol=0)


def test_fused_affine_options_interpolate_once(device) -> None:
    """rotate +20 then -20 in one run is one (identity) warp; applied one after the other it blurs twice."""
    image = ramp(device) * 0.5 + square(device) * 0.5
    specs = [{"name": "rotate", "degrees": [20, 20]}, {"name": "rotate", "degrees": [-20, -20]}]
    fused = build_augmentation(specs)
    assert len(fused) == 1 and isinstance(fused[0], augment.OneWarp)
    once = fused(image)
    twice = build_augmentation(specs[1:])(build_augmentation(specs[:1])(image))
    inside = (slice(None), slice(None), slice(16, 48), slice(16, 48))
    assert (once - image)[inside].abs().max() < 1e-4
    assert (twice - image)[inside].abs().max() > 0.05
    flipped = build_augmentation([{"name": "hflip", "p": 1.0}, {"name": "rotate", "degrees": [0, 0]}])(image)
    torch.testing.assert_close(flipped, image.flip(-1), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- intensity options


def test_brightness_multiplies_and_contrast_pulls_towards_the_mean(device) -> None:
    image = ramp(device, 0.1, 0.6)
    brighter = run({"name": "brightness_contrast", "brightness": [1.5, 1.5], "contrast": 0.0}, image)
    torch.testing.assert_close(brighter, (image * 1.5).clamp(0, 1), atol=1e-5, rtol=0)
    flatter = run({"name": "brightness_contrast", "brightness": 0.0, "contrast": [0.5, 0.5]}, image)
    assert float(flatter.mean()) == pytest.approx(float(image.mean()), abs=1e-4)
    assert float(flatter.std()) == pytest.approx(float(image.std()) * 0.5, rel=0.02)
    varied = run("brightness_contrast", ramp(device, 0.1, 0.6, n=32))
    assert varied.mean(dim=(1, 2, 3)).std() > 0.01, "defaults draw a different level per image"


def test_gamma_bends_mid_greys_both_ways_and_keeps_black_white_and_order(device) -> None:
    image = ramp(device, n=256)
    out = run({"name": "gamma", "gamma": 2.0}, image)
    assert torch.allclose(out[..., 0], torch.zeros_like(out[..., 0]), atol=1e-4)
    assert torch.allclose(out[..., -1], torch.ones_like(out[..., -1]), atol=1e-4)
    assert (out[..., 1:] - out[..., :-1] >= -1e-6).all(), "monotonic"
    middle = SIDE // 2
    exponent = torch.log(out[:, 0, 0, middle]) / torch.log(image[:, 0, 0, middle])
    assert (exponent > 0.5 - 1e-3).all() and (exponent < 2.0 + 1e-3).all()
    assert 100 <= int((exponent < 1).sum()) <= 156, "brighter (g < 1) as often as darker (g > 1)"


def test_equalize_spreads_a_narrow_histogram(device) -> None:
    image = ramp(device, 0.4, 0.6)
    out = run({"name": "equalize", "p": 1.0}, image)
    assert float(out.min()) < 0.05 and float(out.max()) > 0.95
    assert (out[..., 1:] - out[..., :-1] >= -1e-6).all(), "order of greys kept"
    torch.testing.assert_close(run({"name": "equalize", "p": 0.0}, image), image)


def test_invert_maps_x_to_one_minus_x(device) -> None:
    image = ramp(device) * 0.5 + square(device) * 0.5
    torch.testing.assert_close(run({"name": "invert", "p": 1.0}, image), 1.0 - image)
    torch.testing.assert_close(run({"name": "invert", "p": 0.0}, image), image)


def test_gaussian_blur_removes_high_frequencies_and_keeps_the_mean(device) -> None:
    torch.manual_seed(1)
    image = torch.rand(4, 1, SIDE, SIDE, device=device)
    out = run({"name": "gaussian_blur", "kernel": 7, "sigma": [2.0, 2.0], "p": 1.0}, image)
    assert (high_frequency_energy(out) < 0.1 * high_frequency_energy(image)).all()
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), image.mean(dim=(1, 2, 3)), atol=0.01, rtol=0)


def test_gaussian_noise_adds_the_requested_variance(device) -> None:
    image = torch.full((8, 1, SIDE, SIDE), 0.5, device=device)
    out = run({"name": "gaussian_noise", "std": 0.1, "p": 1.0}, image)
    assert float((out - image).var()) == pytest.approx(0.1 ** 2, rel=0.1)
    assert float(out.mean()) == pytest.approx(0.5, abs=0.005)
    near_white = run({"name": "gaussian_noise", "std": 0.1, "p": 1.0}, torch.full_like(image, 0.95))
    assert float(near_white.max()) == 1.0 and float(near_white.min()) >= 0.0, "kept within [0, 1]"
    torch.testing.assert_close(run({"name": "gaussian_noise", "std": 0.0}, image), image)


def test_blur_sharpen_lowers_or_raises_high_frequencies_by_the_sign_of_its_strength(device) -> None:
    edge = torch.full((2, 1, SIDE, SIDE), 0.25, device=device)
    edge[..., SIDE // 2:] = 0.75
    option = RandomBlurSharpen(amount=1.0, sigma=1.0)
    out = option(edge, params={"strength": torch.tensor([-1.0, 1.0]), "batch_prob": torch.ones(2)})
    energy, before = high_frequency_energy(out), high_frequency_energy(edge)
    assert energy[0] < 0.8 * before[0], "negative strength blurs"
    assert energy[1] > 1.2 * before[1], "positive strength sharpens"
    torch.testing.assert_close(out[..., :4], edge[..., :4])  # flat parts stay as they were
    drawn = high_frequency_energy(run({"name": "blur_sharpen", "amount": 1.0}, edge.repeat(32, 1, 1, 1)))
    assert (drawn < 0.9 * before[0]).any() and (drawn > 1.1 * before[0]).any(), "draws go both ways"
    torch.testing.assert_close(run({"name": "blur_sharpen", "amount": 0.0}, edge), edge)


def block_edge_ratio(image: torch.Tensor) -> float:
    """Mean |step| between columns 8k-1 and 8k (JPEG block edges) over the mean |step| elsewhere."""
    steps = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(0, 1, 2)).cpu()
    edges = steps[7::8]
    inside = torch.cat([steps[i::8] for i in range(8) if i != 7])
    return float(edges.mean() / inside.mean())


def pillow_jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """The same grey image through Pillow's (libjpeg's) real encoder and decoder, as [0, 1] floats."""
    encoded = io.BytesIO()
    Image.fromarray((image[0, 0].cpu().numpy() * 255).round().astype(np.uint8)).save(encoded, "JPEG", quality=quality)
    return torch.from_numpy(np.asarray(Image.open(encoded), dtype=np.float32) / 255)


def test_jpeg_recompresses_like_a_real_jpeg_codec_and_quality_sets_the_loss(device) -> None:
    rows, columns = torch.meshgrid(torch.arange(SIDE, device=device), torch.arange(SIDE, device=device), indexing="ij")
    image = (0.5 + 0.4 * torch.sin(columns / 5.0) * torch.cos(rows / 7.0)).float()[None, None]
    low = run({"name": "jpeg", "quality": [10, 10]}, image)
    high = run({"name": "jpeg", "quality": [95, 95]}, image)
    low_error, high_error = (low - image).abs().mean().item(), (high - image).abs().mean().item()
    assert 0 < high_error < low_error / 4
    reference = pillow_jpeg(image, 10)
    assert (low[0, 0].cpu() - reference).abs().mean() < 0.35 * (reference - image[0, 0].cpu()).abs().mean()
    assert block_edge_ratio(low) > 1.5 * block_edge_ratio(image)  # steps appear at the 8 x 8 block edges
    assert 0.0 <= float(low.min()) and float(low.max()) <= 1.0


def test_grayscale_leaves_grey_images_alone(device) -> None:
    image = ramp(device) * 0.5 + square(device) * 0.5
    torch.testing.assert_close(run({"name": "grayscale", "p": 1.0}, image), image)


# --------------------------------------------------------------------------- the batch step


def test_without_options_the_batch_step_is_the_validation_input(device) -> None:
    grey = torch.from_numpy((np.random.default_rng(0).random((4, 1, 40, 40)) * 255).astype(np.uint8))
    reference = torch.stack([to_network_input(g[0].numpy()) for g in grey])
    out = BatchAugmentation([], 40)(grey.to(device))
    assert out.device.type == device.type and out.shape == (4, 3, 40, 40)
    torch.testing.assert_close(out.cpu(), reference, atol=1e-5, rtol=0)
    # resized on the way (cache decoded larger than the network's size): within a grey level of the
    # validation path, which resizes uint8 images
    resized = BatchAugmentation([], 32)(grey.to(device)).cpu()
    expected = torch.stack([to_network_input(g[0].numpy(), 32) for g in grey])
    torch.testing.assert_close(resized, expected, atol=1.01 / 255 / min(0.229, 0.224, 0.225), rtol=0)


def test_the_batch_step_is_reproducible_under_the_trainers_seed(device) -> None:
    grey = torch.from_numpy((np.random.default_rng(1).random((4, 1, 32, 32)) * 255).astype(np.uint8)).to(device)
    specs = ["hflip", {"name": "rotate", "degrees": 20}, {"name": "zoom", "scale": [0.8, 1.2]}, "brightness_contrast",
             {"name": "center_crop", "size": 28}]
    step = BatchAugmentation(specs, 24)
    torch.manual_seed(3)
    first = step(grey)
    torch.manual_seed(3)
    again = step(grey)
    torch.manual_seed(4)
    other = step(grey)
    assert first.shape == (4, 3, 24, 24)
    assert torch.equal(first, again) and not torch.allclose(first, other)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_the_fast_separable_blur_equals_kornias_gaussian_blur(device, sigma) -> None:
    from kornia.filters import gaussian_blur2d, get_gaussian_kernel1d

    radius = max(1, int(round(3 * sigma)))
    weights = [float(w) for w in get_gaussian_kernel1d(2 * radius + 1, sigma).flatten()]
    image = square(device, n=3) + 0.1 * torch.rand(3, 1, SIDE, SIDE, device=device)
    expected = gaussian_blur2d(image, (2 * radius + 1,) * 2, (sigma, sigma), border_type="replicate")
    assert torch.allclose(augment.gaussian_blur(image, weights), expected, atol=1e-6)


def test_erase_sets_one_rectangle_per_image_to_its_grey_level_and_leaves_the_rest(device) -> None:
    image = torch.rand(16, 1, SIDE, SIDE, device=device) * 0.4  # below the erasing value, so changes are visible
    out = run({"name": "erase", "scale": [0.05, 0.2], "value": 0.7, "p": 1.0}, image)
    changed = out != image
    assert (out[changed] == 0.7).all(), "erased pixels take the given grey level"
    shares = changed.float().mean(dim=(1, 2, 3))
    assert ((shares >= 0.04) & (shares <= 0.21)).all(), shares  # within the scale range, every image
    rows, columns = changed[:, 0].any(dim=2), changed[:, 0].any(dim=1)
    assert (changed[:, 0].sum(dim=(1, 2)) == rows.sum(1) * columns.sum(1)).all(), "one rectangle each"
    torch.testing.assert_close(run({"name": "erase", "p": 0.0}, image), image)


def test_border_erase_paints_the_outer_band_or_corners_one_grey_each_and_nothing_inside(device) -> None:
    image = torch.full((32, 1, SIDE, SIDE), 0.5, device=device)
    centre = slice(int(SIDE * 0.3), SIDE - int(SIDE * 0.3))  # beyond twice the widest band: never painted
    band = run({"name": "border_erase", "width": [0.1, 0.1], "corners": 0.0, "p": 1.0}, image)
    edge = round(SIDE * 0.1)
    inner = torch.zeros(SIDE, SIDE, dtype=torch.bool, device=device)
    inner[edge:SIDE - edge, edge:SIDE - edge] = True
    assert (band[:, 0][:, inner] == 0.5).all() and (band[:, 0][:, ~inner] != 0.5).all(), "exactly the band, whole"
    assert (band[:, 0][:, ~inner] == band[:, 0, :1, :1].reshape(-1, 1)).all(), "one grey per film"
    corners = run({"name": "border_erase", "width": [0.1, 0.1], "corners": 1.0, "p": 1.0}, image)
    changed = corners != 0.5
    assert not changed[..., centre, :].any() and not changed[..., :, centre].any(), "corners only"
    assert changed.any(), "some corner is painted"
    torch.testing.assert_close(run({"name": "border_erase", "p": 0.0}, image), image)
