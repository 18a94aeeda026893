"""Datasets on disk: class folders, patient grouping, splits, class weights, the image cache, augmentations.

The path from folders to tensors:

    scan_class_folders / discover_splits  ->  list[Sample]  (path, label, patient)
    split_by_ratio / kfold_splits         ->  train / val lists, never sharing a patient
    ImageCache                            ->  every image decoded once to uint8 size x size
    XrayDataset + build_augmentation      ->  normalised 3xHxW float tensors for a model (xraycore.tensors)
    network_input                         ->  the same numbers in numpy, for prediction on any backend

Nothing here knows about models or the UI: a model's input size and mean/std are passed in. This module
imports neither torch nor scikit-learn (serving installs have neither); the torch side lives in
:mod:`xraycore.tensors`, and its names are still reachable here (``data.XrayDataset``).
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}

# Kermany file names carry the patient: "person123_bacteria_456.jpeg" -> "person123",
# "IM-0115-0001.jpeg" -> "IM-0115", "NORMAL2-IM-0427-0001.jpeg" -> "NORMAL2-IM-0427" (the prefix keeps
# the NORMAL2 series apart from the IM series). Names that match nothing are their own group.
DEFAULT_PATIENT_PATTERN = r"^(person\d+|(?:[A-Za-z0-9]+-)?IM-\d+)(?=[-_.])"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Bump when decoding changes, so persisted caches made by older code are not reused.
_DECODER_VERSION = "pillow-draft-bilinear-1"


@dataclass(frozen=True)
class Sample:
    """One image file. `patient` groups files that must stay on the same side of a split."""

    path: str
    label: int
    patient: str


@dataclass
class Dataset:
    """Samples plus the class names their integer labels index into."""

    class_names: list[str]
    samples: list[Sample]

    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(s.label for s in self.samples)
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}


# --------------------------------------------------------------------------- folders and patients


def patient_id(filename: str | Path, pattern: str | None = DEFAULT_PATIENT_PATTERN) -> str:
    """The patient a file belongs to: the pattern's first group, matched against the base name.

    A name that matches nothing is its own group: the function returns `filename` unchanged, so
    pass a path (e.g. relative to the dataset root) when base names can repeat across folders.
    """
    match = re.search(pattern or DEFAULT_PATIENT_PATTERN, Path(filename).name, flags=re.IGNORECASE)
    return match.group(1) if match else str(filename)


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name.

    A folder with an `images/` sub-folder (the COVID-19 Radiography layout, which keeps lung
    masks next to it in `masks/`) is read from `images/` instead.
    """
    images_subfolder = folder / "images"
    if images_subfolder.is_dir():
        folder = images_subfolder
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _class_folder_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_folders(
    root: str | Path,
    class_names: list[str] | None = None,
    pattern: str | None = DEFAULT_PATIENT_PATTERN,
    group_duplicates: bool = True,
) -> tuple[list[Sample], list[str]]:
    """Samples of a folder-per-class dataset and the class names their labels index into.

    Class order is `class_names` when given (a missing folder simply has no samples), else the
    sorted folder names. Hidden files and non-images are skipped. With `group_duplicates`,
    byte-identical files are put in one patient group so a copy can never leak across a split.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    class_names = list(class_names) if class_names else _class_folder_names(root)
    if not class_names:
        raise ValueError(f"{root} has no class folders (expected one sub-folder per class)")
    samples = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in list_images(folder):
            relative = path.relative_to(root).as_posix()
            samples.append(Sample(str(path), label, patient_id(relative, pattern)))
    if group_duplicates:
        samples = merge_duplicate_groups(samples)
    return samples, class_names


SPLIT_FOLDER_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def discover_splits(
    root: str | Path,
    class_names: list[str] | None = None,
    pattern: str | None = DEFAULT_PATIENT_PATTERN,
    group_duplicates: bool = True,
) -> tuple[dict[str, list[Sample]], list[str]]:
    """{"train": ..., "val": ..., "test": ...} for whichever split folders exist, else {"all": ...}.

    Split folders are recognised case-insensitively ("valid"/"validation" count as "val"). Every
    split uses the same class order: `class_names`, else the sorted union of their class folders.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    split_folders = {
        SPLIT_FOLDER_NAMES[p.name.lower()]: p
        for p in sorted(root.iterdir())
        if p.is_dir() and p.name.lower() in SPLIT_FOLDER_NAMES
    }
    if not split_folders:
        samples, class_names = scan_class_folders(root, class_names, pattern, group_duplicates)
        return {"all": samples}, class_names
    if not class_names:
        class_names = sorted({name for folder in split_folders.values() for name in _class_folder_names(folder)})
    splits = {
        split: scan_class_folders(folder, class_names, pattern, group_duplicates)[0]
        for split, folder in split_folders.items()
    }
    return splits, class_names


