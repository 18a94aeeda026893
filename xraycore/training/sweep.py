"""Hyper-parameter sweeps: an Optuna study over the search space a preset declares (its ``[search]`` table), each
trial a normal training run (an MLflow child of the sweep), scored by its internal validation AUROC.

``python -m xraycore sweep --preset NAME --data DIR --trials N`` (and the Train page, as a queued job) call
:func:`run_sweep`. The objective is the kept epoch's validation AUROC (``monitor = val_auroc``), never a
``--watch-data`` sample. ``MedianPruner`` judges every epoch: a trial below the median of earlier trials at that
epoch is stopped cleanly through the trainer's own stop request (the kept epoch is scored, the run ends
``stopped``), then marked pruned in its status (the Compare page and ``runs`` say so) and in MLflow
(``xray.pruned``). The study lives in an Optuna ``JournalStorage`` file (``<runs>/.sweeps/<name>.journal`` unless
``--storage``), safe with parallel workers: a killed sweep continues with the same command, its interrupted trial
is failed and tried again, and the sweep ends with exactly N finished (complete or pruned) trials.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from xraycore.runs import directory as runs
from xraycore.runs.liveness import process_alive, started_at
from xraycore.training import config as train_config
from xraycore.training import presets, stopping, tracking

SWEEPS_DIR = ".sweeps"  # inside the runs root, beside .jobs and .studies
STRENGTH = "augment_strength"  # searched, but no TrainConfig field: scales the preset's augmentations
SMOKE_EPOCHS = 2  # --smoke: two epochs, so the pruner has an epoch to judge before the last
SMOKE_FIXED = ("epochs", "image_size")  # --smoke trains tiny images for SMOKE_EPOCHS whatever the search says
RELATIVE_TO_ONE = ("scale", "gamma")  # augmentation parameters whose "no change" is 1, not 0
Progress = Callable[[dict[str, Any]], None]


class SweepStopped(RuntimeError):
    """A stop was asked for (Stop button, Ctrl-C, SIGTERM) while a trial trained: the sweep ends there."""


@dataclass
class SweepPlan:
    """What one sweep searches, where it trains and where its study is kept."""

    preset: str
    data: str
    trials: int
    name: str
    storage: Path
    out: str
    smoke: bool = False
    timeout: float | None = None
    given: dict[str, Any] = field(default_factory=dict)  # options the user fixed: never searched
    space: dict[str, dict[str, Any]] = field(default_factory=dict)


def default_name(preset: str, smoke: bool = False) -> str:
    return f"sweep-{preset}" + ("-smoke" if smoke else "")


def storage_path(name: str, root: Path | None = None) -> Path:
    return runs.runs_root(root) / SWEEPS_DIR / f"{runs.sanitize_run_id(name)}.journal"


def search_space(preset: str, given: dict[str, Any], smoke: bool) -> dict[str, dict[str, Any]]:
    """The preset's ``[search]`` table, less what the user fixed (and, for --smoke, epochs and image size)."""
    space = dict(presets.load(preset).get("search") or {})
    if not space:
        raise ValueError(f"preset {preset!r} declares no [search] table to sweep over")
    unknown = [name for name in space if name != STRENGTH and name not in train_config.option_names()]
    bad = [name for name, spec in space.items() if not isinstance(spec, dict)
           or not ("choices" in spec or ("low" in spec and "high" in spec))]
    if unknown or bad:
        raise ValueError(f"preset {preset!r}: [search] names unknown options ({', '.join(unknown) or 'none'}) or "
                         f"entries without choices or low/high ({', '.join(bad) or 'none'})")
    fixed = set(given) | (set(SMOKE_FIXED) if smoke else set())
    return {name: spec for name, spec in space.items() if name not in fixed}


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per searched setting: a choice, an integer range, or a (log-)uniform float range."""
    chosen: dict[str, Any] = {}
    for name, spec in space.items():
        log = bool(spec.get("log", False))
        if "choices" in spec:
            chosen[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not isinstance(spec["low"], bool):
            chosen[name] = trial.suggest_int(name, spec["low"], spec["high"], step=int(spec.get("step", 1)), log=log)
        else:
            chosen[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=log)
    return chosen


def scaled_augment(specs: list[Any], strength: float) -> list[Any]:
    """The augmentations scaled by ``strength``: 0 leaves none, 1 is as written; a parameter whose neutral value
    is 1 (zoom scale, gamma) moves from 1, the others from 0."""
    if strength <= 0:
        return []

    def scale(key: str, value: Any) -> Any:
        if isinstance(value, list):
            return [scale(key, item) for item in value]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or key in ("name", "p", "size"):
            return value
        return 1 + (value - 1) * strength if key in RELATIVE_TO_ONE else value * strength
    return [{key: scale(key, value) for key, value in spec.items()} if isinstance(spec, dict) else spec
            for spec in specs]


def trial_config(plan: SweepPlan, chosen: dict[str, Any]) -> train_config.TrainConfig:
    """A trial's training config: the preset, the user's options, then the trial's values."""
    chosen = dict(chosen)
    preset = presets.load(plan.preset)
    values = {"backbone": preset["backbones"][0], **plan.given, **chosen, "preset": plan.preset, "study": plan.name,
              "data": plan.data, "out": plan.out, "monitor": "val_auroc"}
    strength = values.pop(STRENGTH, None)
    if strength is not None:
        values["augment"] = scaled_augment(plan.given.get("augment", preset["config"].get("augment", [])), strength)
    if plan.smoke:
        values["epochs"] = plan.given.get("epochs", SMOKE_EPOCHS)
    return presets.expand(values, smoke=plan.smoke)[0]


