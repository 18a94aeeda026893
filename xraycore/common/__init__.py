"""Leaf helpers every room may use (imports nothing else of xraycore): files written atomically, safe JSON and
tensor files, the one file hash, the one clock, model-directory errors.

    files            Files written so that a killed process never leaves a lie, and JSON read so that a
                     damaged file is one plain sentence
    hashing          The one sha256 of a file's bytes
    lazy             Lazy re-exports for a room's `__init__`: the public names of its modules, imported on
                     first use
    model_directory  The one error a damaged model directory raises, and reading its JSON files with it
    tensor_files     Weights and arrays on disk: safetensors written atomically, and the one safe loader of
                     weights files
    timestamps       The one clock xraycore writes: ISO-8601 UTC timestamps, and the compact stamp in
                     generated names

The functions and classes named below are importable from this package too; each is imported from its
module on first use, so importing the package is cheap and pulls in no torch.
"""

from __future__ import annotations

from xraycore.common.lazy import lazy_exports

_EXPORTS = {
    "files": ("plain_name", "atomic_stream", "atomic_write_bytes", "atomic_write_text", "to_json",
        "json_line", "atomic_write_json", "read_json_file"),
    "hashing": ("sha256_of_file", "sha256_of_content", "sha256_of_pixels"),
    "lazy": ("lazy_exports",),
    "model_directory": ("ModelDirectoryError", "read_model_json"),
    "tensor_files": ("save_weights", "load_weights", "save_arrays", "load_arrays"),
    "timestamps": ("utc_now", "utc_timestamp", "name_stamp"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
