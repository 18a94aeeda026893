"""The one sha256 of a file's bytes.

Weights are hashed by the audit trail, provenance, the ONNX export and its stale-graph check, the
wheel-weights check and outlier exposure's cache key; images by external evaluations and the finder of
byte-identical training files (data.folders). They all call
:func:`sha256_of_file`, so a digest written by one is the digest another compares with. Digests are
remembered per (real path, size, modification time, inode): scoring a thousand films does not re-hash the
weights each time, and a file replaced in place (``os.replace`` gives a new inode) is hashed again.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

CHUNK_BYTES = 1 << 20  # read a megabyte at a time: weights files are hundreds of megabytes


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the bytes of ``path`` (OSError when it cannot be read)."""
    path = Path(path)
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=256)
def _sha256_of(real_path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(real_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
