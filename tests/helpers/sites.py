"""A labelled site sample for site adaptation tests: class folders of synthetic films, enough per class."""
from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers.synthetic import make_dataset


def site_sample(root: Path, per_class: int = 56, seed: int = 11) -> Path:
    """NORMAL/ and PNEUMONIA/ with ``per_class`` 48 px films each (Kermany-named: patients group them)."""
    return make_dataset(root, per_class=per_class, size=48, seed=seed)


def model_copy(model: Path, target: Path) -> Path:
    shutil.copytree(model, target)
    return target
