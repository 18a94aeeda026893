"""The training loop: data → model → run directory.

One function, :func:`train`, runs a whole recipe (``TrainConfig``) and writes a run through
``xraycore.runs.directory``; :func:`resume` continues a killed run from its last completed epoch. The same code runs in
one process or under ``torchrun`` (DistributedDataParallel): only rank 0 writes. Its parts live beside it:
:mod:`session` (what a training process holds), :mod:`run_data` (folders → split → decoded cache),
:mod:`run_record` (the run directory and its config.json), :mod:`optimisation` (optimiser, schedule, phases),
:mod:`checkpoint` (what resume reads), :mod:`sharded_prediction` (scoring across ranks) and :mod:`validation`
(validation every epoch, then the kept epoch's predictions, operating point and summary).

Reproducibility: every epoch reseeds torch from (seed, epoch) and shuffles with the same
per-epoch permutation (DistributedSampler's), so a resumed run replays exactly the epochs an
uninterrupted one would have.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, DistributedSampler

from xraycore.training import checkpoint
from xraycore import data as xdata
from xraycore.training import distributed
from xraycore.training import durations as estimate
from xraycore import models
from xraycore.runs import directory as runs
from xraycore.common.tensor_files import save_weights
from xraycore.training import stopping
from xraycore.training import tracking
from xraycore.training import run_view as trainview
from xraycore.training.config import MONITORS, TrainConfig, from_record
from xraycore.training.optimisation import backbone_frozen, make_mixing, make_optimizer, make_scheduler, phase_lr, set_phase, soft_target_cross_entropy
from xraycore.runs.directory import CHECKPOINT_FILE, LAST_WEIGHTS_FILE, WEIGHTS_FILE
from xraycore.training.run_data import prepare_data
from xraycore.training.run_record import open_or_create_run, record_sharding
from xraycore.training.session import Progress, Session, silent
from xraycore.training.sharded_prediction import predict_indices
from xraycore.training.validation import epoch_metrics, finish

PROGRESS_SECONDS = 2.0  # status.json's batch progress is rewritten at most this often (and at an epoch's ends)


def configure_threads(threads: int | None) -> None:
    """Background runs share the CPU cores with the app: OMP_WAIT_POLICY=PASSIVE stops OpenMP threads from
    busy-waiting (spinning) between parallel regions, which would starve the app; ``threads`` caps torch's
    intra-op threads."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- the loop
def train(config: TrainConfig, progress: Progress = silent, run_id: str | None = None) -> Path:
    """Train one run end to end and return its directory."""
    return _run(config, progress, run_id=run_id, resume_from=None)


def resume(run_ref: str | Path, progress: Progress = silent, root: Path | None = None) -> Path:
    """Continue a stopped, failed or killed run from its last completed epoch, same config; one that
    never completed an epoch starts again from the beginning in its own directory (so a run stopped
    early is neither lost nor stuck)."""
    run = runs.open_run(Path(run_ref) if Path(run_ref).is_dir() else str(run_ref), root)
    if run.status().get("state") == "running" and distributed.is_main_process():  # other ranks may see rank 0's
        raise RuntimeError(f"run {run.id} is still running (pid {run.status().get('pid')})")
    if not run.config.get("train"):
        raise RuntimeError(f"run {run.id} records no training settings; it cannot be continued")
    config = from_record(run.config["train"])
    return _run(config, progress, run_id=None, resume_from=run)


