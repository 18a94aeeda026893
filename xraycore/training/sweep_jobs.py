"""Sweeps launched from the app: ``python -m xraycore sweep ...`` as a background job, queued like any training job
(:mod:`jobs`, :mod:`job_queue`): its trials train one after the other when the job's turn comes.

Kept beside :mod:`jobs` (which is near its size limit) rather than in it; the job is recorded with the sweep's name
as its study, so its trials are the job's runs and Stop stops the sweep (the trial's run ends stopped, the sweep
ends there; the same launch continues it).
"""
from __future__ import annotations

import sys
from pathlib import Path

from xraycore.access import policy as access
from xraycore.common.timestamps import name_stamp
from xraycore.runs import directory as runs
from xraycore.training import jobs, presets, sweep


def sweepable_presets() -> list[str]:
    """The presets that declare a [search] table."""
    return [name for name in presets.names() if presets.load(name).get("search")]


def sweep_command(preset: str, data: Path, trials: int, name: str, root: Path, smoke: bool) -> list[str]:
    return [sys.executable, "-m", "xraycore", "sweep", "--preset", preset, "--data", str(data), "--trials", str(trials),
            "--name", name, "--out", str(root), "--quiet", *(["--smoke"] if smoke else [])]


def launch_sweep(preset: str, data: str, trials: int, *, smoke: bool = False, name: str | None = None,
                 threads: int | None = None, root: Path | None = None,
                 identity: access.Identity | None = None) -> jobs.Job:
    """Queue a sweep of ``trials`` trials of ``preset`` on ``data`` (a folder under the allowed roots). Needs the
    researcher role; one 'sweep.launch' audit line."""
    with access.guarded("sweep.launch", identity, access.TRAIN, target=name) as line:
        if preset not in sweepable_presets():
            raise ValueError(f"preset {preset!r} declares no [search] table; choose one of: "
                             f"{', '.join(sweepable_presets())}")
        if int(trials) < 1:
            raise ValueError("A sweep needs at least one trial.")
        folder = jobs.validate_directory(data)
        root = runs.runs_root(root).resolve()
        name = runs.sanitize_run_id(name or f"{sweep.default_name(preset, smoke)}-{name_stamp()}")
        line.note(target=name, new={"preset": preset, "trials": int(trials)} | ({"smoke": True} if smoke else {}))
        if jobs.name_taken(name, root):
            raise FileExistsError(f"A run or job named {name!r} already exists in {root}.")
        return jobs._start(sweep_command(preset, folder, int(trials), name, root, smoke), name, root, threads,
                           study=name, owner=line.identity.user)
