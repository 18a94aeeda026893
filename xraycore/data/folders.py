"""Datasets on disk: class folders, the patient each file belongs to, byte-identical duplicates, split folders.

Everything here reads only names and bytes (no decoding, no torch), so the reading room can list images too.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xraycore.common.hashing import sha256_of_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}

# Kermany file names carry the patient: "person123_bacteria_456.jpeg" -> "person123",
# "IM-0115-0001.jpeg" -> "IM-0115", "NORMAL2-IM-0427-0001.jpeg" -> "NORMAL2-IM-0427" (the prefix keeps
# the NORMAL2 series apart from the IM series). Names that match nothing are their own group.
DEFAULT_PATIENT_PATTERN = r"^(person\d+|(?:[A-Za-z0-9]+-)?IM-\d+)(?=[-_.])"


@dataclass(frozen=True)
class Sample:
    """One image file. `patient` groups files that must stay on the same side of a split."""

    path: str
    label: int
    patient: str


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
            by_hash[sha256_of_file(path)].append(path)
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