def _run(config: TrainConfig, progress: Progress, run_id: str | None, resume_from: runs.Run | None) -> Path:
    configure_threads(config.threads)
    device = models.pick_device(None if config.device == "auto" else config.device)
    ctx = distributed.setup(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    spec = models.get_spec(config.backbone)
    if config.image_size is None:
        config = config.replace(image_size=spec.input_size)
    holder: dict[str, Session] = {}
    if config.ood_outliers and config.fit_ood and not Path(config.ood_outliers).is_dir():
        raise ValueError(f"--ood-outliers {config.ood_outliers} is not a folder")  # said now, not after training
    try:
        with stopping.listening():
            return _train_session(config, progress, run_id, resume_from, device, ctx, spec, holder)
    except BaseException as error:
        session = holder.get("session")
        if session is not None and session.run is not None and ctx.is_main:
            state = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            session.run.set_status(state, message=f"{type(error).__name__}: {error}")
            session.run.log(f"{state}: {type(error).__name__}: {error}")
            tracking.end(session, state)
        raise
    finally:
        distributed.teardown(ctx)


def _train_session(config: TrainConfig, progress: Progress, run_id: str | None, resume_from: runs.Run | None,
                   device: torch.device, ctx: distributed.Context, spec: models.BackboneSpec, holder: dict) -> Path:
    """Data, model, run directory, epochs, scoring; a stop asked before the data is ready creates no run."""
    splits = prepare_data(config, progress if ctx.is_main else silent)
    if distributed.any_flag(ctx, stopping.requested()):
        if ctx.is_main:
            progress({"kind": "message", "text": "stopped on request before training began"})
        return Path()
    if not splits.train or not splits.val:
        raise ValueError("the split left no training or no validation images; add images or change the split")
    head = models.HeadSpec(hidden=config.head_hidden, dropout=config.dropout, batchnorm=config.head_batchnorm,
                           init=config.head_init)
    torch.manual_seed(config.seed)  # the same seed gives the same initial weights, in every process
    continuing = resume_from is not None and (resume_from.path / CHECKPOINT_FILE).exists()
    model, weights_source = models.build_model(config.backbone, len(splits.class_names),
                                               pretrained="none" if continuing else config.pretrained, head=head)
    if continuing:
        weights_source = resume_from.config.get("weights_source", weights_source)
    session = holder["session"] = Session(config, splits, spec, model, device, ctx, progress)
    session.say(f"weights: {weights_source}")
    if spec.heavy and device.type == "cpu":
        session.say(f"note: {spec.name} is heavy for a CPU; a full-size run takes hours per epoch here: "
                    "use a GPU, or --smoke to check the recipe")
    session.run = open_or_create_run(session, weights_source, run_id, resume_from)
    session.tracker = tracking.start(session, weights_source)
    _fit(session)
    if ctx.is_main and config.ood_outliers and config.fit_ood and session.run.status().get("state") == "finished":
        _expose_to_outliers(session)
    _hear_late_stop(session)
    tracking.end(session)
    return Path(session.run.path) if session.run is not None else Path()


def _hear_late_stop(session: Session) -> None:
    """A Stop that came once the last batch was trained (final validation, scoring, exposure): the run has
    ended as it was, its STOP file goes, and every rank learns that the study stops here."""
    run = session.run
    already = stopping.requested()
    if distributed.any_flag(session.ctx, stopping.consume(run.path if run is not None else None)):
        stopping.request()
        if run is not None and not already:
            run.log(f"stop requested while the run ended; it ended {run.status().get('state')}, nothing more starts")


def _expose_to_outliers(session: Session) -> None:
    """The finished run's out-of-domain check learns the --ood-outliers films (see outlier_exposure.expose). The run is
    finished and stays so: when this fails, it keeps the distance check alone and says why."""
    from xraycore.training.outlier_exposure import fit_exposure

    session.say(f"out-of-domain check: learning the films in {session.config.ood_outliers}")
    try:
        fit_exposure(session.run.path, session.config.data, session.config.ood_outliers, seed=session.config.seed,
                     say=session.say)
    except (ValueError, OSError) as error:  # an unreadable folder, too few films, a validation image gone
        message = f"out-of-domain exposure not done, the distance check alone flags: {error}"
        session.say(message)
        session.run.log(message)


@dataclass
class _Loop:
    """The optimisation state that lives across epochs (and is checkpointed for --resume)."""

    wrapped: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_weights: torch.Tensor | None
    use_amp: bool
    ema: ModelEmaV3 | None = None  # --ema-decay: the averaged weights, validated and kept instead of the raw ones
    mixing: Mixup | None = None  # --mixup / --cutmix (stateless: draws from numpy's generator, seeded per epoch)
    start_epoch: int = 0
    best: float | None = None
    bad_epochs: int = 0
    epoch_seconds: float | None = None  # the last whole epoch (training and validation): paces the time left
    reported_at: float = 0.0  # when status.json last got batch progress


def _prepare_loop(session: Session, weights: torch.Tensor | None) -> _Loop:
    """Device, memory format, DDP wrapper, optimiser; restored from the checkpoint when resuming."""
    config, ctx, device, run = session.config, session.ctx, session.device, session.run
    if config.sync_batchnorm and ctx.enabled and device.type == "cpu":
        session.say("sync-batchnorm ignored: PyTorch's SyncBatchNorm needs a GPU; each process keeps its own statistics")
        if ctx.is_main:
            run.log("sync-batchnorm ignored on CPU")
    if config.sync_batchnorm and ctx.enabled and device.type != "cpu":
        session.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(session.model)
    model = session.model
    model.to(device)
    if session.channels_last:
        model.to(memory_format=torch.channels_last)
    model.requires_grad_(True)  # DDP registers only trainable parameters: freezing happens per epoch, after
    wrapped = model
    if ctx.enabled:  # only a frozen phase leaves parameters without gradients; searching for them costs a graph walk
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.frozen_epochs > 0)
    use_amp = config.amp and device.type == "cuda"
    loop = _Loop(wrapped, make_optimizer(config, model), torch.amp.GradScaler("cuda", enabled=use_amp),
                 weights.to(device) if weights is not None else None, use_amp)
    if config.ema_decay:
        loop.ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True)
    loop.mixing = make_mixing(config, len(session.splits.class_names))
    if loop.mixing is not None and session.batch_size % 2:
        raise ValueError(f"mixup and cutmix mix each batch with its mirror image: the batch per process "
                         f"({session.batch_size} of {config.batch_size} over {ctx.world_size}) must be even")
    if run is not None and (run.path / CHECKPOINT_FILE).exists():
        loop.start_epoch, loop.best, loop.bad_epochs = checkpoint.restore(run, model, loop.optimizer, loop.ema)
    loop.start_epoch, loop.best, loop.bad_epochs = distributed.broadcast_object(
        ctx, (loop.start_epoch, loop.best, loop.bad_epochs))
    if ctx.enabled and loop.start_epoch:
        checkpoint.sync_weights(model)
        if loop.ema is not None:
            checkpoint.sync_weights(loop.ema.module)
    return loop