class _Judge:
    """The trial's progress callback: passes events on, reports each epoch's validation AUROC to Optuna, and asks
    the trainer to stop when the pruner says so (not after the last epoch: that trial has completed)."""

    def __init__(self, trial: Any, epochs: int, progress: Progress) -> None:
        self.trial, self.epochs, self.progress = trial, epochs, progress
        self.pruned_after: int | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        self.progress(event)
        if event.get("kind") != "epoch" or self.pruned_after is not None:
            return
        self.trial.report(float(event.get("val_auroc") or 0.0), int(event["epoch"]))
        if int(event["epoch"]) < self.epochs and self.trial.should_prune():
            self.pruned_after = int(event["epoch"])
            self.progress({"kind": "message", "text": f"trial {self.trial.number}: below the median after epoch "
                                                      f"{self.pruned_after}: pruned, stopping its run"})
            stopping.request()


def kept_auroc(run: runs.Run) -> float:
    """The kept epoch's validation AUROC (the run monitors val_auroc), else the best epoch's."""
    status = run.status()
    if status.get("best_metric") == "val_auroc" and status.get("best_value") is not None:
        return float(status["best_value"])
    return max(float(row.get("val_auroc") or 0.0) for row in run.metrics())


def mark_pruned(run: runs.Run, epoch: int) -> None:
    """The run says it was pruned: in its status (Compare, ``runs``) and its MLflow run (tag ``xray.pruned``)."""
    run.set_status(run.status().get("state", "stopped"), pruned=True, pruned_after_epoch=epoch,
                   message=f"pruned by the sweep after epoch {epoch} (validation AUROC below the median)")
    run.log(f"pruned by the sweep after epoch {epoch}")
    tracking.update_run(run, tags={"xray.pruned": "true", "xray.pruned_after_epoch": str(epoch)})


def objective(plan: SweepPlan, trial: Any, progress: Progress) -> float:
    """Train one trial's run; its kept validation AUROC, or optuna.TrialPruned."""
    import optuna

    from xraycore.training.loop import train

    config = trial_config(plan, suggest(trial, plan.space))
    run_id = runs.sanitize_run_id(f"{plan.name}-t{trial.number:03d}")
    trial.set_user_attr("run", run_id)
    trial.set_user_attr("pid", os.getpid())  # a later sweep fails (and retries) a trial whose process died
    trial.set_user_attr("pid_started", started_at(os.getpid()))
    progress({"kind": "message", "text": f"trial {trial.number}: {trial.params}"})
    judge = _Judge(trial, config.epochs, progress)
    path = train(config, judge, run_id=run_id)
    run = runs.Run(path) if path.parts else None
    if judge.pruned_after is not None and run is not None:
        mark_pruned(run, judge.pruned_after)
        raise optuna.TrialPruned(f"pruned after epoch {judge.pruned_after}")
    if run is None or run.status().get("state") != "finished":
        raise SweepStopped(f"trial {trial.number} stopped on request; the sweep ends here (run the same command to "
                           "continue it)")
    return kept_auroc(run)


