"""xraycore.data: folders, patient grouping, splits, weights, the image cache, the torch dataset, builders
(augmentations: tests/data/test_augment.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xraycore.data import decode
from xraycore.data.build import build_kermany_3class, merge_class_folders
from xraycore.data.cache import UNRECORDED, ImageCache
from xraycore.data.dataset import XrayDataset, to_network_input, training_input
from xraycore.data.decode import crop_margin, decode_to_uint8, normalise_intensity, prepare_grey, require_intensity
from xraycore.data.folders import Sample, discover_splits, patient_id, scan_class_folders
from xraycore.data.splits import class_weights, grow_minority, kfold_splits, split_by_ratio, subsample

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


# --------------------------------------------------------------------------- imports


def test_the_torch_free_modules_import_without_torch() -> None:
    """Serving installs have no torch: everything but augment and dataset must import without it."""
    code = ("import sys; import xraycore.data as d; from xraycore.data import build, cache, decode, folders, splits; "
            "d.ImageCache, d.network_input, d.scan_class_folders; sys.exit('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert done.returncode == 0, "torch was imported"


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
    assert patient_id(filename) == expected


def test_patient_id_keeps_normal2_series_apart_and_accepts_a_custom_pattern() -> None:
    assert patient_id("NORMAL2-IM-0427-0001.jpeg") != patient_id("IM-0427-0001.jpeg")
    assert patient_id("IM-0427-0001.jpeg") == patient_id("IM-0427-0002.jpeg")
    assert patient_id("case7_view2.png", r"^(case\d+)_") == "case7"


# --------------------------------------------------------------------------- scanning


def test_scan_class_folders_labels_patients_and_skips_junk(kermany: Path) -> None:
    (kermany / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    (kermany / "NORMAL" / "notes.txt").write_text("not an image")
    write_image(kermany / "NORMAL" / ".hidden.png", seed=1)
    (kermany / ".cache").mkdir()

    samples, class_names = scan_class_folders(kermany)

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
    samples, class_names = scan_class_folders(kermany, ["PNEUMONIA", "NORMAL"])
    assert class_names == ["PNEUMONIA", "NORMAL"]
    assert {s.label for s in samples if "person" in s.path} == {0}
    assert {s.label for s in samples if "IM-" in s.path} == {1}


def test_scan_puts_byte_identical_files_in_one_group(kermany: Path) -> None:
    shutil.copy(kermany / "NORMAL" / "IM-0000-0001.jpeg", kermany / "NORMAL" / "IM-0099-0001.jpeg")
    samples, _ = scan_class_folders(kermany)
    patient = {Path(s.path).name: s.patient for s in samples}
    assert patient["IM-0099-0001.jpeg"] == patient["IM-0000-0001.jpeg"]
    unmerged, _ = scan_class_folders(kermany, group_duplicates=False)
    assert {Path(s.path).name: s.patient for s in unmerged}["IM-0099-0001.jpeg"] == "IM-0099"


def test_discover_splits_with_split_folders(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"NORMAL": ["IM-0001-0001.jpeg"], "PNEUMONIA": ["person1_virus_1.jpeg"]})
    make_class_folders(tmp_path / "val", {"PNEUMONIA": ["person2_bacteria_2.jpeg"]})
    make_class_folders(tmp_path / "test", {"NORMAL": ["IM-0003-0001.jpeg"], "COVID": ["COVID-1.png"]})

    splits, class_names = discover_splits(tmp_path)

    assert set(splits) == {"train", "val", "test"}
    assert class_names == ["COVID", "NORMAL", "PNEUMONIA"]  # union of every split's folders, one order
    assert [s.label for s in splits["val"]] == [2]
    assert sorted(s.label for s in splits["test"]) == [0, 1]
    assert sorted(s.label for s in splits["train"]) == [1, 2]


def test_discover_splits_uses_only_the_split_folders_that_exist(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "train", {"A": ["a.png"], "B": ["b.png"]})
    make_class_folders(tmp_path / "test", {"A": ["c.png"], "B": ["d.png"]})
    splits, _ = discover_splits(tmp_path)
    assert set(splits) == {"train", "test"}


def test_discover_splits_without_split_folders_returns_all(kermany: Path) -> None:
    splits, class_names = discover_splits(kermany)
    assert set(splits) == {"all"}
    assert class_names == ["NORMAL", "PNEUMONIA"]
    assert len(splits["all"]) == sum(len(v) for v in kermany_names().values())


# --------------------------------------------------------------------------- splits


def synthetic_samples(n_patients: int = 120, seed: int = 0) -> list[Sample]:
    """~30% positive patients with 1-4 images each (no files needed for splitting)."""
    rng = np.random.default_rng(seed)
    samples = []
    for p in range(n_patients):
        label = int(p % 10 < 3)
        samples += [Sample(f"/x/p{p}_{k}.png", label, f"p{p}") for k in range(int(rng.integers(1, 5)))]
    return samples


def positive_share(samples: list[Sample]) -> float:
    return sum(s.label for s in samples) / len(samples)


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.3])
def test_split_by_ratio_is_patient_grouped_stratified_and_sized(val_fraction: float) -> None:
    samples = synthetic_samples()
    train, val = split_by_ratio(samples, val_fraction, seed=3)

    assert sorted(train + val, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    assert not {s.patient for s in train} & {s.patient for s in val}
    assert {s.label for s in train} == {s.label for s in val} == {0, 1}
    assert abs(positive_share(val) - positive_share(samples)) < 0.08
    assert abs(len(val) / len(samples) - val_fraction) < 0.06


def test_split_by_ratio_is_deterministic_for_a_seed() -> None:
    samples = synthetic_samples()
    first = split_by_ratio(samples, 0.2, seed=7)
    assert split_by_ratio(samples, 0.2, seed=7) == first
    assert split_by_ratio(samples, 0.2, seed=8)[1] != first[1]


def test_split_by_ratio_on_scanned_kermany_folders(kermany: Path) -> None:
    samples, _ = scan_class_folders(kermany)
    train, val = split_by_ratio(samples, 0.25, seed=0)
    assert not {s.patient for s in train} & {s.patient for s in val}
    assert {s.label for s in val} == {0, 1}


def test_split_by_ratio_rejects_impossible_fractions() -> None:
    with pytest.raises(ValueError):
        split_by_ratio(synthetic_samples(), 1.0)


def test_kfold_covers_every_sample_once_and_keeps_patients_together() -> None:
    samples = synthetic_samples()
    folds = kfold_splits(samples, k=5, seed=1)

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
    negatives = [Sample(f"n{i}", 0, f"n{i}") for i in range(30)]
    samples = negatives + [Sample(f"p{i}", 1, f"p{i}") for i in range(10)]
    weights = class_weights(samples, 2)
    np.testing.assert_allclose(weights, [40 / (2 * 30), 40 / (2 * 10)])
    n_neg, n_pos = 30, 10  # study 000: w+ = N/(P+N), w- = P/(P+N) -- same up to one common factor
    np.testing.assert_allclose(weights / weights.sum(), [n_pos / 40, n_neg / 40])


def test_class_weights_give_zero_to_an_absent_class() -> None:
    samples = [Sample("a", 0, "a"), Sample("b", 2, "b"), Sample("c", 2, "c")]
    np.testing.assert_allclose(class_weights(samples, 3), [3 / 3, 0.0, 3 / 6])


def test_grow_minority_adds_percent_of_each_smaller_class() -> None:
    counts = {0: 20, 1: 10, 2: 5}
    samples = [Sample(f"{c}/{i}", c, f"{c}{i}") for c, n in counts.items() for i in range(n)]
    grown = grow_minority(samples, 20, seed=0)

    assert Counter(s.label for s in grown) == {0: 20, 1: 12, 2: 6}
    assert set(grown) <= set(samples)  # copies of existing files, nothing invented
    assert grown[: len(samples)] == samples
    assert grow_minority(samples, 0) == samples


def test_subsample_caps_each_class() -> None:
    samples = synthetic_samples()
    small = subsample(samples, per_class=5, seed=0)
    assert Counter(s.label for s in small) == {0: 5, 1: 5}
    assert subsample(samples, per_class=5, seed=0) == small


# --------------------------------------------------------------------------- image cache


def test_image_cache_decodes_to_uint8_squares_and_skips_corrupt_files(kermany: Path) -> None:
    (kermany / "NORMAL" / "IM-0500-0001.jpeg").write_bytes(b"this is not a jpeg")
    samples, _ = scan_class_folders(kermany)
    progress_calls = []

    cache = ImageCache(samples, SIZE, progress=lambda done, total: progress_calls.append((done, total)))

    assert cache.images.shape == (len(samples) - 1, SIZE, SIZE)
    assert cache.images.dtype == np.uint8
    assert len(cache.skipped) == 1 and cache.skipped[0][0].endswith("IM-0500-0001.jpeg")
    assert all(not s.path.endswith("IM-0500-0001.jpeg") for s in cache.samples)
    assert progress_calls[-1] == (len(samples), len(samples))
    assert cache.images.std() > 10  # real pixels, not an empty buffer


def test_image_cache_row_matches_its_file(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / "A" / f"{v}.png", 0, size=SIZE, value=v) for v in (10, 200)]
    samples = [Sample(str(p), 0, p.name) for p in paths]
    cache = ImageCache(samples, SIZE, workers=2)
    assert cache.images[0].max() == 10 and cache.images[1].min() == 200
    assert cache.indices_of([samples[1], samples[1], samples[0]]) == [1, 1, 0]


def test_image_cache_resizes_without_keeping_aspect_ratio(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.fromarray(np.full((20, 80), 77, np.uint8)).save(path)
    cache = ImageCache([Sample(str(path), 0, "wide")], SIZE)
    assert cache.images.shape == (1, SIZE, SIZE) and (cache.images == 77).all()


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 60000, SIZE), (SIZE, 1)).astype(np.uint16)  # left dark, right bright
    Image.fromarray(ramp).save(path)
    grey = decode_to_uint8(str(path), SIZE)
    assert grey.dtype == np.uint8 and grey.shape == (SIZE, SIZE)
    assert grey[:, 0].mean() < 20 and grey[:, -1].mean() > 235  # Pillow's convert("L") would clip to 255
    assert (np.diff(grey[SIZE // 2].astype(int)) >= 0).all()


def test_image_cache_reuses_the_persisted_cache(kermany: Path, tmp_path: Path, monkeypatch) -> None:
    (kermany / "NORMAL" / "IM-0500-0001.jpeg").write_bytes(b"corrupt")
    samples, _ = scan_class_folders(kermany)
    cache_dir = tmp_path / "cache"
    first = ImageCache(samples, SIZE, cache_dir=cache_dir)
    assert list(cache_dir.glob("*.npy"))

    decoded: list[str] = []
    real_decoder = decode.decode_to_uint8
    monkeypatch.setattr(decode, "decode_to_uint8", lambda path, size: decoded.append(path) or real_decoder(path, size))
    second = ImageCache(samples, SIZE, cache_dir=cache_dir)

    assert decoded == [], "the persisted cache was used"
    np.testing.assert_array_equal(np.asarray(second.images), first.images)
    assert second.samples == first.samples
    assert second.skipped == first.skipped
    assert second.skipped_by_reason == first.skipped_by_reason == {"not an image": 1}

    # A cache saved before reasons were counted still loads; its skipped files are counted as unrecorded.
    index_file = next(cache_dir.glob("*.json"))
    index_file.write_text(json.dumps({"kept": json.loads(index_file.read_text())["kept"], "skipped": first.skipped}))
    assert ImageCache(samples, SIZE, cache_dir=cache_dir).skipped_by_reason == {UNRECORDED: 1}

    # A changed file changes the key: the cache is rebuilt.
    os.utime(samples[0].path, ns=(1, 1))
    rebuilt = ImageCache(samples, SIZE, cache_dir=cache_dir)
    assert len(decoded) == len(samples) and rebuilt.skipped_by_reason == {"not an image": 1}


def test_skipped_files_are_counted_by_reason_and_bugs_are_not_skipped(kermany: Path, monkeypatch) -> None:
    whole = (kermany / "NORMAL" / "IM-0000-0001.jpeg").read_bytes()
    (kermany / "NORMAL" / "IM-0500-0001.jpeg").write_bytes(b"<html>not a film</html>")
    (kermany / "NORMAL" / "IM-0501-0001.jpeg").write_bytes(whole[: len(whole) // 2])
    (kermany / "PNEUMONIA" / "person900_bacteria_1.jpeg").write_bytes(b"")
    samples, _ = scan_class_folders(kermany)

    cache = ImageCache(samples, SIZE)

    assert cache.skipped_by_reason == {"damaged or truncated": 1, "empty file": 1, "not an image": 1}
    assert len(cache.skipped) == 3 and len(cache) == len(samples) - 3

    def broken_decoder(path: str, size: int) -> np.ndarray:
        raise TypeError("a bug, not a bad file")

    monkeypatch.setattr(decode, "decode_to_uint8", broken_decoder)
    with pytest.raises(TypeError, match="a bug"):
        ImageCache(samples, SIZE)


# --------------------------------------------------------------------------- torch dataset


@pytest.fixture
def grey_cache(tmp_path: Path) -> ImageCache:
    dark = write_image(tmp_path / "A" / "a.png", 0, size=SIZE, value=51)
    bright = write_image(tmp_path / "B" / "b.png", 0, size=SIZE, value=204)
    return ImageCache([Sample(str(dark), 0, "a"), Sample(str(bright), 1, "b")], SIZE)


def test_xray_dataset_returns_normalised_three_channel_tensors(grey_cache: ImageCache) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    image, label, row = XrayDataset(grey_cache, indices=[1], mean=mean, std=std)[0]

    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert (label, row) == (1, 1)
    expected = (204 / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(image[:, 5, 5], expected)
    assert torch.allclose(image, image[:, :1, :1].expand_as(image))  # uniform input stays uniform


def test_xray_dataset_resizes_to_the_output_size(grey_cache: ImageCache) -> None:
    dataset = XrayDataset(grey_cache, output_size=24, mean=(0.5,) * 3, std=(1.0,) * 3)
    image, label, _ = dataset[0]
    assert image.shape == (3, 24, 24) and label == 0
    torch.testing.assert_close(image, torch.full((3, 24, 24), 51 / 255 - 0.5))
    assert len(dataset) == 2 and list(dataset.labels()) == [0, 1]


def test_to_network_input_matches_the_dataset(grey_cache: ImageCache) -> None:
    from_dataset = XrayDataset(grey_cache, output_size=16)[0][0]
    direct = to_network_input(np.asarray(grey_cache.images[0]), 16)
    torch.testing.assert_close(from_dataset, direct)


def test_the_predictors_input_is_what_training_validated_on(tiny_run: Path) -> None:
    """The same film, two paths: the training pipeline (prepare_data's cache, then XrayDataset, as validation
    scored it) and the Predictor's (read the file, Network.prepare). Same numbers, or the model is scored on
    inputs it never saw."""
    from xraycore.runs import directory as xruns
    from xraycore.training.config import from_record
    from xraycore.io.reader import read_xray
    from xraycore.inference.predictor import Predictor
    from xraycore.training.run_data import prepare_data

    run = xruns.Run(tiny_run)
    config = from_record(run.config["train"])
    splits = prepare_data(config)
    dataset = XrayDataset(splits.cache, splits.val, output_size=run.config["image_size"], mean=run.config["mean"],
                          std=run.config["std"])
    network = Predictor(tiny_run, backend="torch").networks[0]
    for position in (0, len(splits.val) - 1):
        path = splits.cache.samples[splits.val[position]].path
        trained_on = dataset[position][0].numpy()
        predicted_on = network.prepare(read_xray(path))
        assert predicted_on.shape == trained_on.shape
        np.testing.assert_allclose(predicted_on, trained_on, atol=1e-6, err_msg=Path(path).name)


# --------------------------------------------------------------------------- dataset builders


def test_build_kermany_3class_sorts_pneumonia_by_file_name(kermany: Path, tmp_path: Path) -> None:
    names = kermany_names()
    counts = build_kermany_3class(kermany, tmp_path / "three")

    n_viral = sum("virus" in n for n in names["PNEUMONIA"])
    n_bacterial = len(names["PNEUMONIA"]) - n_viral
    assert counts == {"NORMAL": len(names["NORMAL"]), "BACTERIAL": n_bacterial, "VIRAL": n_viral}
    linked = next((tmp_path / "three" / "VIRAL").iterdir())
    assert linked.is_symlink() and "virus" in linked.name
    samples, class_names = scan_class_folders(tmp_path / "three")
    assert class_names == ["BACTERIAL", "NORMAL", "VIRAL"] and len(samples) == sum(counts.values())

    copied = build_kermany_3class(kermany, tmp_path / "copied", link=False)
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

    counts = merge_class_folders(sources, tmp_path / "merged")

    assert counts == {"COVID": 3, "NORMAL": 1}
    assert len(list((tmp_path / "merged" / "COVID").iterdir())) == 3
    assert merge_class_folders(sources, tmp_path / "merged") == counts  # rebuilding is harmless
    assert len(list((tmp_path / "merged" / "COVID").iterdir())) == 3


def test_training_input_serves_uint8_rows_and_finishes_them_a_batch_at_a_time(tmp_path):
    root = tmp_path / "d"
    for name in ("NORMAL", "PNEUMONIA"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((40, 40), 60 * i + 40, np.uint8)).save(root / name / f"IM-{i:04d}-0001.png")
    samples, _ = scan_class_folders(root)
    cache = ImageCache(samples, 40)
    for specs in (["hflip", {"name": "rotate", "degrees": 5}], [{"name": "center_crop", "size": 32}]):
        dataset, finish = training_input(cache, [0, 1], specs, 36)
        image, label, row = dataset[1]
        assert image.dtype == torch.uint8 and image.shape == (1, 40, 40) and (label, row) == (0, 1)
        batch = finish(torch.stack([dataset[0][0], dataset[1][0]]))
        assert batch.shape == (2, 3, 36, 36) and batch.dtype == torch.float32


def test_crop_margin_cuts_away_corner_text_and_keeps_the_size() -> None:
    grey = np.full((100, 100), 90, np.uint8)
    grey[2:8, 2:20] = 255  # a timestamp in the corner
    grey[40:60, 40:60] = 30  # the middle
    cropped = crop_margin(grey, 0.1)
    assert cropped.shape == grey.shape and cropped.max() < 255, "the corner text is gone"
    assert cropped[45:55, 45:55].mean() < 40, "the middle stays (slightly enlarged)"
    assert crop_margin(grey, 0.0) is grey
    assert np.array_equal(prepare_grey(grey, "none", 0.1), cropped)


def test_standardize_gives_a_bright_and_a_dark_film_the_same_grey_levels() -> None:
    texture = np.random.default_rng(0).integers(0, 60, (64, 64))
    dark, bright = (40 + texture).astype(np.uint8), (150 + texture).astype(np.uint8)
    dark_out, bright_out = normalise_intensity(dark, "standardize"), normalise_intensity(bright, "standardize")
    assert dark_out.dtype == np.uint8 and dark_out.shape == dark.shape
    assert np.array_equal(dark_out, bright_out), "only the brightness differed, so nothing is left to tell them apart"
    assert abs(float(dark_out.mean()) - 128) < 1.5 and abs(float(dark_out.std()) - 60) < 1.5
    assert np.array_equal(normalise_intensity(np.full((8, 8), 77, np.uint8), "standardize"), np.full((8, 8), 128)), \
        "a flat image has no spread to scale: it goes to mid-grey instead of dividing by zero"


def test_clahe_raises_the_contrast_of_a_faint_region_and_keeps_the_size() -> None:
    grey = np.full((128, 128), 120, np.uint8)
    grey[:, :64] = np.random.default_rng(1).integers(100, 110, (128, 64))  # faint texture on the left half
    out = normalise_intensity(grey, "clahe")
    assert out.dtype == np.uint8 and out.shape == grey.shape
    assert out[:, :64].std() > 2 * grey[:, :64].std()


def test_an_unknown_intensity_normalisation_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown intensity normalisation 'sharpen'.*standardize"):
        normalise_intensity(np.zeros((4, 4), np.uint8), "sharpen")


def test_a_clahe_model_in_an_install_without_opencv_says_what_to_install(monkeypatch) -> None:
    assert require_intensity("clahe") == "clahe" and require_intensity("standardize") == "standardize"
    monkeypatch.setitem(sys.modules, "cv2", None)  # what the serving install (no OpenCV) sees
    with pytest.raises(ImportError, match="CLAHE.*pip install opencv-python-headless"):
        require_intensity("clahe")
    assert require_intensity("standardize") == "standardize", "the other normalisations need nothing more"
