"""PyTorch distributed (torchrun) glue: which process am I, and how to combine results.

Everything here is a no-op in a plain single process, so the trainer has one code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> Context:
    """Join the process group torchrun describes in the environment (nccl on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """True in a plain process and in torchrun's rank 0 (read from the environment, before any setup)."""
    return int(os.environ.get("RANK", "0")) == 0


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(ctx: Context, value: Any) -> Any:
    """Rank 0's value on every rank (e.g. the run directory only rank 0 created)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: Context, value: Any) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if not ctx.enabled:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def sum_tensor(ctx: Context, tensor: torch.Tensor) -> torch.Tensor:
    if ctx.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_flag(ctx: Context, flag: bool) -> bool:
    """True on every rank when any rank raised the flag (stop requests)."""
    if not ctx.enabled:
        return flag
    return bool(sum_tensor(ctx, torch.tensor([1.0 if flag else 0.0])).item() > 0)
