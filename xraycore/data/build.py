"""Dataset folders built from others: classes pooled from several sources, Kermany split into three classes.

Files are symlinked (or copied) into a new folder-per-class tree that scan_class_folders then reads.
"""
from __future__ import annotations

import os
from pathlib import Path

from xraycore.data.folders import list_images


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
