"""Training runs launched from the app as background processes that outlive the page.

A job is ``python -m xraycore train ...`` (or the same through torchrun on several GPUs) started in
its own session, its output going to ``<runs root>/.jobs/<id>.log`` and a small record beside it
(``<id>.json``: pid, command, run id, study). The page can be reloaded or closed; the job goes on,
and any later session finds it again through :func:`list_jobs`. Progress is read from the run
directory itself (status, metrics), exactly as for a run started from a terminal.

Nothing here imports Streamlit; everything a user typed is validated before it reaches a command.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from . import runs
from .config import TrainConfig, option_names

JOBS_DIR = ".jobs"  # inside the runs root; list_runs skips dot-directories
PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # so `-m xraycore` imports this very package


# --------------------------------------------------------------------------- validation


def _typed_path(text: str, what: str) -> Path:
    """The path a user typed (trimmed, ``~`` expanded); ValueError asking for it when blank."""
    if not text or not str(text).strip():
        raise ValueError(f"Please enter the {what}.")
    return Path(str(text).strip()).expanduser()


def validate_directory(text: str, what: str = "data folder") -> Path:
    """The folder a user typed, if it exists and is a directory; a plain ValueError otherwise."""
    path = _typed_path(text, what)
    if not path.exists():
        raise ValueError(f"The {what} {str(path)!r} does not exist.")
    if not path.is_dir():
        raise ValueError(f"The {what} {str(path)!r} is not a folder.")
    return path.resolve()


def validate_file(text: str, what: str = "weights file") -> Path:
    """The file a user typed, if it exists and is a regular file; a plain ValueError otherwise."""
    path = _typed_path(text, what)
    if not path.is_file():
        raise ValueError(f"The {what} {str(path)!r} does not exist or is not a file.")
    return path.resolve()


def augment_name(spec: str | dict) -> str:
    """The name of an augmentation spec: ``"hflip"`` or ``{"name": "rotate", "degrees": 6}``."""
    return spec["name"] if isinstance(spec, dict) else spec


def augment_specs(selected: Sequence[str], preset_specs: Sequence[Any] = ()) -> list[Any]:
    """Augmentation names from a multiselect → specs, keeping a preset's parameters for names it has.

    The form can only show names; a preset's ``{"name": "rotate", "degrees": 6}`` must not shrink to
    plain ``"rotate"`` just because the user left that choice alone.
    """
    by_name = {augment_name(spec): spec for spec in preset_specs}
    return [by_name.get(name, name) for name in selected]


# --------------------------------------------------------------------------- commands


def train_arguments(options: dict[str, Any]) -> list[str]:
    """TrainConfig fields → ``train`` command-line options; None values are left out.

    Unknown keys are refused, so a typo in the form code cannot silently drop a setting.
    """
    unknown = sorted(set(options) - set(option_names()))
    if unknown:
        raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
    arguments: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value) if name == "augment" else ",".join(map(str, value))
        else:
            text = str(value)
        arguments += [flag, text]
    return arguments


def build_command(options: dict[str, Any], run_id: str, processes: int = 1,
                  python: str = sys.executable) -> list[str]:
    """The argv of a training job: one process, or ``processes`` ranks through torchrun.

    torchrun is started as ``python -m torch.distributed.run`` (the module behind the ``torchrun``
    script), so the job always uses the app's own interpreter and packages.
    """
    if processes < 1:
        raise ValueError("the number of processes must be at least 1")
    train_verb = ["-m", "xraycore", "train", *train_arguments(options),
                  "--run-id", runs.sanitize_run_id(run_id), "--quiet"]
    if processes == 1:
        return [python, *train_verb]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *train_verb]


def job_environment(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The job's environment: OpenMP must not busy-wait, and it gets a fixed thread count so the
    app stays responsive on a small machine."""
    env = dict(os.environ if base is None else base)
    env.update({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "PYTHONUNBUFFERED": "1"})
    return env


def default_threads() -> int:
    """Leave one core to the app (and everything else) when there is more than one."""
    return max(1, (os.cpu_count() or 2) - 1)


