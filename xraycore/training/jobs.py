"""Training runs launched from the app as background processes that outlive the page.

A job is ``python -m xraycore train --config <runs root>/.jobs/<id>.train-config.json`` (or the same through
torchrun on several GPUs) started in its own session: the settings are written to that file first, exactly as
the run will train them, its output goes to ``.jobs/<id>.log`` and a small record lies beside it (``<id>.json``:
pid and its start time, command, run id, study). The page can be reloaded or closed; the job goes on,
and any later session finds it again through :func:`list_jobs`. Progress is read from the run
directory itself (status, metrics), exactly as for a run started from a terminal.

Jobs queue (:mod:`job_queue`): at most ``$XRAY_MAX_TRAINING_JOBS`` (default 1) train at once, the others
wait in launch order. Launching and continuing need the researcher role, stopping a job needs its owner or an
admin, deleting a run an admin; each is one audit line. Nothing here imports Streamlit; everything a user typed is
validated (and must lie under the allowed roots, see :func:`xraycore.access.policy.inside_roots`) before it
reaches a command; the command itself is built by :mod:`job_command`.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.training import config
from xraycore.training import job_queue as jobqueue
from xraycore.training.job_command import build_command, default_threads, job_environment
from xraycore.training import presets
from xraycore.runs import directory as runs
from xraycore.common.files import atomic_write_json
from xraycore.common.timestamps import utc_timestamp
from xraycore.runs.liveness import process_alive, started_at

JOBS_DIR = ".jobs"  # inside the runs root; list_runs skips dot-directories
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # so `-m xraycore` imports this very package


# --------------------------------------------------------------------------- validation


def validate_directory(text: str, what: str = "data folder", roots: Sequence[Path] | None = None) -> Path:
    """The folder a user typed, if it lies under the allowed roots (real path, symlinks followed) and is
    a directory; AccessDenied (the same plain refusal, whatever lies there) or ValueError otherwise."""
    path = access.inside_roots(text, what, roots)
    if not path.exists():
        raise ValueError(f"The {what} {str(text).strip()!r} does not exist.")
    if not path.is_dir():
        raise ValueError(f"The {what} {str(text).strip()!r} is not a folder.")
    return path


def validate_file(text: str, what: str = "weights file", roots: Sequence[Path] | None = None) -> Path:
    """The file a user typed, if it lies under the allowed roots and is a regular file."""
    path = access.inside_roots(text, what, roots)
    if not path.is_file():
        raise ValueError(f"The {what} {str(text).strip()!r} does not exist or is not a file.")
    return path


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


CONFIG_SUFFIX = ".train-config.json"  # beside the job's record; holds no "id", so jobqueue.records skips it


def config_path(root: Path, job_id: str) -> Path:
    """Where a job's settings are saved for ``train --config``."""
    return root / JOBS_DIR / f"{runs.sanitize_run_id(job_id)}{CONFIG_SUFFIX}"


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One launched training job (its waiter process, see :mod:`job_queue`) and where to find its output."""

    id: str
    pid: int
    command: list[str]
    root: str
    started: str
    study: str | None = None
    owner: str | None = None  # Identity.user of whoever launched it; None: only an admin may stop it
    seq: int = 0  # place in the queue
    ahead: int = 0  # jobs it had to wait for when launched (0: started at once)
    cwd: str | None = None
    pid_started: float | None = None  # the waiter's start time: a later process given the same pid is not it

    @property
    def log_path(self) -> Path:
        return Path(self.root) / JOBS_DIR / f"{self.id}.log"

    def alive(self) -> bool:
        return process_alive(self.pid, self.pid_started)

    def began(self) -> bool:
        """False while the job waits in the queue."""
        return jobqueue.began(Path(self.root) / JOBS_DIR, {"id": self.id, "seq": self.seq})

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
        """'queued' while it waits, 'running' while it trains; afterwards the state its run recorded
        ('cancelled' if it never began, 'failed' if it began and left no run)."""
        if self.alive():
            return runs.RUNNING if self.began() else QUEUED
        if not self.began():
            return CANCELLED
        states = [run.status().get("state") for run in self.runs()]
        if not states:
            return "failed"
        return next((state for state in states if state != "finished"), "finished")


QUEUED, CANCELLED = "queued", "cancelled"
PRETRAINED_WORDS = ("auto", "wheel", "hub", "none")


def name_taken(run_id: str, root: Path | None = None) -> bool:
    """Whether a run directory, or a job still queued or training, already uses ``run_id``."""
    root = runs.runs_root(root)
    return (root / run_id).exists() or any(job.id == run_id and job.alive() for job in list_jobs(root))


def free_run_id(wanted: str, root: Path | None = None) -> str:
    """``wanted`` if no run or live job uses it, else the first free ``wanted-2``, ``wanted-3``, ...; what the
    page suggests when a name is reused (a trailing ``-N`` is counted on, not stacked)."""
    wanted = runs.sanitize_run_id(wanted)
    if not name_taken(wanted, root):
        return wanted
    stem, _, number = wanted.rpartition("-")
    stem, start = (stem, int(number) + 1) if stem and number.isdigit() else (wanted, 2)
    for counter in range(start, start + 10_000):
        candidate = f"{stem[:120]}-{counter}"
        if not name_taken(candidate, root):
            return candidate
    raise ValueError(f"no free name like {wanted!r}")


def quick_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options of a quick check (``--smoke``) launched from a form: the form always holds an epoch count
    and a batch size, which would otherwise win over the smoke defaults (a CLI user's explicit ones do)."""
    return {key: value for key, value in options.items() if key not in presets.SMOKE}


