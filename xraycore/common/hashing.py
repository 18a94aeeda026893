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
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np

CHUNK_BYTES = 1 << 20  # read a megabyte at a time: weights files are hundreds of megabytes


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the bytes of ``path`` (OSError when it cannot be read)."""
    path = Path(path)
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def sha256_of_content(source: str | os.PathLike[str] | bytes | bytearray | BinaryIO) -> str:
    """Hex sha256 of a film's bytes, whether a path, bytes or an (uploaded) file object; a file object is read
    from its start and left where it was."""
    if isinstance(source, (str, os.PathLike)):
        return sha256_of_file(source)
    if isinstance(source, (bytes, bytearray)):
        return _sha256_of_stream(io.BytesIO(source))
    position = source.tell()
    source.seek(0)
    try:
        return _sha256_of_stream(source)
    finally:
        source.seek(position)


@functools.lru_cache(maxsize=256)
def _sha256_of(real_path: str, size: int, mtime_ns: int, inode: int) -> str:
    with open(real_path, "rb") as handle:
        return _sha256_of_stream(handle)


def _sha256_of_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_of_pixels(pixels: "np.ndarray") -> str:
    """Hex sha256 of a film's grey uint8 pixels at the network's input size, with their shape.

    The film's key in the store (a read, a scored film): the same picture gives the same key whatever file,
    format or header carried it, and the key reveals neither a file name nor a patient.
    """
    import numpy as np

    array = np.ascontiguousarray(pixels, dtype=np.uint8)
    digest = hashlib.sha256(f"{array.shape[0]}x{array.shape[1]}:".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()