def available_gpus() -> int:
    """CUDA devices this machine offers: the most training processes torchrun should start."""
    return torch.cuda.device_count()


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One launched training process and where to find its output."""

    id: str
    pid: int
    command: list[str]
    root: str
    started: str
    study: str | None = None

    @property
    def log_path(self) -> Path:
        return Path(self.root) / JOBS_DIR / f"{self.id}.log"

    def alive(self) -> bool:
        return process_alive(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the job's output (where a crash before the run directory exists shows up)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def runs(self) -> list[runs.Run]:
        """The run directories this job has made so far (one, or one per backbone/fold of a study)."""
        return [run for run in runs.list_runs(Path(self.root))
                if run.id == self.id or (self.study and run.config.get("study") == self.study)]

    def state(self) -> str:
        """'running' while the process lives; afterwards the state its run recorded ('failed' if none)."""
        if self.alive():
            return runs.RUNNING
        states = [run.status().get("state") for run in self.runs()]
        if not states:
            return "failed"
        return next((state for state in states if state != "finished"), "finished")


def launch(options: dict[str, Any], run_id: str | None = None, *, processes: int = 1,
           threads: int | None = None, root: Path | None = None) -> Job:
    """Start a training job in the background and return at once.

    ``options`` are TrainConfig fields (validated here by building the config). A multi-run launch
    (several backbones of a preset, or k folds) is grouped under a study named after the job, so
    its runs can be found and compared.
    """
    root = runs.runs_root(root).resolve()
    backbone = str(options.get("backbone") or options.get("preset") or "run")
    run_id = runs.sanitize_run_id(run_id) if run_id else runs.new_run_id(backbone)
    if (root / run_id).exists():
        raise ValueError(f"A run named {run_id!r} already exists in {root}.")
    several = bool(options.get("folds")) or (options.get("preset") and not options.get("backbone"))
    options = {**options, "out": str(root)}
    if several:
        options.setdefault("study", run_id)
    TrainConfig.from_dict(options)  # refuse impossible settings now, not in a log nobody reads
    return _start(build_command(options, run_id, processes), run_id, root, threads, options.get("study"))


def resumable(root: Path | None = None) -> list[str]:
    """What the Train page offers to continue: launched studies with runs left to finish (by name),
    then stopped, killed or failed runs outside a study that completed at least one epoch."""
    from . import presets

    plans = runs.runs_root(root) / presets.PLANS_DIR
    studies = [plan.stem for plan in sorted(plans.glob("*.json"))] if plans.is_dir() else []
    unfinished = [study for study in studies if presets.unfinished(study, root)]
    lone = [run.id for run in runs.list_runs(root)
            if run.config.get("study") not in studies and run.status().get("state") in ("stopped", "interrupted", "failed")
            and (run.path / runs.CHECKPOINT_FILE).exists()]
    return unfinished + lone


def resume(ref: str, *, threads: int | None = None, root: Path | None = None) -> Job:
    """Continue a run or a study (see :func:`resumable`) in the background, as ``train --resume``."""
    from . import presets

    root = runs.runs_root(root).resolve()
    study = ref if presets.names_a_study(ref, root) else None
    if study is None and not runs.is_run_dir(ref, root):
        raise ValueError(f"nothing named {ref!r} to continue in {root}")
    command = [sys.executable, "-m", "xraycore", "train", "--resume", ref, "--out", str(root), "--quiet"]
    return _start(command, runs.sanitize_run_id(ref), root, threads, study)


def _start(command: list[str], job_id: str, root: Path, threads: int | None, study: str | None) -> Job:
    """Start ``command`` detached, its output appended to the job's log, and record the job."""
    jobs_dir = root / JOBS_DIR
    jobs_dir.mkdir(parents=True, exist_ok=True)
    threads = threads or default_threads()
    with open(jobs_dir / f"{job_id}.log", "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=job_environment(threads), cwd=PACKAGE_PARENT)
    job = Job(id=job_id, pid=process.pid, command=command, root=str(root),
              started=dt.datetime.now().astimezone().isoformat(timespec="seconds"), study=study)
    runs.atomic_write_json(jobs_dir / f"{job_id}.json", asdict(job))
    return job


def list_jobs(root: Path | None = None) -> list[Job]:
    """Every job recorded under the runs root, newest first; unreadable records are skipped."""
    jobs_dir = runs.runs_root(root) / JOBS_DIR
    found = []
    for path in sorted(jobs_dir.glob("*.json")) if jobs_dir.is_dir() else []:
        try:
            found.append(Job(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(found, key=lambda job: job.started, reverse=True)


def current_job(preferred_id: str | None = None, root: Path | None = None) -> Job | None:
    """The job with ``preferred_id`` (a session's last launch), else the newest one still running,
    so a reloaded page finds the training it started."""
    known = list_jobs(root)
    return (next((job for job in known if job.id == preferred_id), None)
            or next((job for job in known if job.alive()), None))


def stop(run: runs.Run) -> None:
    """Ask a running run to stop after its current batch (it saves and ends as 'stopped')."""
    (run.path / runs.STOP_FILE).touch()


def stop_job(job: Job) -> None:
    """Stop a job: every run it is training gets the STOP file; a job still loading its data (no
    run directory yet) is sent SIGTERM, which the trainer also treats as a clean stop."""
    running = [run for run in job.runs() if run.status().get("state") == runs.RUNNING]
    for run in running:
        stop(run)
    if not running and job.alive():
        os.killpg(job.pid, signal.SIGTERM)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs. A finished child of this process is reaped first, so it does not
    linger as a zombie that still answers signal 0."""
    try:
        finished, _status = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:  # not our child (started by an earlier server): just probe it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