def checked_paths(options: dict[str, Any], roots: Sequence[Path] | None = None) -> dict[str, Any]:
    """``options`` with every folder and the weights file a user typed resolved, if they lie under the allowed
    roots (AccessDenied or ValueError otherwise): a launch from the app reads and writes nothing else."""
    checked = dict(options)
    for setting in config.settings():
        if setting.path and checked.get(setting.name):
            what = setting.label.removesuffix(" dir") + " folder"  # "data folder", "cache folder"
            checked[setting.name] = str(validate_directory(checked[setting.name], what, roots))
    pretrained = checked.get("pretrained")
    if pretrained and str(pretrained) not in PRETRAINED_WORDS:
        checked["pretrained"] = str(validate_file(pretrained, roots=roots))
    return checked


def launch(options: dict[str, Any], run_id: str | None = None, *, processes: int = 1,
           threads: int | None = None, root: Path | None = None, identity: access.Identity | None = None,
           smoke: bool = False) -> Job:
    """Queue a training job and return at once (it starts when a training slot is free).

    ``options`` are TrainConfig fields given by the user (a preset's recipe fills the rest, see
    presets.expand); folders and a weights file must lie under the allowed roots. The resulting configs are
    saved in the job's record folder and the job trains exactly those (``train --config``). A multi-run
    launch (several backbones of a preset, or k folds) is grouped under a study named after the job, so its
    runs can be found and compared. ``smoke`` trains the CLI's quick check (``--smoke``, see
    :func:`quick_options`). Needs the researcher role; one 'run.launch' audit line.
    """
    with access.guarded("run.launch", identity, access.TRAIN, target=run_id) as line:
        root = runs.runs_root(root).resolve()
        backbone = str(options.get("backbone") or options.get("preset") or "run")
        run_id = runs.sanitize_run_id(run_id) if run_id else runs.new_run_id(backbone)
        line.note(target=run_id)
        if name_taken(run_id, root):
            raise FileExistsError(f"A run named {run_id!r} already exists in {root}; {free_run_id(run_id, root)!r} "
                                  "is free.")
        options = checked_paths(quick_options(options) if smoke else options)
        several = bool(options.get("folds")) or (options.get("preset") and not options.get("backbone"))
        options = {**options, "out": str(root)}
        if several:
            options.setdefault("study", run_id)
        configs = presets.expand(options, smoke=smoke)  # refuses impossible settings now, not in a log nobody reads
        saved = config_path(root, run_id)
        saved.parent.mkdir(parents=True, exist_ok=True)
        config.write_file(saved, configs)
        job = _start(build_command(saved, run_id, processes), run_id, root, threads, options.get("study"),
                     line.identity.user)
        line.note(new={key: options.get(key) for key in ("backbone", "preset", "epochs", "folds") if options.get(key)}
                  | ({"smoke": True} if smoke else {}),
                  detail=f"queued behind {job.ahead}" if job.ahead else "started")
        return job