def open_study(plan: SweepPlan, create: bool = True) -> Any:
    """The sweep's Optuna study on its journal file (TPE, seeded; MedianPruner from the second trial on)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan.storage.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(plan.storage)))
    if not create:
        return optuna.load_study(study_name=plan.name, storage=storage)
    return optuna.create_study(study_name=plan.name, storage=storage, direction="maximize", load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=0),
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))


def retry_interrupted(study: Any, root: Path, progress: Progress) -> int:
    """Trials left running by a process that died (a killed sweep): failed, their values queued to train again,
    their runs marked interrupted. How many there were."""
    from optuna.trial import TrialState

    found = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if process_alive(trial.user_attrs.get("pid"), trial.user_attrs.get("pid_started")):
            continue  # another worker's, still training
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
        run = runs.Run(runs.runs_root(root) / trial.user_attrs["run"]) if trial.user_attrs.get("run") else None
        if run is not None and run.status().get("state") == runs.RUNNING:
            run.set_status("interrupted", message="its sweep was killed; the sweep tried these values again")
        found += 1
        progress({"kind": "message", "text": f"trial {trial.number} was interrupted: trying its values again"})
    return found


def finished_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def run_sweep(plan: SweepPlan, progress: Progress) -> Any:
    """Train trials until the sweep holds ``plan.trials`` finished (complete or pruned) ones, or ``timeout`` passes;
    the study. SweepStopped when a stop was asked for."""
    import optuna

    study = open_study(plan)
    study.set_user_attr("preset", plan.preset)
    retry_interrupted(study, Path(plan.out), progress)
    left = plan.trials - len(finished_trials(study))
    if left <= 0:
        progress({"kind": "message", "text": f"{plan.name} already holds {plan.trials} finished trials"})
        return study
    counted = optuna.study.MaxTrialsCallback(plan.trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                   optuna.trial.TrialState.PRUNED))
    study.optimize(lambda trial: objective(plan, trial, progress), n_trials=left, timeout=plan.timeout,
                   callbacks=[counted], catch=(ValueError, OSError), gc_after_trial=True)
    return study


def best_run(study: Any, root: Path | None = None) -> runs.Run | None:
    """The best complete trial's run, when there is one."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return runs.Run(runs.runs_root(root) / study.best_trial.user_attrs["run"])


def bundle_command(plan: SweepPlan, run: runs.Run) -> str:
    """The one command that ships the best trial (its card quotes the sweep's command, kept beside the journal)."""
    command_file = plan.storage.with_suffix(".command.txt")
    command_file.write_text(sweep_command(plan) + "\n", encoding="utf-8")
    return shlex.join(["python", "-m", "xraycore", "bundle", "--model", str(run.path),
                       "--output", f"models/{plan.name}", "--command-file", str(command_file)])


def sweep_command(plan: SweepPlan) -> str:
    words = ["python", "-m", "xraycore", "sweep", "--preset", plan.preset, "--data", plan.data,
             "--trials", str(plan.trials), "--name", plan.name, "--storage", str(plan.storage)]
    words += ["--smoke"] if plan.smoke else []
    for key, value in plan.given.items():
        words += ["--" + key.replace("_", "-"), value if isinstance(value, str) else str(value).lower()
                  if isinstance(value, bool) else str(value)]
    return shlex.join(words)


def load_study(name: str, root: Path | None = None, storage: Path | None = None) -> Any:
    """A sweep's study as it stands (None when no such sweep)."""
    path = storage or storage_path(name, root)
    return open_study(SweepPlan("", "", 0, name, path, ""), create=False) if path.is_file() else None


def trial_rows(name: str, root: Path | None = None, storage: Path | None = None) -> list[dict[str, Any]]:
    """One row per trial of a sweep (number, state, validation AUROC, values tried, run, pruned epoch): the Train
    page's table. [] when no such sweep."""
    study = load_study(name, root, storage)
    if study is None:
        return []
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append({"trial": trial.number, "state": trial.state.name.lower(), "val_auroc": trial.value,
                     **{key: value for key, value in trial.params.items()},
                     "pruned_after_epoch": max(trial.intermediate_values) if trial.state.name == "PRUNED" else None,
                     "run": trial.user_attrs.get("run")})
    return rows


def sweep_names(root: Path | None = None) -> list[str]:
    folder = runs.runs_root(root) / SWEEPS_DIR
    return sorted(path.stem for path in folder.glob("*.journal")) if folder.is_dir() else []