def find_duplicate_files(paths: Iterable[str | Path]) -> list[list[str]]:
    """Groups (of two or more) of byte-identical files. Only files of equal size are hashed."""
    by_size: dict[int, list[str]] = defaultdict(list)
    for path in paths:
        by_size[os.path.getsize(path)].append(str(path))
    duplicates = []
    for same_size in (group for group in by_size.values() if len(group) > 1):
        by_hash: dict[str, list[str]] = defaultdict(list)
        for path in same_size:
            by_hash[hashlib.sha1(Path(path).read_bytes()).hexdigest()].append(path)
        duplicates.extend(group for group in by_hash.values() if len(group) > 1)
    return duplicates


def merge_duplicate_groups(samples: list[Sample]) -> list[Sample]:
    """Samples where every patient group linked by a byte-identical file becomes one group.

    The merged group is named after its alphabetically first patient id.
    """
    parent: dict[str, str] = {}

    def root_of(group: str) -> str:
        while parent.get(group, group) != group:
            group = parent[group]
        return group

    patient_of = {s.path: s.patient for s in samples}
    for copies in find_duplicate_files(patient_of):
        roots = sorted({root_of(patient_of[path]) for path in copies})
        for other in roots[1:]:
            parent[other] = roots[0]
    if not parent:
        return samples
    return [Sample(s.path, s.label, root_of(s.patient)) for s in samples]


# --------------------------------------------------------------------------- splits and weights


def _labels_and_groups(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s.label for s in samples]), np.array([s.patient for s in samples])


def _stratified_group_folds(samples: Sequence[Sample], k: int, seed: int) -> list[np.ndarray]:
    """Validation indices of k folds, stratified by label and grouped by patient."""
    labels, groups = _labels_and_groups(samples)
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: serving never splits data

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [val for _, val in splitter.split(np.zeros(len(samples)), labels, groups)]


