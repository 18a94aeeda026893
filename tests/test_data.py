"""xraycore.data: folders, patient grouping, splits, weights, the image cache, augmentations, builders."""
from __future__ import annotations

import os
import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xraycore import data

SIZE = 32


def write_image(path: Path, seed: int, size: int = 40, value: int | None = None) -> Path:
    """A small random (or uniform) greyscale image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if value is None:
        pixels = rng.integers(0, 256, (size, size), np.uint8)
    else:
        pixels = np.full((size, size), value, np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def kermany_names(n_normal_patients: int = 12, n_pneumonia_patients: int = 16) -> dict[str, list[str]]:
    """Kermany-style names: NORMAL patients with 1-3 images each (IM- and NORMAL2-IM- series),
    PNEUMONIA patients with 1-3 bacterial or viral images each."""
    normal, pneumonia = [], []
    for p in range(n_normal_patients):
        prefix = "NORMAL2-IM" if p % 2 else "IM"
        normal += [f"{prefix}-{p // 2:04d}-{k:04d}.jpeg" for k in range(1, 2 + p % 3)]
    for p in range(n_pneumonia_patients):
        kind = "virus" if p % 3 == 0 else "bacteria"
        pneumonia += [f"person{p}_{kind}_{p * 10 + k}.jpeg" for k in range(1 + p % 3)]
    return {"NORMAL": normal, "PNEUMONIA": pneumonia}


def make_class_folders(root: Path, names: dict[str, list[str]], seed: int = 0) -> Path:
    for class_name, files in names.items():
        for i, name in enumerate(files):
            write_image(root / class_name / name, seed=zlib.crc32(f"{seed}/{class_name}/{i}".encode()))
    return root


@pytest.fixture
def kermany(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "chest_xray", kermany_names())


# --------------------------------------------------------------------------- patient ids


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("person123_bacteria_456.jpeg", "person123"),
        ("person45_virus_99.jpeg", "person45"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-0427-0001.jpeg", "NORMAL2-IM-0427"),
        ("train/NORMAL/IM-0115-0002.jpeg", "IM-0115"),
        ("COVID/COVID-12.png", "COVID/COVID-12.png"),  # no patient in the name: its own group
    ],
)
def test_patient_id_reads_kermany_names(filename: str, expected: str) -> None:
    assert data.patient_id(filename) == expected


def test_patient_id_keeps_normal2_series_apart_and_accepts_a_custom_pattern() -> None:
    assert data.patient_id("NORMAL2-IM-0427-0001.jpeg") != data.patient_id("IM-0427-0001.jpeg")
    assert data.patient_id("IM-0427-0001.jpeg") == data.patient_id("IM-0427-0002.jpeg")
    assert data.patient_id("case7_view2.png", r"^(case\d+)_") == "case7"


# --------------------------------------------------------------------------- scanning


def test_scan_class_folders_labels_patients_and_skips_junk(kermany: Path) -> None:
    (kermany / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    (kermany / "NORMAL" / "notes.txt").write_text("not an image")
    write_image(kermany / "NORMAL" / ".hidden.png", seed=1)
    (kermany / ".cache").mkdir()

    samples, class_names = data.scan_class_folders(kermany)

    names = kermany_names()
    assert class_names == ["NORMAL", "PNEUMONIA"]
    assert len(samples) == len(names["NORMAL"]) + len(names["PNEUMONIA"])
    by_name = {Path(s.path).name: s for s in samples}
    assert ".hidden.png" not in by_name and "notes.txt" not in by_name
    assert by_name["person1_bacteria_11.jpeg"].label == 1
    assert by_name["person1_bacteria_11.jpeg"].patient == "person1"
    assert by_name["IM-0000-0001.jpeg"].label == 0
    assert by_name["IM-0000-0001.jpeg"].patient == "IM-0000"
    assert all(Path(s.path).is_absolute() for s in samples)


def test_scan_respects_a_given_class_order(kermany: Path) -> None:
    samples, class_names = data.scan_class_folders(kermany, ["PNEUMONIA", "NORMAL"])
    assert class_names == ["PNEUMONIA", "NORMAL"]
    assert {s.label for s in samples if "person" in s.path} == {0}
    assert {s.label for s in samples if "IM-" in s.path} == {1}


def test_scan_puts_byte_identical_files_in_one_group(kermany: Path) -> None:
    shutil.copy(kermany / "NORMAL" / "IM-0000-0001.jpeg", kermany / "NORMAL" / "IM-0099-0001.jpeg")
    samples, _ = data.scan_class_folders(kermany)
    patient = {Path(s.path).name: s.patient for s in samples}
    assert patient["IM-0099-0001.jpeg"] == patient["IM-0000-0001.jpeg"]
    unmerged, _ = data.scan_class_folders(kermany, group_duplicates=False)
    assert {Path(s.path).name: s.patient for s in unmerged}["IM-0099-0001.jpeg"] == "IM-0099"


def test_discover_splits_with_split_folders(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"NORMAL": ["IM-0001-0001.jpeg"], "PNEUMONIA": ["person1_virus_1.jpeg"]})
    make_class_folders(tmp_path / "val", {"PNEUMONIA": ["person2_bacteria_2.jpeg"]})
    make_class_folders(tmp_path / "test", {"NORMAL": ["IM-0003-0001.jpeg"], "COVID": ["COVID-1.png"]})

    splits, class_names = data.discover_splits(tmp_path)

    assert set(splits) == {"train", "val", "test"}
    assert class_names == ["COVID", "NORMAL", "PNEUMONIA"]  # union of every split's folders, one order
    assert [s.label for s in splits["val"]] == [2]
    assert sorted(s.label for s in splits["test"]) == [0, 1]
    assert sorted(s.label for s in splits["train"]) == [1, 2]


def test_discover_splits_uses_only_the_split_folders_that_exist(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"A": ["a.png"], "B": ["b.png"]})
    make_class_folders(tmp_path / "test", {"A": ["c.png"], "B": ["d.png"]})
    splits, _ = data.discover_splits(tmp_path)
    assert set(splits) == {"train", "test"}


def test_discover_splits_without_split_folders_returns_all(kermany: Path) -> None:
    splits, class_names = data.discover_splits(kermany)
    assert set(splits) == {"all"}
    assert class_names == ["NORMAL", "PNEUMONIA"]
    assert len(splits["all"]) == sum(len(v) for v in kermany_names().values())


# --------------------------------------------------------------------------- splits


def synthetic_samples(n_patients: int = 120, seed: int = 0) -> list[data.Sample]:
    """~30% positive patients with 1-4 images each (no files needed for splitting)."""
    rng = np.random.default_rng(seed)
    samples = []
    for p in range(n_patients):
        label = int(p % 10 < 3)
        samples += [data.Sample(f"/x/p{p}_{k}.png", label, f"p{p}") for k in range(int(rng.integers(1, 5)))]
    return samples


def positive_share(samples: list[data.Sample]) -> float:
    return sum(s.label for s in samples) / len(samples)


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.3])
def test_split_by_ratio_is_patient_grouped_stratified_and_sized(val_fraction: float) -> None:
    samples = synthetic_samples()
    train, val = data.split_by_ratio(samples, val_fraction, seed=3)

    assert sorted(train + val, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    assert not {s.patient for s in train} & {s.patient for s in val}
    assert {s.label for s in train} == {s.label for s in val} == {0, 1}
    assert abs(positive_share(val) - positive_share(samples)) < 0.08
    assert abs(len(val) / len(samples) - val_fraction) < 0.06


def test_split_by_ratio_is_deterministic_for_a_seed() -> None:
    samples = synthetic_samples()
    first = data.split_by_ratio(samples, 0.2, seed=7)
    assert data.split_by_ratio(samples, 0.2, seed=7) == first
    assert data.split_by_ratio(samples, 0.2, seed=8)[1] != first[1]


def test_split_by_ratio_on_scanned_kermany_folders(kermany: Path) -> None:
    samples, _ = data.scan_class_folders(kermany)
    train, val = data.split_by_ratio(samples, 0.25, seed=0)
    assert not {s.patient for s in train} & {s.patient for s in val}
    assert {s.label for s in val} == {0, 1}


def test_split_by_ratio_rejects_impossible_fractions() -> None:
    with pytest.raises(ValueError):
        data.split_by_ratio(synthetic_samples(), 1.0)


def test_kfold_covers_every_sample_once_and_keeps_patients_together() -> None:
    samples = synthetic_samples()
    folds = data.kfold_splits(samples, k=5, seed=1)

    assert len(folds) == 5
    seen_in_val = Counter(s.path for _, val in folds for s in val)
    assert set(seen_in_val) == {s.path for s in samples}
    assert set(seen_in_val.values()) == {1}
    for train, val in folds:
        assert len(train) + len(val) == len(samples)
        assert not {s.patient for s in train} & {s.patient for s in val}
        assert abs(positive_share(val) - positive_share(samples)) < 0.1


# --------------------------------------------------------------------------- weights and resampling


def test_class_weights_are_balanced_and_match_the_binary_formula() -> None:
    negatives = [data.Sample(f"n{i}", 0, f"n{i}") for i in range(30)]
    samples = negatives + [data.Sample(f"p{i}", 1, f"p{i}") for i in range(10)]
    weights = data.class_weights(samples, 2)
    np.testing.assert_allclose(weights, [40 / (2 * 30), 40 / (2 * 10)])
    n_neg, n_pos = 30, 10  # study 000: w+ = N/(P+N), w- = P/(P+N) -- same up to one common factor
    np.testing.assert_allclose(weights / weights.sum(), [n_pos / 40, n_neg / 40])


def test_class_weights_give_zero_to_an_absent_class() -> None:
    samples = [data.Sample("a", 0, "a"), data.Sample("b", 2, "b"), data.Sample("c", 2, "c")]
    np.testing.assert_allclose(data.class_weights(samples, 3), [3 / 3, 0.0, 3 / 6])


def test_grow_minority_adds_percent_of_each_smaller_class() -> None:
    counts = {0: 20, 1: 10, 2: 5}
    samples = [data.Sample(f"{c}/{i}", c, f"{c}{i}") for c, n in counts.items() for i in range(n)]
    grown = data.grow_minority(samples, 20, seed=0)

    assert Counter(s.label for s in grown) == {0: 20, 1: 12, 2: 6}
    assert set(grown) <= set(samples)  # copies of existing files, nothing invented
    assert grown[: len(samples)] == samples
    assert data.grow_minority(samples, 0) == samples


def test_subsample_caps_each_class() -> None:
    samples = synthetic_samples()
    small = data.subsample(samples, per_class=5, seed=0)
    assert Counter(s.label for s in small) == {0: 5, 1: 5}
    assert data.subsample(samples, per_class=5, seed=0) == small


# --------------------------------------------------------------------------- image cache


def test_image_cache_decodes_to_uint8_squares_and_skips_corrupt_files(kermany: Path) -> None:
    (kermany / "NORMAL" / "IM-0500-0001.jpeg").write_bytes(b"this is not a jpeg")
    samples, _ = data.scan_class_folders(kermany)
    progress_calls = []

    cache = data.ImageCache(samples, SIZE, progress=lambda done, total: progress_calls.append((done, total)))

    assert cache.images.shape == (len(samples) - 1, SIZE, SIZE)
    assert cache.images.dtype == np.uint8
    assert len(cache.skipped) == 1 and cache.skipped[0][0].endswith("IM-0500-0001.jpeg")
    assert all(not s.path.endswith("IM-0500-0001.jpeg") for s in cache.samples)
    assert progress_calls[-1] == (len(samples), len(samples))
    assert cache.images.std() > 10  # real pixels, not an empty buffer


def test_image_cache_row_matches_its_file(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / "A" / f"{v}.png", 0, size=SIZE, value=v) for v in (10, 200)]
    samples = [data.Sample(str(p), 0, p.name) for p in paths]
    cache = data.ImageCache(samples, SIZE, workers=2)
    assert cache.images[0].max() == 10 and cache.images[1].min() == 200
    assert cache.indices_of([samples[1], samples[1], samples[0]]) == [1, 1, 0]


def test_image_cache_resizes_without_keeping_aspect_ratio(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((20, 80), 77, np.uint8)).save(path)
    cache = data.ImageCache([data.Sample(str(path), 0, "wide")], SIZE)
    assert cache.images.shape == (1, SIZE, SIZE) and (cache.images == 77).all()


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 60000, SIZE), (SIZE, 1)).astype(np.uint16)  # left dark, right bright
    Image.fromarray(ramp).save(path)
    grey = data.decode_to_uint8(str(path), SIZE)
    assert grey.dtype == np.uint8 and grey.shape == (SIZE, SIZE)
    assert grey[:, 0].mean() < 20 and grey[:, -1].mean() > 235  # Pillow's convert("L") would clip to 255
    assert (np.diff(grey[SIZE // 2].astype(int)) >= 0).all()


def test_image_cache_reuses_the_persisted_cache(kermany: Path, tmp_path: Path, monkeypatch) -> None:
    (kermany / "NORMAL" / "IM-0500-0001.jpeg").write_bytes(b"corrupt")
    samples, _ = data.scan_class_folders(kermany)
    cache_dir = tmp_path / "cache"
    first = data.ImageCache(samples, SIZE, cache_dir=cache_dir)
    assert list(cache_dir.glob("*.npy"))

    def no_decoding(path: str, size: int) -> np.ndarray:
        raise AssertionError("the persisted cache should have been used")

    monkeypatch.setattr(data, "decode_to_uint8", no_decoding)
    second = data.ImageCache(samples, SIZE, cache_dir=cache_dir)

    np.testing.assert_array_equal(np.asarray(second.images), first.images)
    assert second.samples == first.samples
    assert second.skipped == first.skipped

    # A changed file changes the key: the cache is rebuilt (here: with the failing decoder).
    touched = samples[0].path
    os.utime(touched, ns=(1, 1))
    rebuilt = data.ImageCache(samples, SIZE, cache_dir=cache_dir)
    assert len(rebuilt.samples) == 0 and len(rebuilt.skipped) == len(samples)


# --------------------------------------------------------------------------- augmentations

REQUIRED_AUGMENTATIONS = {
    "hflip", "vflip", "rotate", "grayscale", "equalize", "center_crop", "random_crop", "zoom", "shift",
    "shear", "brightness_contrast", "invert", "gaussian_blur", "gaussian_noise", "resize",
}
EXAMPLE_PARAMS = {"center_crop": {"size": 24}, "random_crop": {"size": 20}, "resize": {"size": 16}}
EXPECTED_SIZE = {"center_crop": 24, "random_crop": 20, "resize": 16}


def random_image(size: int = 48) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, size, size), np.uint8))


def test_every_documented_augmentation_is_registered() -> None:
    assert REQUIRED_AUGMENTATIONS <= set(data.AUGMENTATIONS)


@pytest.mark.parametrize("name", sorted(REQUIRED_AUGMENTATIONS))
def test_each_augmentation_applies_to_a_uint8_image(name: str) -> None:
    transform = data.build_augmentation([{"name": name, **EXAMPLE_PARAMS.get(name, {})}])
    out = transform(random_image(48))
    size = EXPECTED_SIZE.get(name, 48)
    assert out.dtype == torch.uint8
    assert tuple(out.shape) == (1, size, size)


def test_augmentations_compose_in_order_with_json_style_parameters() -> None:
    transform = data.build_augmentation(
        ["equalize", {"name": "rotate", "degrees": [-25, 20]}, {"name": "center_crop", "size": 30}, "hflip"]
    )
    assert tuple(transform(random_image(48)).shape) == (1, 30, 30)


def test_build_augmentation_rejects_unknown_names_and_bad_parameters() -> None:
    with pytest.raises(ValueError, match="hflip"):  # the message lists the valid names
        data.build_augmentation(["hflip", "teleport"])
    with pytest.raises(ValueError, match="rotate"):
        data.build_augmentation([{"name": "rotate", "angle": 5}])


def test_invert_and_hflip_are_exact() -> None:
    image = random_image(16)
    assert torch.equal(data.build_augmentation([{"name": "invert", "p": 1.0}])(image), 255 - image)
    assert torch.equal(data.build_augmentation([{"name": "hflip", "p": 1.0}])(image), image.flip(-1))
    assert torch.equal(data.build_augmentation([{"name": "hflip", "p": 0.0}])(image), image)


def test_gaussian_noise_perturbs_within_uint8_range() -> None:
    image = torch.full((1, 32, 32), 128, dtype=torch.uint8)
    noisy = data.build_augmentation([{"name": "gaussian_noise", "std": 0.1}])(image)
    assert noisy.dtype == torch.uint8
    assert 15 < (noisy.float() - 128).std() < 35  # 0.1 of the intensity range = 25.5 grey levels
    assert torch.equal(data.build_augmentation([{"name": "gaussian_noise", "std": 0.0}])(image), image)


# --------------------------------------------------------------------------- torch dataset


@pytest.fixture
def grey_cache(tmp_path: Path) -> data.ImageCache:
    dark = write_image(tmp_path / "A" / "a.png", 0, size=SIZE, value=51)
    bright = write_image(tmp_path / "B" / "b.png", 0, size=SIZE, value=204)
    return data.ImageCache([data.Sample(str(dark), 0, "a"), data.Sample(str(bright), 1, "b")], SIZE)


def test_xray_dataset_returns_normalised_three_channel_tensors(grey_cache: data.ImageCache) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    image, label, row = data.XrayDataset(grey_cache, indices=[1], mean=mean, std=std)[0]

    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert (label, row) == (1, 1)
    expected = (204 / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(image[:, 5, 5], expected)
    assert torch.allclose(image, image[:, :1, :1].expand_as(image))  # uniform input stays uniform


def test_xray_dataset_resizes_crops_back_to_the_output_size(grey_cache: data.ImageCache) -> None:
    crop = data.build_augmentation([{"name": "center_crop", "size": 20}])
    dataset = data.XrayDataset(grey_cache, transform=crop, output_size=24, mean=(0.5,) * 3, std=(1.0,) * 3)
    image, label, _ = dataset[0]
    assert image.shape == (3, 24, 24) and label == 0
    torch.testing.assert_close(image, torch.full((3, 24, 24), 51 / 255 - 0.5))
    assert len(dataset) == 2 and list(dataset.labels()) == [0, 1]


def test_to_network_input_matches_the_dataset(grey_cache: data.ImageCache) -> None:
    from_dataset = data.XrayDataset(grey_cache, output_size=16)[0][0]
    direct = data.to_network_input(np.asarray(grey_cache.images[0]), 16)
    torch.testing.assert_close(from_dataset, direct)


# --------------------------------------------------------------------------- dataset builders


def test_build_kermany_3class_sorts_pneumonia_by_file_name(kermany: Path, tmp_path: Path) -> None:
    names = kermany_names()
    counts = data.build_kermany_3class(kermany, tmp_path / "three")

    n_viral = sum("virus" in n for n in names["PNEUMONIA"])
    n_bacterial = len(names["PNEUMONIA"]) - n_viral
    assert counts == {"NORMAL": len(names["NORMAL"]), "BACTERIAL": n_bacterial, "VIRAL": n_viral}
    linked = next((tmp_path / "three" / "VIRAL").iterdir())
    assert linked.is_symlink() and "virus" in linked.name
    samples, class_names = data.scan_class_folders(tmp_path / "three")
    assert class_names == ["BACTERIAL", "NORMAL", "VIRAL"] and len(samples) == sum(counts.values())

    copied = data.build_kermany_3class(kermany, tmp_path / "copied", link=False)
    assert copied == counts
    assert not any(p.is_symlink() for p in (tmp_path / "copied" / "NORMAL").iterdir())


def test_merge_class_folders_pools_sources_and_renames_clashes(tmp_path: Path) -> None:
    write_image(tmp_path / "src1" / "COVID" / "img-1.png", 1)
    write_image(tmp_path / "src1" / "COVID" / "img-2.png", 2)
    write_image(tmp_path / "src2" / "covid" / "img-1.png", 3)  # same name, different file
    write_image(tmp_path / "src2" / "normal" / "images" / "n-1.png", 4)  # COVID-19 Radiography layout
    write_image(tmp_path / "src2" / "normal" / "masks" / "n-1.png", 5)
    sources = {
        "COVID": [tmp_path / "src1" / "COVID", tmp_path / "src2" / "covid"],
        "NORMAL": [tmp_path / "src2" / "normal"],
    }

    counts = data.merge_class_folders(sources, tmp_path / "merged")

    assert counts == {"COVID": 3, "NORMAL": 1}
    assert len(list((tmp_path / "merged" / "COVID").iterdir())) == 3
    assert data.merge_class_folders(sources, tmp_path / "merged") == counts  # rebuilding is harmless
    assert len(list((tmp_path / "merged" / "COVID").iterdir())) == 3


def test_batch_augmentation_matches_the_per_image_path_and_is_reproducible():
    rng = np.random.default_rng(0)
    grey = torch.from_numpy((rng.random((4, 1, 32, 32)) * 255).astype(np.uint8))
    reference = torch.stack([data.to_network_input(g[0].numpy(), 32) for g in grey])
    assert torch.allclose(data.BatchAugmentation([], 32)(grey), reference, atol=1e-5)
    flipped = data.BatchAugmentation([{"name": "hflip", "p": 1.0}], 32)(grey)
    assert torch.allclose(flipped, torch.flip(reference, dims=[3]), atol=1e-4)
    inverted = data.BatchAugmentation([{"name": "invert", "p": 1.0}], 32, mean=(0, 0, 0), std=(1, 1, 1))(grey)
    assert torch.allclose(inverted[:, :1], 1 - grey.float() / 255, atol=1e-6)
    specs = ["hflip", {"name": "rotate", "degrees": 20}, {"name": "zoom", "scale": [0.8, 1.2]}, "brightness_contrast"]
    torch.manual_seed(3)
    first = data.BatchAugmentation(specs, 24)(grey)
    torch.manual_seed(3)
    again = data.BatchAugmentation(specs, 24)(grey)
    assert first.shape == (4, 3, 24, 24) and torch.equal(first, again) and not torch.allclose(first[:, :, :24, :24], reference[:, :, :24, :24])


def test_training_input_picks_the_batched_path_only_when_every_option_allows_it(tmp_path):
    root = tmp_path / "d"
    for name in ("NORMAL", "PNEUMONIA"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((40, 40), 60 * i + 40, np.uint8)).save(root / name / f"IM-{i:04d}-0001.png")
    samples, _ = data.scan_class_folders(root)
    cache = data.ImageCache(samples, 40)
    fast, finish = data.training_input(cache, [0, 1], ["hflip", {"name": "rotate", "degrees": 5}], 40)
    assert fast.raw and isinstance(finish, data.BatchAugmentation) and fast[0][0].dtype == torch.uint8
    slow, identity = data.training_input(cache, [0, 1], [{"name": "center_crop", "size": 32}], 40)
    image = slow[0][0]
    assert not slow.raw and image.shape == (3, 40, 40) and identity(image) is image


def test_gamma_and_blur_sharpen_do_what_their_names_say() -> None:
    """On a step edge: gamma moves mid-grey both ways (darker and brighter films), blur_sharpen lowers
    and raises the edge's contrast, and neither moves the edge."""
    torch.manual_seed(0)
    step = torch.full((64, 1, 32, 32), 0.25)
    step[..., 16:] = 0.75
    gamma = data.INTENSITY_BATCH_OPS["gamma"](gamma=2.0)(step.clone())
    means = gamma.mean(dim=(1, 2, 3))
    assert (means < step.mean() - 0.02).any() and (means > step.mean() + 0.02).any()
    assert torch.all(gamma[..., :16].mean(dim=(1, 2, 3)) < gamma[..., 16:].mean(dim=(1, 2, 3))), "order of greys kept"

    edge = data.INTENSITY_BATCH_OPS["blur_sharpen"](amount=1.0, sigma=1.0)(step.clone())
    jump = (edge[..., 16] - edge[..., 15]).mean(dim=(1, 2))  # contrast across the edge
    assert (jump < 0.45).any() and (jump > 0.55).any()
    assert torch.allclose(edge[..., :4], step[..., :4]) and torch.allclose(edge[..., -4:], step[..., -4:])


def test_crop_margin_cuts_away_corner_text_and_keeps_the_size() -> None:
    grey = np.full((100, 100), 90, np.uint8)
    grey[2:8, 2:20] = 255  # a timestamp in the corner
    grey[40:60, 40:60] = 30  # the middle
    cropped = data.crop_margin(grey, 0.1)
    assert cropped.shape == grey.shape and cropped.max() < 255, "the corner text is gone"
    assert cropped[45:55, 45:55].mean() < 40, "the middle stays (slightly enlarged)"
    assert data.crop_margin(grey, 0.0) is grey
    assert np.array_equal(data.prepare_grey(grey, "none", 0.1), cropped)
