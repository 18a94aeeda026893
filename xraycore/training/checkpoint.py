"""What ``--resume`` continues from: one checkpoint file per run, holding the last completed epoch.

Weights, optimiser state (which holds the learning rate's base, see optimisation.make_scheduler) and the
loop's early-stopping state are written in one file and replaced atomically, so a kill leaves one whole
epoch; restoring drops the metric lines a kill may have left behind it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xraycore.runs import directory as runs
from xraycore.common.files import atomic_stream, atomic_write_text, json_line
from xraycore.runs.directory import CHECKPOINT_FILE, METRICS_FILE


def restore(run: runs.Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            ema: Any = None) -> tuple[int, Any, int]:
    """Load the last completed epoch (and the weights' moving average, when the run keeps one); drop metric
    lines written after it (a kill between writes)."""
    state = torch.load(run.path / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.module.load_state_dict(state["ema"])
    done = int(state["epoch"]) + 1
    kept = [row for row in run.metrics() if row.get("epoch", 0) <= done]
    atomic_write_text(run.path / METRICS_FILE, "".join(json_line(row) for row in kept))
    return done, state["best"], int(state["bad_epochs"])


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    """Weights, optimiser and loop state in one file, replaced atomically: a kill leaves one whole epoch."""
    with atomic_stream(path) as stream:
        torch.save(checkpoint, stream)


def sync_weights(model: torch.nn.Module) -> None:
    """Every rank takes rank 0's weights (restored or kept ones only rank 0 has read)."""
    for tensor in model.state_dict().values():
        torch.distributed.broadcast(tensor, src=0)