def resumable(root: Path | None = None) -> list[str]:
    """What the Train page offers to continue: launched studies with runs left to finish (by name),
    then stopped, killed or failed runs outside a study; one stopped before its first epoch ended starts
    again from the beginning in its own directory (see loop.resume)."""
    from xraycore.training import studies as planned

    plans = runs.runs_root(root) / planned.PLANS_DIR
    studies = [plan.stem for plan in sorted(plans.glob("*.json"))] if plans.is_dir() else []
    unfinished = [study for study in studies if planned.unfinished(study, root)]
    lone = [run.id for run in runs.list_runs(root)
            if run.config.get("study") not in studies and run.status().get("state") in ("stopped", "interrupted", "failed")
            and run.config.get("train") and not run.status().get("pruned")]  # a sweep pruned it: nothing to continue
    return unfinished + lone


def resume(ref: str, *, threads: int | None = None, root: Path | None = None,
           identity: access.Identity | None = None) -> Job:
    """Continue a run or a study (see :func:`resumable`) in the background, as ``train --resume``
    (queued like a launch; researcher role; one 'run.resume' audit line)."""
    from xraycore.training import studies

    with access.guarded("run.resume", identity, access.TRAIN, target=str(ref)) as line:
        root = runs.runs_root(root).resolve()
        study = ref if studies.names_a_study(ref, root) else None
        if study is None and not runs.is_run_dir(ref, root):
            raise ValueError(f"nothing named {ref!r} to continue in {root}")
        command = [sys.executable, "-m", "xraycore", "train", "--resume", ref, "--out", str(root), "--quiet"]
        job = _start(command, runs.sanitize_run_id(ref), root, threads, study, line.identity.user)
        line.note(detail=f"queued behind {job.ahead}" if job.ahead else "started")
        return job