def split_by_ratio(samples: Sequence[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(train, val) with about `val_fraction` of the samples in val, stratified and patient-grouped.

    val_fraction is written as a fraction n/k with k <= 20 (0.2 = 1/5, 0.3 = 3/10, 0.15 = 3/20); the
    samples are dealt into k stratified, patient-grouped folds and n of them form the validation side.
    The fewest folds that express the fraction keep this fast on large sets.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    n_patients = len({s.patient for s in samples})
    if n_patients < 2:
        raise ValueError("a split needs samples from at least two patients")
    largest_class = max(Counter(s.label for s in samples).values())
    max_folds = min(20, n_patients, largest_class)  # StratifiedGroupKFold's limits
    fraction = Fraction(val_fraction).limit_denominator(max_folds)
    if not 0 < fraction < 1:  # too close to 0 or 1 for max_folds: take the nearest reachable fraction
        fraction = Fraction(1 if fraction == 0 else max_folds - 1, max_folds)
    folds = _stratified_group_folds(samples, fraction.denominator, seed)
    n_val_folds = fraction.numerator
    val_indices = set(np.concatenate(folds[:n_val_folds]).tolist())
    train = [s for i, s in enumerate(samples) if i not in val_indices]
    val = [s for i, s in enumerate(samples) if i in val_indices]
    return train, val


def kfold_splits(samples: Sequence[Sample], k: int, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """k (train, val) pairs, stratified and patient-grouped; every sample is in exactly one val fold."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    splits = []
    for val_indices in _stratified_group_folds(samples, k, seed):
        in_val = set(val_indices.tolist())
        splits.append(
            ([s for i, s in enumerate(samples) if i not in in_val], [s for i, s in enumerate(samples) if i in in_val])
        )
    return splits


def class_weights(samples: Sequence[Sample], n_classes: int) -> np.ndarray:
    """"Balanced" loss weights n / (n_classes * count_c) from the samples given (pass the training split).

    For two classes with P positives and N negatives this is w+ = (P+N)/(2P), w- = (P+N)/(2N): the
    same ratio w+/w- = N/P as study 000's w+ = N/(P+N), w- = P/(P+N), up to a common scale factor,
    which the loss optimum does not depend on. A class with no samples gets weight 0.
    """
    counts = np.bincount([s.label for s in samples], minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = counts.sum() / (n_classes * counts[present])
    return weights


def _by_label(samples: Sequence[Sample]) -> dict[int, list[Sample]]:
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_label[sample.label].append(sample)
    return by_label


def grow_minority(samples: Sequence[Sample], percent: float, seed: int = 0) -> list[Sample]:
    """`samples` plus round(count * percent / 100) repeated samples of every class smaller than the largest.

    The copies are only references to the same files; they become new images because the training
    transform is random (study 001 grows minority classes by +10/20/30% this way).
    """
    if percent <= 0:
        return list(samples)
    rng = np.random.default_rng(seed)
    by_label = _by_label(samples)
    largest = max(len(group) for group in by_label.values())
    grown = list(samples)
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) == largest:
            continue
        extra = round(len(group) * percent / 100)
        picks = rng.choice(len(group), size=extra, replace=extra > len(group))
        grown.extend(group[i] for i in picks)
    return grown


def subsample(samples: Sequence[Sample], per_class: int, seed: int = 0) -> list[Sample]:
    """At most `per_class` random samples of each class, in their original order (for smoke runs)."""
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    indices_by_label: dict[int, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        indices_by_label[sample.label].append(i)
    for label in sorted(indices_by_label):
        indices = indices_by_label[label]
        keep.update(rng.choice(indices, size=min(per_class, len(indices)), replace=False).tolist())
    return [s for i, s in enumerate(samples) if i in keep]


# --------------------------------------------------------------------------- decoding and the cache


_EXIF_ORIENTATION = 0x0112


def _needs_full_reader(image: Image.Image) -> bool:
    """Images the fast path would read differently from io.read_xray (and so from prediction):
    high bit depth (convert("L") would clip), alpha or palette modes, EXIF-rotated photos."""
    return image.mode not in {"L", "RGB"} or image.getexif().get(_EXIF_ORIENTATION, 1) not in (None, 1)


def decode_to_uint8(path: str, size: int) -> np.ndarray:
    """One file as a uint8 greyscale size x size array.

    Plain 8-bit grey or RGB files (nearly every training image) take a fast Pillow path: JPEGs are
    decoded at reduced scale (draft mode), several times faster than a full decode. Everything else
    (DICOM, 16-bit, alpha, EXIF rotation) goes through io.read_xray, exactly as at prediction time.
    Images are stretched to size x size without keeping the aspect ratio: the Kermany set ships
    already stretched that way.
    """
    if Path(path).suffix.lower() in {".dcm", ".dicom"}:
        return _decode_with_reader(path, size)
    with Image.open(path) as image:
        if _needs_full_reader(image):
            return _decode_with_reader(path, size)
        if image.format == "JPEG":
            image.draft("L", (size, size))
        return resize_uint8(np.asarray(image.convert("L"), dtype=np.uint8), size)


def _equalize(grey: np.ndarray) -> np.ndarray:
    """Global histogram equalisation (Pillow's): films from other collections or machines differ mostly
    in exposure and contrast; equalised, their grey levels use the same range as the training films."""
    return np.asarray(ImageOps.equalize(Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8))))


INTENSITY_NORMALISATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda grey: grey,
    "equalize": _equalize,
}


def crop_margin(grey: np.ndarray, fraction: float = 0.0) -> np.ndarray:
    """The central part of a grey image, ``fraction`` of each side cut away, resized back to the same size.

    Film corners carry text, timestamps and markers that differ between machines and collections; a
    network that can see them may learn them instead of the lungs (seen on the bundled data's new-patient
    sample: confidently wrong normals with timestamps in the corners)."""
    if fraction <= 0:
        return grey
    height, width = grey.shape[:2]
    top, left = int(round(height * fraction)), int(round(width * fraction))
    inner = np.ascontiguousarray(grey[top:height - top, left:width - left])
    return np.asarray(Image.fromarray(inner).resize((width, height), Image.Resampling.BILINEAR))


def prepare_grey(grey: np.ndarray, intensity: str = "none", margin: float = 0.0) -> np.ndarray:
    """A run's preprocessing of a uint8 grey image at its load size, the same at training and prediction."""
    return normalise_intensity(crop_margin(grey, margin), intensity)


def normalise_intensity(grey: np.ndarray, method: str = "none") -> np.ndarray:
    """uint8 grey image → the same after the run's intensity normalisation (training and prediction alike)."""
    try:
        return INTENSITY_NORMALISATIONS[method](grey)
    except KeyError:
        raise ValueError(f"unknown intensity normalisation {method!r}; known: {', '.join(INTENSITY_NORMALISATIONS)}") from None


def _decode_with_reader(path: str, size: int) -> np.ndarray:
    from xraycore.io import read_xray, to_uint8  # lazy: only the unusual files need it

    return resize_uint8(to_uint8(read_xray(path).pixels), size)


def resize_uint8(grey: np.ndarray, size: int) -> np.ndarray:
    """A uint8 greyscale image stretched to size x size (aspect ratio not kept, as in the Kermany set).

    Shared with the predictor so training and prediction resize identically.
    """
    if grey.shape == (size, size):
        return grey
    return np.asarray(Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


# IJG's base luminance quantisation table (JPEG standard, Annex K), row by row as Pillow reports it.
_IJG_LUMINANCE = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
                           14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
                           18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def _ijg_table(quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((_IJG_LUMINANCE * scale + 50) // 100, 1, 255)


def stored_jpeg_quality(paths: Sequence[str], size: int, sample: int = 20) -> int | None:
    """The JPEG quality training images were saved at, when they are JPEGs already at the network's
    load size (as Kaggle's 224 px Kermany copies are, at quality 75); None otherwise.

    Such images carry the low-pass look of their compression, and a model learns it: a sharp
    full-resolution scan resized for prediction looks out of domain to it. The predictor re-encodes
    its input at this quality to close that gap (see :func:`match_stored_encoding`).
    """
    qualities = []
    for path in list(paths)[:: max(1, len(paths) // sample)][:sample]:
        try:
            with Image.open(path) as image:
                if image.format != "JPEG" or image.size != (size, size) or 0 not in image.quantization:
                    return None
                table = np.array(list(image.quantization[0]))
        except OSError:
            continue
        qualities.append(min(range(1, 101), key=lambda q: int(np.abs(_ijg_table(q) - table).sum())))
    if not qualities or len(set(qualities)) > 1:
        return None
    return qualities[0]


def match_stored_encoding(grey: np.ndarray, jpeg_quality: int | None) -> np.ndarray:
    """A uint8 image passed through the JPEG encoding the training images were stored with (or unchanged)."""
    if not jpeg_quality:
        return grey
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=int(jpeg_quality))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def fit_within(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """A grey image shrunk (aspect kept) so its longer side is at most ``max_side``; unchanged if it fits."""
    height, width = pixels.shape[:2]
    if max(height, width) <= max_side:
        return pixels
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(np.asarray(pixels, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR))


def network_input(grey: np.ndarray, size: int | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """uint8 grey (H, W) -> float32 (3, size, size), the numbers ``tensors.to_network_input`` gives training's
    validation images (same resize, same float32 operations), without torch: both inference backends use it."""
    grey = np.asarray(grey, dtype=np.uint8).reshape(np.shape(grey)[-2:])
    if size and grey.shape != (size, size):
        grey = resize_like_torch(grey, size)
    scaled = grey.astype(np.float32) / np.float32(255.0)
    mean_array = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    std_array = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return (scaled[None] - mean_array) / std_array


def resize_like_torch(grey: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W) -> (size, size) exactly as torchvision's antialiased bilinear resize of a uint8 tensor
    (integer weights at PyTorch's precision, width first): Pillow's differs by a grey level here and there."""
    if grey.shape[1] != size:
        grey = _resize_rows(grey, size)
    if grey.shape[0] != size:
        grey = _resize_rows(grey.T, size).T
    return np.ascontiguousarray(grey)


def _resize_rows(grey: np.ndarray, size: int) -> np.ndarray:
    weights, precision = _antialias_weights(grey.shape[1], size)
    # float64 products of integers stay exact here (< 2**53): BLAS speed, integer results
    summed = (grey.astype(np.float64) @ weights.T).astype(np.int64) + (1 << (precision - 1))
    return np.clip(summed >> precision, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _antialias_weights(n_in: int, n_out: int) -> tuple[np.ndarray, int]:
    """PyTorch's uint8 antialiased bilinear weights (UpSampleKernel.cpp) as an (n_out, n_in) integer matrix."""
    scale = n_in / n_out
    support, invscale = (scale, 1.0 / scale) if scale >= 1.0 else (1.0, 1.0)
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = scale * (i + 0.5)
        start = max(int(centre - support + 0.5), 0)
        count = min(int(centre + support + 0.5), n_in) - start
        row = np.clip(1.0 - np.abs((np.arange(count) + start - centre + 0.5) * invscale), 0.0, None)
        matrix[i, start:start + count] = row / row.sum() if row.sum() else row
    precision = 0
    while precision < 22 and int(0.5 + matrix.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = matrix * (1 << precision)
    return np.where(scaled < 0, scaled - 0.5, scaled + 0.5).astype(np.int16).astype(np.float64), precision


def _try_decode(path: str, size: int) -> np.ndarray | str:
    """The decoded image, or a one-line reason it could not be read."""
    try:
        return decode_to_uint8(path, size)
    except Exception as error:  # any unreadable file is skipped and reported, never fatal
        return f"{type(error).__name__}: {error}".splitlines()[0][:200]


class ImageCache:
    """Every sample decoded once to uint8 greyscale size x size, held in one (N, size, size) array.

    With `cache_dir`, the array is saved as .npy (plus a .json listing what was skipped), keyed by a
    hash of the paths, file sizes, modification times, the size and the decoder version, so later
    runs and every epoch skip JPEG decoding entirely; a saved cache is memory-mapped, which lets
    DataLoader worker processes share it. Unreadable files are skipped and listed in `skipped`.
    Pass each file once; repeat rows (e.g. grow_minority) through `indices_of`.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        size: int,
        cache_dir: str | Path | None = None,
        workers: int = 0,
        progress: Callable[[int, int], None] | None = None,
        intensity: str = "none",
        margin: float = 0.0,
    ) -> None:
        self.size = size
        self.intensity, self.margin = intensity, margin
        samples = list(samples)
        cache_files = self._cache_files(samples, size, cache_dir, f"{intensity}|{margin}") if cache_dir else None
        if cache_files and all(f.exists() for f in cache_files):
            self.images, kept, self.skipped = self._load(*cache_files)
            if progress:
                progress(len(samples), len(samples))
        else:
            self.images, kept, self.skipped = self._decode_all(samples, size, workers, progress, intensity, margin)
            if cache_files:
                self._save(cache_files, kept)
        self.samples = [samples[i] for i in kept]
        self._row_of_path = {s.path: row for row, s in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def indices_of(self, samples: Iterable[Sample]) -> list[int]:
        """Cache rows of `samples` (repeats allowed); samples that were unreadable are left out."""
        return [self._row_of_path[s.path] for s in samples if s.path in self._row_of_path]

    @staticmethod
    def _decode_all(samples, size, workers, progress, intensity="none", margin=0.0
                    ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
        images = np.zeros((len(samples), size, size), dtype=np.uint8)
        kept, skipped = [], []
        paths = [s.path for s in samples]
        decode = lambda path: _try_decode(path, size)  # noqa: E731
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # Pillow decodes without the GIL
            for i, result in enumerate(pool.map(decode, paths)):
                if isinstance(result, str):
                    skipped.append((paths[i], result))
                else:
                    images[len(kept)] = prepare_grey(result, intensity, margin)
                    kept.append(i)
                if progress:
                    progress(i + 1, len(samples))
        return images[: len(kept)].copy() if skipped else images, kept, skipped

    @staticmethod
    def _cache_files(samples: list[Sample], size: int, cache_dir: str | Path, preparation: str = "none|0.0"
                     ) -> tuple[Path, Path]:
        digest = hashlib.sha256(f"{_DECODER_VERSION}|{size}|{preparation}".encode())
        for sample in samples:
            try:
                stat = os.stat(sample.path)
                signature = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                signature = "missing"
            digest.update(f"|{sample.path}|{signature}".encode())
        stem = Path(cache_dir) / f"images-{size}px-{len(samples)}-{digest.hexdigest()[:20]}"
        return stem.with_suffix(".npy"), stem.with_suffix(".json")

    def _save(self, files: tuple[Path, Path], kept: list[int]) -> None:
        """Write both files atomically (temp file + rename); the .json is written last and marks completion."""
        images_file, index_file = files
        images_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = images_file.with_name(images_file.name + f".{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.save(handle, self.images)
        os.replace(temporary, images_file)
        temporary = index_file.with_name(index_file.name + f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"kept": kept, "skipped": self.skipped}))
        os.replace(temporary, index_file)

    @staticmethod
    def _load(images_file: Path, index_file: Path) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
        index = json.loads(index_file.read_text())
        images = np.load(images_file, mmap_mode="r")
        return images, index["kept"], [tuple(pair) for pair in index["skipped"]]


# --------------------------------------------------------------------------- dataset builders


def _place(source: Path, destination: Path, link: bool) -> None:
    """Symlink (or copy) `source` to `destination`, replacing what a previous build left there."""
    destination.unlink(missing_ok=True)
    if link:
        destination.symlink_to(source.absolute())
    else:
        destination.write_bytes(source.read_bytes())


def _free_name(name: str, taken: set[str]) -> str:
    """`name`, or name~2, name~3 ... before the suffix when a file of that name is already planned."""
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}~{n}{suffix}"
    taken.add(candidate)
    return candidate


def merge_class_folders(sources: dict[str, list[str | Path]], dst_dir: str | Path, link: bool = True) -> dict[str, int]:
    """A folder-per-class dataset at `dst_dir` pooling the images of several folders per class.

    `sources` maps class name -> folders, e.g. {"COVID": [".../COVID"], "NORMAL": [".../NORMAL", ...]}.
    Returns images per class; see place_class_files for naming and rebuilding.
    """
    files = {
        name: [path for folder in folders for path in list_images(Path(folder))] for name, folders in sources.items()
    }
    return place_class_files(files, dst_dir, link)


def build_kermany_3class(src_train_dir: str | Path, dst_dir: str | Path, link: bool = True) -> dict[str, int]:
    """NORMAL / BACTERIAL / VIRAL folders from a Kermany split folder (NORMAL/ and PNEUMONIA/).

    The pneumonia type is read from the file name ("person12_bacteria_34.jpeg", "person5_virus_9.jpeg");
    pneumonia files naming neither are left out. Returns images per class.
    """
    source = Path(src_train_dir)
    pneumonia = list_images(source / "PNEUMONIA")
    files = {
        "NORMAL": list_images(source / "NORMAL"),
        "BACTERIAL": [p for p in pneumonia if "bacteria" in p.name.lower()],
        "VIRAL": [p for p in pneumonia if "virus" in p.name.lower()],
    }
    return place_class_files(files, dst_dir, link)


def place_class_files(files: dict[str, list[Path]], dst_dir: str | Path, link: bool = True) -> dict[str, int]:
    """Symlink (or copy, link=False) each class's files into `dst_dir/<class>/`; returns files per class.

    A clashing file name gets a ~2, ~3 suffix (the patient id at the front of the name survives).
    Rebuilding into the same `dst_dir` replaces the files a previous build made.
    """
    counts = {}
    for class_name, paths in files.items():
        class_dir = Path(dst_dir) / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        for path in paths:
            _place(Path(path), class_dir / _free_name(Path(path).name, taken), link)
        counts[class_name] = len(taken)
    return counts


def __getattr__(name: str) -> Any:
    """The torch side (XrayDataset, augmentations, to_network_input) moved to :mod:`xraycore.tensors`; reached
    through here it is imported on first use, so this module alone never imports torch."""
    if name.startswith("__"):
        raise AttributeError(name)
    from . import tensors

    try:
        return getattr(tensors, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
