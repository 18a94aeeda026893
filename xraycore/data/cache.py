"""The image cache: every training image decoded once to uint8 size x size, optionally kept on disk.

Unreadable files are skipped, never fatal, and counted by reason: the kind of the typed XrayReadError that
:mod:`xraycore.io` raises for a bad file, or "could not be opened" for an OSError. Any other exception is a
bug and propagates.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from xraycore.io.image import XrayReadError
from xraycore.common.files import atomic_stream, atomic_write_text
from xraycore.data import decode
from xraycore.data.folders import Sample

# How a skipped file is counted in a run's record ("skipped_by_reason"), by XrayReadError kind.
SKIP_REASONS = {
    "not_image": "not an image",
    "corrupt": "damaged or truncated",
    "empty": "empty file",
    "unsupported": "unsupported format",
    "too_large": "too large",
    "too_small": "too small",
    "no_pixels": "DICOM without an image",
    "constant": "blank image",
}
UNOPENABLE = "could not be opened"  # OSError: missing, no permission, gone since the folder was listed
UNRECORDED = "unreadable (reason not recorded)"  # caches saved before reasons were counted


def decode_or_reason(path: str, size: int) -> np.ndarray | tuple[str, str]:
    """The decoded image, or (reason, one-line message) when the file cannot be used."""
    try:
        return decode.decode_to_uint8(path, size)
    except XrayReadError as error:
        return SKIP_REASONS.get(error.kind, error.kind), str(error).splitlines()[0][:200]
    except OSError as error:
        return UNOPENABLE, f"{type(error).__name__}: {error}".splitlines()[0][:200]


class ImageCache:
    """Every sample decoded once to uint8 greyscale size x size, held in one (N, size, size) array.

    With `cache_dir`, the array is saved as .npy (plus a .json listing what was skipped), keyed by a
    hash of the paths, file sizes, modification times, the size and the decoder version, so later
    runs and every epoch skip JPEG decoding entirely; a saved cache is memory-mapped, which lets
    DataLoader worker processes share it. Unreadable files are skipped: `skipped` lists (path, message)
    and `skipped_by_reason` counts them. Pass each file once; repeat rows (e.g. grow_minority) through
    `indices_of`.
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
            self.images, kept, self.skipped, self.skipped_by_reason = self._load(*cache_files)
            if progress:
                progress(len(samples), len(samples))
        else:
            self.images, kept, self.skipped, self.skipped_by_reason = self._decode_all(
                samples, size, workers, progress, intensity, margin)
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
    def _decode_all(samples: list[Sample], size: int, workers: int, progress: Callable[[int, int], None] | None,
                    intensity: str, margin: float
                    ) -> tuple[np.ndarray, list[int], list[tuple[str, str]], dict[str, int]]:
        images = np.zeros((len(samples), size, size), dtype=np.uint8)
        kept: list[int] = []
        skipped: list[tuple[str, str]] = []
        reasons: Counter[str] = Counter()
        paths = [s.path for s in samples]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # Pillow decodes without the GIL
            for i, result in enumerate(pool.map(lambda path: decode_or_reason(path, size), paths)):
                if isinstance(result, tuple):
                    reason, message = result
                    skipped.append((paths[i], message))
                    reasons[reason] += 1
                else:
                    images[len(kept)] = decode.prepare_grey(result, intensity, margin)
                    kept.append(i)
                if progress:
                    progress(i + 1, len(samples))
        return images[: len(kept)].copy() if skipped else images, kept, skipped, dict(sorted(reasons.items()))

    @staticmethod
    def _cache_files(samples: list[Sample], size: int, cache_dir: str | Path, preparation: str = "none|0.0"
                     ) -> tuple[Path, Path]:
        digest = hashlib.sha256(f"{decode.DECODER_VERSION}|{size}|{preparation}".encode())
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
        """Write both files atomically; the .json is written last and marks completion.

        The .npy is streamed (atomic_write_text or atomic_write_json would hold a second copy of the array in memory).
        """
        images_file, index_file = files
        images_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_stream(images_file) as stream:
            np.save(stream, self.images)
        index = {"kept": kept, "skipped": self.skipped, "skipped_by_reason": self.skipped_by_reason}
        atomic_write_text(index_file, json.dumps(index))

    @staticmethod
    def _load(images_file: Path, index_file: Path
              ) -> tuple[np.ndarray, list[int], list[tuple[str, str]], dict[str, int]]:
        index = json.loads(index_file.read_text())
        skipped = [(path, message) for path, message in index["skipped"]]
        by_reason = index.get("skipped_by_reason", {UNRECORDED: len(skipped)} if skipped else {})
        return np.load(images_file, mmap_mode="r"), index["kept"], skipped, by_reason