def _fit(session: Session) -> None:
    """Train epochs until done, stopped or early-stopped; then score with the best weights."""
    config, splits, ctx, run = session.config, session.splits, session.ctx, session.run
    mean, std = session.mean_std
    train_set, finish_batch = xdata.training_input(splits.cache, splits.train, config.augment, config.image_size,
                                                   mean, std)
    val_set = xdata.XrayDataset(splits.cache, splits.val, output_size=config.eval_size or config.image_size,
                                mean=mean, std=std)
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=config.seed, drop_last=False)
    loader = DataLoader(train_set, batch_size=session.batch_size, sampler=sampler, num_workers=config.num_workers,
                        persistent_workers=config.num_workers > 0,
                        drop_last=len(train_set) > session.batch_size * ctx.world_size)
    weights = None
    if config.loss == "weighted_ce":
        weights = torch.tensor(xdata.class_weights([splits.cache.samples[i] for i in splits.train],
                                                   len(splits.class_names)), dtype=torch.float32)
    loop = _prepare_loop(session, weights)
    stopped = False
    if ctx.is_main:
        run.set_status("running", epoch=loop.start_epoch, epochs=config.epochs,
                       progress={"epoch": loop.start_epoch + 1, "batch": 0, "batches": len(loader), "phase": "training"})
        session.progress({"kind": "start", "run": str(run.path), "epochs": config.epochs, "steps": len(loader),
                          "train": len(splits.train), "val": len(splits.val), "test": len(splits.test)})
    for epoch in range(loop.start_epoch, config.epochs):
        if distributed.any_flag(ctx, stopping.consume(run.path if run is not None else None)):
            stopping.request()  # asked before this epoch began (while loading, validating): no batch more
            stopped = True
            if ctx.is_main:
                run.log(f"stop requested before epoch {epoch + 1} began")
            break
        torch.manual_seed(config.seed * 1000 + epoch)
        if loop.mixing is not None:  # timm's Mixup draws from numpy: seeded only here, so runs without it
            np.random.seed(config.seed * 1000 + epoch)  # keep the random stream they were recorded with
        sampler.set_epoch(epoch)
        set_phase(session.model, config, epoch)
        started = time.perf_counter()
        loss_sum, rows_seen, stopped = _train_epoch(session, loop, loader, finish_batch, epoch)
        if stopped:
            break
        if epoch == loop.start_epoch:
            record_sharding(run, ctx, rows_seen, len(train_set))
        _end_epoch(session, loop, val_set, weights, epoch, len(loader), loss_sum, time.perf_counter() - started)
        loop.epoch_seconds = time.perf_counter() - started
        if config.patience is not None and loop.bad_epochs > config.patience:
            if ctx.is_main:
                run.log(f"early stopping: {config.monitor} did not improve by {config.min_delta} "
                        f"for {loop.bad_epochs} epochs")
            break

    nothing_kept = distributed.broadcast_object(ctx, ctx.is_main and not (run.path / WEIGHTS_FILE).exists())
    if nothing_kept:  # every rank returns together: none may wait in _finish for the others
        if ctx.is_main:
            run.set_status("stopped", message="stopped before the first epoch ended, so no weights were kept; "
                                              "Continue starts it again from the beginning, or delete it")
        return
    finish(session, stopped)


