"""What a training job runs: ``python -m xraycore train --config FILE`` (or the same through torchrun on several
GPUs), in an environment that keeps the app responsive.

Kept apart from :mod:`jobs` (which launches, lists, stops and deletes) because these are pure decisions about a
command line, checked by tests without starting anything.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from xraycore.runs import directory as runs


def build_command(config_file: Path, run_id: str, processes: int = 1, python: str = sys.executable) -> list[str]:
    """The argv of a training job: ``train --config FILE``, in one process or ``processes`` ranks through torchrun.

    torchrun is started as ``python -m torch.distributed.run`` (the module behind the ``torchrun``
    script), so the job always uses the app's own interpreter and packages.
    """
    if processes < 1:
        raise ValueError("the number of processes must be at least 1")
    train_verb = ["-m", "xraycore", "train", "--config", str(config_file), "--run-id", runs.sanitize_run_id(run_id),
                  "--quiet"]
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
