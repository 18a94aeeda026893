"""The one error a damaged model directory raises, and reading its JSON files with it.

A model directory (``models/<name>/``, or a finished run) is read by several rooms: io reads its
intended-use facts, inference its config, weights, graph and self-check reference. io may not import
inference (inference imports io), so the error they share lives here, in the leaf room both may import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xraycore.common.files import plain_name, read_json_file


class ModelDirectoryError(ValueError):
    """A model directory that cannot be loaded: one plain sentence naming the file and the remedy.

    A ValueError, so the CLI's ``error: ...`` (exit 2) and the app's message show it instead of a traceback.
    """

    REMEDY = ("Copy the model directory again from its source (a run of your own: train it again), "
              "or choose another model.")

    def __init__(self, path: Path, problem: str, remedy: str = REMEDY) -> None:
        path = Path(path)
        super().__init__(f"The model in {path.parent} cannot be loaded: {path.name} {problem}. {remedy}")
        self.path = path


def read_model_json(model_dir: str | Path, name: str, default: Any = None) -> Any:
    """A JSON file of a model directory (``default`` when absent); a damaged one is a ModelDirectoryError."""
    path = Path(model_dir) / plain_name(name, "file name")
    try:
        return read_json_file(path, default)
    except ValueError:
        raise ModelDirectoryError(path, "is damaged: it is not valid JSON") from None