def _train_epoch(session: Session, loop: _Loop, loader: DataLoader, finish_batch: Callable,
                 epoch: int) -> tuple[torch.Tensor, list[int], bool]:
    """One pass over this process's shard: (summed loss and count, rows seen, whether a stop was asked)."""
    config, ctx, device, run = session.config, session.ctx, session.device, session.run
    steps = len(loader)
    scheduler = make_scheduler(config, loop.optimizer, phase_lr(config, epoch), steps)
    loss_sum, rows_seen = torch.zeros(2), []
    started = time.perf_counter()
    for step, (images, targets, rows) in enumerate(loader):
        if scheduler is not None:
            scheduler.step_update(epoch * steps + step)  # the learning rate of this very step
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        images = finish_batch(images)  # batched augmentation + normalisation, on the device
        if session.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        mixed = None
        if loop.mixing is not None and len(images) % 2 == 0:  # timm mixes a batch with its mirror: needs pairs
            images, mixed = loop.mixing(images, targets)  # an odd batch (a split smaller than one) trains unmixed
        with torch.autocast(device.type, enabled=loop.use_amp):
            logits = loop.wrapped(images)
            if mixed is not None:
                loss = soft_target_cross_entropy(logits.float(), mixed, loop.loss_weights)
            else:
                loss = F.cross_entropy(logits.float(), targets, weight=loop.loss_weights,
                                       label_smoothing=config.label_smoothing)
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        if loop.ema is not None:
            loop.ema.update(session.model, step=epoch * steps + step + 1)
        loss_sum += torch.tensor([loss.item() * len(targets), len(targets)])
        rows_seen += rows.tolist()
        if ctx.is_main:
            session.progress({"kind": "batch", "epoch": epoch + 1, "step": step + 1, "steps": steps, "loss": loss.item()})
            _report_batch(session, loop, epoch, step + 1, steps, len(rows_seen) * ctx.world_size,
                          time.perf_counter() - started)
        if distributed.any_flag(ctx, stopping.consume(run.path if run is not None else None)):
            stopping.request()  # every rank's study loop must hear it, not only rank 0's
            if ctx.is_main:
                run.set_status("running", message=f"stop requested during batch {step + 1} of {steps} of epoch "
                                                  f"{epoch + 1}: ending",
                               progress={"epoch": epoch + 1, "batch": step + 1, "batches": steps,
                                         "phase": trainview.STOPPING})
                run.log(f"stop requested at epoch {epoch + 1}, batch {step + 1} of {steps}")
            return loss_sum, rows_seen, True
    return loss_sum, rows_seen, False


