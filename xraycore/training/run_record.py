"""What config.json says about a run: rank 0 creates the run directory (or reopens the one being continued) with
every fact of the recipe, the data and the machine, and later adds which images each rank trained on.

Kept apart from the loop, which only trains: these are the facts a reader of a run relies on (the Train page,
comparisons, model cards), written in one place.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from xraycore import data as xdata
from xraycore.common.files import atomic_write_text
from xraycore.runs import directory as runs
from xraycore.runs.directory import CHECKPOINT_FILE, METRICS_FILE, STOP_FILE
from xraycore.training import distributed
from xraycore.training.session import Session


def environment_record(device: torch.device, ctx: distributed.Context) -> dict[str, Any]:
    """Where the run trained (config.json "environment"): device, library versions, threads, processes, host."""
    import timm

    return {
        "device": str(device), "torch": torch.__version__, "timm": timm.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "world_size": ctx.world_size, "host": platform.node(),
    }


def open_or_create_run(session: Session, weights_source: str, run_id: str | None,
                       resume_from: runs.Run | None) -> runs.Run | None:
    """Rank 0 creates (or reopens) the run directory; other ranks learn its path and never write."""
    config, splits, ctx = session.config, session.splits, session.ctx
    path = None
    if ctx.is_main:
        if resume_from is not None:
            run = resume_from
            (run.path / STOP_FILE).unlink(missing_ok=True)  # that request was for the process that stopped
            if (run.path / CHECKPOINT_FILE).exists():
                run.set_status("running", pid=os.getpid(), message="resumed")
                run.log("resumed")
            else:  # nothing was kept: the same run, from the beginning, with the weights it starts from now
                run.write_json(runs.CONFIG_FILE, {**run.config, "weights_source": weights_source})
                atomic_write_text(run.path / METRICS_FILE, "")
                run.set_status("running", pid=os.getpid(), epoch=0, message="started again (no epoch had completed)")
                run.log("started again from the beginning: no epoch had completed")
        else:
            mean, std = session.mean_std
            record = {
                "train": config.to_flat_dict(),  # flat: what every reader of config.json expects
                "backbone": config.backbone, "class_names": splits.class_names,
                "positive_class": config.positive_class if config.positive_class in splits.class_names else None,
                "image_size": config.eval_size or config.image_size, "train_image_size": config.image_size,
                "load_size": config.load_size or config.image_size,
                "input_jpeg_quality": xdata.stored_jpeg_quality([splits.cache.samples[i].path for i in splits.train],
                                                                config.load_size or config.image_size),
                "mean": list(mean), "std": list(std), "intensity": config.intensity, "crop_margin": config.crop_margin,
                "head": {"hidden": config.head_hidden, "dropout": config.dropout, "batchnorm": config.head_batchnorm,
                         "init": config.head_init},
                "weights_source": weights_source, "split": splits.description,
                "counts": {name: len(idx) for name, idx in
                           (("train", splits.train), ("val", splits.val), ("test", splits.test))},
                "skipped_files": len(splits.cache.skipped),
                "skipped_by_reason": splits.cache.skipped_by_reason,
                "effective_batch_size": session.batch_size * ctx.world_size, "per_process_batch_size": session.batch_size,
                "environment": environment_record(session.device, ctx), "study": config.study, "preset": config.preset,
            }
            root = Path(config.out) if config.out else None
            run = runs.create_run(record, root=root, run_id=run_id or runs.new_run_id(config.backbone))
            for path_, reason in splits.cache.skipped:
                run.log(f"skipped unreadable training image {Path(path_).name}: {reason}")
        path = str(run.path)
    path = distributed.broadcast_object(ctx, path)
    return runs.Run(Path(path)) if ctx.is_main else None


def record_sharding(run: runs.Run | None, ctx: distributed.Context, rows_seen: list[int], train_size: int) -> None:
    """Which training images each process really fed the network in one epoch (config.json "data_parallel").

    Under torchrun the ranks must see disjoint shards of the epoch: "overlap" counts images trained on by
    more than one rank (0 unless the sampler had to pad an uneven split).
    """
    shards = distributed.gather_objects(ctx, rows_seen)
    if not ctx.is_main:
        return
    images = [set(shard) for shard in shards]
    record = {"ranks": ctx.world_size, "samples_per_rank": [len(shard) for shard in shards],
              "overlap": sum(map(len, images)) - len(set().union(*images)), "training_samples": train_size}
    if "data_parallel" not in run.config:
        run.write_json(runs.CONFIG_FILE, {**run.config, "data_parallel": record})
    run.log("data parallel: " + ", ".join(f"{key}={value}" for key, value in record.items()))
