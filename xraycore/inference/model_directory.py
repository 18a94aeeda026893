"""Model directories as the Predictor opens them: checked once (every JSON file parses), and resolved into the
networks they hold (one, or the members an ensemble.json lists, each with its own temperature).

Apart from the Predictor so that what a model directory is (its files, its ensemble layout) has one owner
that provenance and the model card read too, without loading any network. No torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xraycore.clinical import operating_points as operating
from xraycore.io import intended_use
from xraycore.runs import directory as runs
from xraycore.common.files import plain_name
from xraycore.common.model_directory import ModelDirectoryError

ENSEMBLE_FILE = "ensemble.json"  # a model directory whose members are model directories
ENSEMBLE_MEMBERS_DIR = "members"
MODEL_JSON_FILES = (runs.CONFIG_FILE, runs.OPERATING_POINT_FILE, operating.POINTS_FILE, ENSEMBLE_FILE,
                    intended_use.INTENDED_USE_FILE)
NETWORK_CONFIG_KEYS = ("backbone", "class_names", "image_size", "mean", "std")


def open_model(path: str | Path) -> runs.Run:
    """A model directory whose JSON files all parse; ModelDirectoryError naming the first that does not.

    Checked once here, so the many later reads of config.json and the operating point cannot fail halfway.
    """
    run = runs.Run(Path(path))
    if not run.file(runs.CONFIG_FILE).is_file():
        raise ModelDirectoryError(run.file(runs.CONFIG_FILE), "is missing (is this a model directory?)")
    for name in MODEL_JSON_FILES:
        try:
            content = run.read_json(name, {})
        except ValueError:  # UnicodeDecodeError is a ValueError too: binary junk
            raise ModelDirectoryError(run.file(name), "is damaged: it is not valid JSON") from None
        except OSError:
            raise ModelDirectoryError(run.file(name), "cannot be read (is it a file you may read?)") from None
        if not isinstance(content, dict):
            raise ModelDirectoryError(run.file(name), "is damaged: it is not a JSON object")
    return run


def network_config(run: runs.Run) -> dict[str, Any]:
    """config.json of one network, with the keys building it needs (ModelDirectoryError naming the missing)."""
    config = run.config
    missing = [key for key in NETWORK_CONFIG_KEYS if key not in config]
    if missing:
        raise ModelDirectoryError(run.file(runs.CONFIG_FILE), f"lacks {', '.join(missing)}")
    return config


def network_runs(run: runs.Run) -> list[tuple[runs.Run, float]]:
    """The networks of a model directory with the temperature each is divided by: itself (1), or the members an
    ensemble.json lists (each by its own internal temperature, so the ensemble averages calibrated logits)."""
    spec = run.read_json(ENSEMBLE_FILE, None)
    if spec is None:
        return [(run, 1.0)]
    if not isinstance(spec, dict) or not isinstance(spec.get("members"), list):
        raise ModelDirectoryError(run.path / ENSEMBLE_FILE, "does not list the ensemble's members")
    members = []
    for name in spec["members"]:  # plain names of folders under members/, never paths
        member = open_model(run.path / ENSEMBLE_MEMBERS_DIR / plain_name(name, "ensemble member"))
        members.append((member, float(member.operating_point.get("temperature", 1.0))))
    return members