def _start(command: list[str], job_id: str, root: Path, threads: int | None, study: str | None,
           owner: str | None = None) -> Job:
    """Record the job and start its waiter (detached, output appended to the job's log); the waiter runs
    ``command`` when the queue gives it a slot. Record and start happen under the queue lock, so the
    waiter always finds its record complete."""
    jobs_dir = root / JOBS_DIR
    jobs_dir.mkdir(parents=True, exist_ok=True)
    threads = threads or default_threads()
    record_path = jobs_dir / f"{job_id}.json"
    (jobs_dir / f"{job_id}{jobqueue.BEGAN_SUFFIX}").unlink(missing_ok=True)  # a continued run queues afresh
    with jobqueue.locked(jobs_dir):
        job = Job(id=job_id, pid=0, command=command, root=str(root),
                  started=utc_timestamp(), study=study, owner=owner,
                  seq=jobqueue.next_sequence(jobs_dir), ahead=jobqueue.ahead_of_new(jobs_dir), cwd=str(PACKAGE_PARENT))
        atomic_write_json(record_path, asdict(job))
        with open(jobs_dir / f"{job_id}.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "xraycore.training.job_queue", str(record_path)], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                       env=job_environment(threads), cwd=PACKAGE_PARENT)
        job = Job(**{**asdict(job), "pid": process.pid, "pid_started": started_at(process.pid)})
        atomic_write_json(record_path, asdict(job))
    return job


def list_jobs(root: Path | None = None) -> list[Job]:
    """Every job recorded under the runs root, newest first; unreadable records are skipped."""
    jobs_dir = runs.runs_root(root) / JOBS_DIR
    found = []
    for record in jobqueue.records(jobs_dir):
        try:
            found.append(Job(**record))
        except TypeError:
            continue
    return sorted(found, key=_queued_order, reverse=True)


def _queued_order(job: Job) -> tuple[float, int]:
    """When the job was queued, as an instant: older records hold local time with its offset, newer ones UTC, and
    their text would not sort by time. A record whose time does not parse sorts oldest."""
    try:
        return dt.datetime.fromisoformat(job.started).timestamp(), job.seq
    except ValueError:
        return float("-inf"), job.seq


def queue(root: Path | None = None) -> list[Job]:
    """Jobs waiting for a training slot, first in line first."""
    return sorted((job for job in list_jobs(root) if job.alive() and not job.began()), key=lambda job: (job.seq, job.id))


def current_job(preferred_id: str | None = None, root: Path | None = None) -> Job | None:
    """The job with ``preferred_id`` (a session's last launch), else the newest one still running,
    so a reloaded page finds the training it started."""
    known = list_jobs(root)
    return (next((job for job in known if job.id == preferred_id), None)
            or next((job for job in known if job.alive()), None))


def may_stop(identity: access.Identity | None, owner: str | None) -> bool:
    """An admin stops any job; a researcher only their own."""
    return access.can(identity, access.STOP_ANY_JOB) or (
        access.can(identity, access.TRAIN) and owner is not None and identity is not None and owner == identity.user)


def owner_of(run: runs.Run) -> str | None:
    """Who launched the job that trains ``run`` (None when no recorded job made it)."""
    study = run.config.get("study")
    for job in list_jobs(run.path.parent):
        if job.id == run.id or (study and job.study == study):
            return job.owner
    return None


def _require_stop(identity: access.Identity | None, owner: str | None, target: str) -> access.Identity:
    who = access.acting(identity, "run.stop", target=target)
    if not may_stop(who, owner):
        audit.record("run.stop", who, outcome=audit.REFUSED, target=target, detail=f"owner: {owner or 'unknown'}")
        raise access.AccessDenied("Only whoever launched this job, or an administrator, may stop it.")
    return who


def stop(run: runs.Run, identity: access.Identity | None = None) -> None:
    """Ask a running run to stop after its current batch (the page stops whole jobs: :func:`stop_job`)."""
    who = _require_stop(identity, owner_of(run), run.id)
    with audit.performing("run.stop", who, target=run.id):
        (run.path / runs.STOP_FILE).touch()


def stop_job(job: Job, identity: access.Identity | None = None) -> None:
    """Stop a job in any phase: a run it trains gets the STOP file (see :mod:`stopping`), a job training none (queued,
    loading, between a study's runs, its run just ended) SIGTERM. Its owner or an admin; one 'run.stop' audit line."""
    who = _require_stop(identity, job.owner, job.id)
    with audit.performing("run.stop", who, target=job.id) as line:
        running = [run for run in job.runs() if run.status().get("state") == runs.RUNNING]
        for run in running:
            (run.path / runs.STOP_FILE).touch()
        ended = [run for run in running if run.status().get("state") != runs.RUNNING]
        for run in ended:  # ended meanwhile: the signal carries the request, no file stays behind
            (run.path / runs.STOP_FILE).unlink(missing_ok=True)
        if job.alive() and (ended or not running):
            line.note(detail="left the queue" if not job.began() else "signalled")
            os.killpg(job.pid, signal.SIGTERM)


def delete_run(ref: str, identity: access.Identity | None = None, root: Path | None = None) -> None:
    """Delete a run directory for good (admin only; never one still training; one 'run.delete' audit line)."""
    with access.guarded("run.delete", identity, access.DELETE_RUNS, target=str(ref)) as line:
        root = runs.runs_root(root)
        run = runs.Run(root / runs.sanitize_run_id(ref))
        if not (run.path / runs.CONFIG_FILE).is_file():
            raise ValueError(f"There is no run named {ref!r}.")
        status = run.status()
        if status.get("state") == runs.RUNNING:
            raise ValueError(f"{ref} is still training: stop it first.")
        line.note(old={"state": status.get("state"), "backbone": run.config.get("backbone"),
                       "study": run.config.get("study")}, model=audit.model_info(run.path))
        shutil.rmtree(run.path)
        _forget_job(root, run.id)


def _forget_job(root: Path, job_id: str) -> None:
    """Remove the record, log and settings of the finished job that trained only the deleted run, so a
    later run of the same name inherits neither its owner nor its log. A study's job (other runs may
    remain) and a job still alive are kept."""
    job = next((job for job in list_jobs(root) if job.id == job_id), None)
    if job is None or job.study or job.alive():
        return
    jobs_dir = root / JOBS_DIR
    for suffix in (".json", ".log", jobqueue.BEGAN_SUFFIX, CONFIG_SUFFIX):
        (jobs_dir / f"{job_id}{suffix}").unlink(missing_ok=True)