def _report_batch(session: Session, loop: _Loop, epoch: int, step: int, steps: int, images: int,
                  elapsed: float) -> None:
    """Batch progress, speed and time left into status.json (rank 0; the first and last batch of an epoch and
    otherwise at most every PROGRESS_SECONDS), so the page can say more than 'epoch 1 of 10' for minutes."""
    now = time.perf_counter()
    if not (step == 1 or step == steps or now - loop.reported_at >= PROGRESS_SECONDS):
        return
    loop.reported_at = now
    config = session.config
    left = estimate.seconds_left(step, steps, elapsed, images, epoch, config.epochs, len(session.splits.val),
                                 loop.epoch_seconds)
    session.run.set_status("running", progress={
        "epoch": epoch + 1, "batch": step, "batches": steps, "phase": trainview.VALIDATING if step == steps else "training",
        "images_per_second": round(images / max(elapsed, 1e-9), 1),
        "seconds_left": None if left is None else round(left, 1)})


def _end_epoch(session: Session, loop: _Loop, val_set: xdata.XrayDataset, weights: torch.Tensor | None,
               epoch: int, steps: int, loss_sum: torch.Tensor, elapsed: float) -> None:
    """Validate, keep the best weights, checkpoint for --resume, log the epoch's row."""
    config, ctx, run = session.config, session.ctx, session.run
    model = loop.ema.module if loop.ema is not None else session.model  # what is validated is what is kept
    total = distributed.sum_tensor(ctx, loss_sum)
    val_logits, val_labels, _ = predict_indices(model, val_set, session.batch_size * 2, session.device, ctx,
                                                channels_last=session.channels_last)
    row = {"epoch": epoch + 1, "train_loss": float(total[0] / max(1.0, float(total[1]))),
           **epoch_metrics(val_logits, val_labels, weights, config.beta), **_watch_metrics(session, model, weights),
           "lr": loop.optimizer.param_groups[0]["lr"],  # the epoch's last step's
           "frozen_backbone": backbone_frozen(config, epoch), "seconds": round(elapsed, 2),
           "images_per_second": round(float(total[1]) / max(elapsed, 1e-9), 2)}
    value, best = row[config.monitor], loop.best
    if MONITORS[config.monitor]:  # larger is better
        improved = best is None or value > best + config.min_delta
    else:
        improved = best is None or value < best - config.min_delta
    loop.best, loop.bad_epochs = (value, 0) if improved else (best, loop.bad_epochs + 1)
    row["best"] = improved
    if not ctx.is_main:
        return
    run.append_metrics(row)
    tracking.epoch(session, row)
    if improved:
        save_weights(run.path / WEIGHTS_FILE, model.state_dict())
    save_weights(run.path / LAST_WEIGHTS_FILE, model.state_dict())
    checkpoint.save(run.path / CHECKPOINT_FILE, {
        "model": session.model.state_dict(), "optimizer": loop.optimizer.state_dict(), "epoch": epoch,
        "best": loop.best, "bad_epochs": loop.bad_epochs,
        **({"ema": loop.ema.module.state_dict()} if loop.ema is not None else {})})
    run.set_status("running", epoch=epoch + 1, epochs=config.epochs, best_value=loop.best, best_metric=config.monitor,
                   progress={"epoch": epoch + 2, "batch": 0, "batches": steps, "phase": "training"}
                   if epoch + 1 < config.epochs else {"epoch": epoch + 1, "phase": trainview.SCORING})
    run.log(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
    session.progress({"kind": "epoch", **row})


def _watch_metrics(session: Session, model: torch.nn.Module, weights: torch.Tensor | None) -> dict[str, float]:
    """watch_auroc / watch_accuracy on --watch-data with this epoch's weights (empty without it)."""
    splits = session.splits
    if splits.watch is None:
        return {}
    mean, std = session.mean_std
    dataset = xdata.XrayDataset(splits.watch, list(range(len(splits.watch))),
                                output_size=session.config.eval_size or session.config.image_size, mean=mean, std=std)
    logits, _, _ = predict_indices(model, dataset, session.batch_size * 2, session.device, session.ctx,
                                   channels_last=session.channels_last)
    found = epoch_metrics(logits, np.asarray(splits.watch_labels), weights)
    return {"watch_auroc": found["val_auroc"], "watch_accuracy": found["val_accuracy"]}
