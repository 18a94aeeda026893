"""Datasets on disk: class folders, patient grouping, splits, class weights, the image cache, augmentations.

The path from folders to tensors:

    scan_class_folders / discover_splits  ->  list[Sample]  (path, label, patient)
    split_by_ratio / kfold_splits         ->  train / val lists, never sharing a patient
    ImageCache                            ->  every image decoded once to uint8 size x size
    XrayDataset + build_augmentation      ->  normalised 3xHxW float tensors for a model

Nothing here knows about models or the UI: a model's input size and mean/std are passed in.
"""
from __future__ import annotations

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
import torch
import torch.utils.data
from PIL import Image, ImageOps
from sklearn.model_selection import StratifiedGroupKFold
from torchvision.transforms import v2

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


def to_network_input(
    grey: np.ndarray | torch.Tensor,
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 grey (H, W) or (1, H, W) -> float (3, size, size): scaled to [0, 1], repeated to 3 channels, normalised.

    Shared by XrayDataset and the predictor, so a model sees the same numbers in both.
    """
    image = torch.from_numpy(np.array(grey)) if isinstance(grey, np.ndarray) else grey  # a copy: cache rows are read-only
    image = image.reshape(1, *image.shape[-2:])
    if size and tuple(image.shape[-2:]) != (size, size):
        image = v2.functional.resize(image, [size, size], antialias=True)
    image = image.float().div_(255.0).expand(3, -1, -1)
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (image - mean_tensor) / std_tensor


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
