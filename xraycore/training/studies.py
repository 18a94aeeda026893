"""Studies: several runs planned together (the backbones of a preset, the folds of a cross-validation),
trained one after the other, and continued by name after a stop or a crash.

:func:`launch` writes a study's plan (``<runs root>/.studies/<study>.json``: the config of every planned run)
before training, so :func:`resume_study` knows what is left: finished runs are kept, stopped ones continue,
the rest start. Comparing the runs of a study is :mod:`xraycore.evaluation.comparison`'s job.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from xraycore.training import distributed
from xraycore.runs import directory as runs
from xraycore.common.files import atomic_write_json
from xraycore.training import stopping
from xraycore.training.config import TrainConfig, from_record

PLANS_DIR = ".studies"  # inside the runs root, beside .jobs: what a study set out to train, so it can be continued


def planned_runs(configs: list[TrainConfig]) -> list[TrainConfig]:
    """One config per run to train: a k-fold config (no fold chosen) becomes one per fold."""
    return [config.replace(fold=fold) if config.folds and config.fold is None else config
            for config in configs
            for fold in (range(config.folds) if config.folds and config.fold is None else [config.fold])]


def _describe(config: TrainConfig) -> str:
    return config.backbone if config.fold is None or not config.folds else f"{config.backbone} fold {config.fold + 1} of {config.folds}"


def plan_path(study: str, root: Path | None = None) -> Path:
    return runs.runs_root(root) / PLANS_DIR / f"{runs.sanitize_run_id(study)}.json"


def load_plan(study: str, root: Path | None = None) -> list[TrainConfig] | None:
    """The configs a study was launched with, or None when no study of that name was launched here."""
    try:
        path = plan_path(study, root)
    except ValueError:  # not a plain name (a path, say): no study of ours
        return None
    if not path.is_file():
        return None
    return [from_record(values) for values in json.loads(path.read_text(encoding="utf-8"))["runs"]]


def names_a_study(ref: str, root: Path | None = None) -> bool:
    """Whether ``train --resume REF`` means a study launched here (a run of that name wins)."""
    return load_plan(ref, root) is not None and not runs.is_run_dir(ref, root)


def launch(configs: list[TrainConfig], progress: Callable[[dict], None], run_id: str | None = None) -> list[Path]:
    """Train every planned run in turn (see :func:`_train_in_turn`). A study's plan is written first,
    so ``train --resume STUDY`` can finish it after a stop or a crash."""
    planned = planned_runs(configs)
    study = planned[0].study if planned else None
    if study and distributed.is_main_process():
        root = Path(planned[0].out) if planned[0].out else None
        path = plan_path(study, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"study": study, "runs": [c.to_dict() for c in planned]})  # grouped
    return _train_in_turn(planned, progress, run_id=run_id if len(planned) == 1 else None)


def resume_study(study: str, progress: Callable[[dict], None], root: Path | None = None) -> list[Path]:
    """Finish a study: finished runs are kept, runs with a completed epoch continue, the rest start."""
    planned = load_plan(study, root)
    if planned is None:
        raise ValueError(f"no study named {study!r} was launched in {runs.runs_root(root)}")
    return _train_in_turn(planned, progress, existing=_runs_by_plan_key(study, root))


def unfinished(study: str, root: Path | None = None) -> bool:
    """A launched study with a planned run not finished yet, and none of its runs running now."""
    planned = load_plan(study, root)
    if planned is None:
        return False
    states = {key: run.status().get("state") for key, run in _runs_by_plan_key(study, root).items()}
    if runs.RUNNING in states.values():
        return False
    return any(states.get(_plan_key(config.to_flat_dict())) != "finished" for config in planned)


def _plan_key(train_config: dict) -> tuple[str, int | None]:
    return train_config.get("backbone"), train_config.get("fold")


def _runs_by_plan_key(study: str, root: Path | None) -> dict[tuple[str, int | None], runs.Run]:
    """For each (backbone, fold) of a study, the run worth continuing: finished, else resumable, else newest."""
    def preference(run: runs.Run) -> int:
        state = run.status().get("state")
        return 2 if state == "finished" else 1 if (run.path / runs.CHECKPOINT_FILE).exists() else 0

    chosen: dict[tuple[str, int | None], runs.Run] = {}
    for run in runs.list_runs(root):  # newest first: ties keep the newest
        if run.config.get("study") != study:
            continue
        key = _plan_key(run.config.get("train", {}))
        if key not in chosen or preference(run) > preference(chosen[key]):
            chosen[key] = run
    return chosen


def _train_in_turn(planned: list[TrainConfig], progress: Callable[[dict], None], run_id: str | None = None,
                   existing: dict[tuple[str, int | None], runs.Run] | None = None) -> list[Path]:
    """One run after the other. A stop asked for in any phase (Stop button or STOP file, Ctrl-C, SIGTERM; while
    loading, training, validating, scoring or between runs, see :mod:`stopping`) stops the whole study after
    the current run: the user asked to stop, not to skip to the next backbone."""
    from xraycore.training.loop import resume, train

    existing = existing or {}
    paths: list[Path] = []
    with stopping.listening():
        for position, config in enumerate(planned):
            if stopping.requested():
                _say_not_started(planned[position:], progress)
                break
            before = existing.get(_plan_key(config.to_flat_dict()))
            state = before.status().get("state") if before else None
            if before is not None and state == "finished":
                progress({"kind": "message", "text": f"{_describe(config)}: finished earlier ({before.id}), kept"})
                paths.append(before.path)
                continue
            if before is not None and state == runs.RUNNING:
                raise RuntimeError(f"{before.id} is still running; stop it before continuing its study")
            if before is not None and (before.path / runs.CHECKPOINT_FILE).exists():
                progress({"kind": "message", "text": f"continuing {_describe(config)} ({before.id})"})
                path = resume(before.path, progress)
            else:
                progress({"kind": "message", "text": f"training {_describe(config)}"})
                path = train(config, progress, run_id=run_id)
            if path.parts:  # Path(): stopped before this run began, or another rank than the first
                paths.append(path)
            if stopping.requested() or (path.is_dir() and runs.Run(path).status().get("state") == "stopped"):
                stopping.request()
                _say_not_started(planned[position + 1:], progress)
                break
    return paths


def _say_not_started(left: list[TrainConfig], progress: Callable[[dict], None]) -> None:
    if left:
        progress({"kind": "message", "text": "stopped on request; not started: " + ", ".join(map(_describe, left))})
