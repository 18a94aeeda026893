"""The training loop: data → model → run directory.

One function, :func:`train`, runs a whole recipe (``TrainConfig``) and writes a run through
``runs``; :func:`resume` continues a killed run from its last completed epoch. The same code runs in
one process or under ``torchrun`` (DistributedDataParallel): only rank 0 writes. Its parts live beside it:
:mod:`optimisation` (optimiser, schedule, phases), :mod:`checkpoint` (what resume reads) and
:mod:`scoring` (validation every epoch, then the kept epoch's predictions, operating point and summary).

Reproducibility: every epoch reseeds torch from (seed, epoch) and shuffles with the same
per-epoch permutation (DistributedSampler's), so a resumed run replays exactly the epochs an
uninterrupted one would have.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
from xraycore.models import registry as models
from xraycore.runs import directory as runs
from xraycore.common.files import atomic_write_text
from xraycore.common.tensor_files import save_weights
from xraycore.training import stopping
from xraycore.training import run_view as trainview
from xraycore.training.config import MONITORS, TrainConfig, from_record
from xraycore.training.optimisation import backbone_frozen, make_mixing, make_optimizer, make_scheduler, phase_lr, set_phase, soft_target_cross_entropy
from xraycore.runs.directory import CHECKPOINT_FILE, LAST_WEIGHTS_FILE, METRICS_FILE, STOP_FILE, WEIGHTS_FILE
from xraycore.training.validation import epoch_metrics, finish, predict_indices

Progress = Callable[[dict[str, Any]], None]
PROGRESS_SECONDS = 2.0  # status.json's batch progress is rewritten at most this often (and at an epoch's ends)
def _silent(event: dict[str, Any]) -> None:
    pass


def configure_threads(threads: int | None) -> None:
    """Background runs share 2 cores with the app: OpenMP must not busy-wait (see README)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- data
@dataclass
class Splits:
    cache: xdata.ImageCache
    class_names: list[str]
    train: list[int]
    val: list[int]
    test: list[int]
    description: str
    watch: xdata.ImageCache | None = None  # --watch-data: scored every epoch, never trained on
    watch_labels: list[int] | None = None


def prepare_data(config: TrainConfig, progress: Progress = _silent) -> Splits:
    """Folders → patient-grouped split (or fold) → one decoded cache for every image used."""
    pattern = config.patient_pattern or xdata.DEFAULT_PATIENT_PATTERN
    found, class_names = xdata.discover_splits(config.data, config.class_names, pattern=pattern)
    if not class_names or not any(found.values()):
        raise ValueError(f"no images in class folders under {config.data}")
    pool = found.get("train") or found.get("all") or []
    test = found.get("test", [])
    if config.max_per_class:
        pool = xdata.subsample(pool, config.max_per_class, seed=config.seed)
        test = xdata.subsample(test, config.max_per_class, seed=config.seed) if test else []

    use_folder_val = config.split == "folder" or (
        config.split == "auto" and len(found.get("val", [])) >= 50 and not config.folds
    )
    if config.folds:
        fold = config.fold or 0
        train, val = xdata.kfold_splits(pool, config.folds, seed=config.split_seed_or_seed)[fold]
        description = f"fold {fold + 1} of {config.folds} (stratified, grouped by patient)"
    elif use_folder_val:
        train, val = pool, found["val"]
        description = "train/val folders as given"
    else:
        train, val = xdata.split_by_ratio(pool, config.val_fraction, seed=config.split_seed_or_seed)
        description = f"{config.val_fraction:.0%} validation, stratified and grouped by patient"

    everything = list(dict.fromkeys(train + val + test))  # a sample may not be decoded twice
    cache_dir = Path(config.cache_dir) if config.cache_dir else None
    size = config.load_size or config.image_size
    cache = xdata.ImageCache(
        everything, size, cache_dir=cache_dir, intensity=config.intensity, margin=config.crop_margin,
        progress=lambda done, total: progress({"kind": "cache", "done": done, "total": total}),
    )
    train_idx = cache.indices_of(train)
    if config.grow_minority:
        grown = xdata.grow_minority([cache.samples[i] for i in train_idx], config.grow_minority, seed=config.seed)
        train_idx = cache.indices_of(grown)
    watch, watch_labels = _watch_set(config, class_names, size)
    return Splits(cache, class_names, train_idx, cache.indices_of(val), cache.indices_of(test), description,
                  watch, watch_labels)


def _watch_set(config: TrainConfig, class_names: list[str], size: int) -> tuple[xdata.ImageCache | None, list[int] | None]:
    """The --watch-data images decoded like the training images, labelled in the run's class order."""
    if not config.watch_data:
        return None, None
    samples, folder_classes = xdata.scan_class_folders(config.watch_data)
    unknown = sorted(set(folder_classes) - set(class_names))
    if not samples or unknown:
        raise ValueError(f"--watch-data needs class folders named like the training classes ({', '.join(class_names)})"
                         + (f"; it has {', '.join(unknown)}" if unknown else ""))
    cache = xdata.ImageCache(samples, size, intensity=config.intensity, margin=config.crop_margin)
    kept = {s.path: s for s in cache.samples}
    return cache, [class_names.index(folder_classes[kept[s.path].label]) for s in cache.samples]


# ---------------------------------------------------------------- devices
def per_process_batch(config: TrainConfig, ctx: distributed.Context) -> int:
    """--batch-size is the global batch: each of the world's processes takes its share."""
    return max(1, config.batch_size // ctx.world_size)


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Channels-last speeds convolutions up on CUDA and on oneDNN CPUs (2.6x for MobileNetV2 here); not on MPS."""
    return config.channels_last and device.type in ("cuda", "cpu")


# ---------------------------------------------------------------- the loop
def environment_record(device: torch.device, ctx: distributed.Context) -> dict[str, Any]:
    import timm

    return {
        "device": str(device), "torch": torch.__version__, "timm": timm.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "world_size": ctx.world_size, "host": platform.node(),
    }


def train(config: TrainConfig, progress: Progress = _silent, run_id: str | None = None) -> Path:
    """Train one run end to end and return its directory."""
    return _run(config, progress, run_id=run_id, resume_from=None)


def resume(run_ref: str | Path, progress: Progress = _silent, root: Path | None = None) -> Path:
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


@dataclass
class Session:
    """What one training process holds while it trains a run. Only rank 0 has ``run`` (it writes)."""

    config: TrainConfig
    splits: Splits
    spec: models.BackboneSpec
    model: torch.nn.Module
    device: torch.device
    ctx: distributed.Context
    progress: Progress
    run: runs.Run | None = None

    @property
    def batch_size(self) -> int:
        return per_process_batch(self.config, self.ctx)

    @property
    def channels_last(self) -> bool:
        return uses_channels_last(self.config, self.device)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return models.input_normalisation(self.spec, self.config.normalisation)

    def say(self, text: str) -> None:
        if self.ctx.is_main:
            self.progress({"kind": "message", "text": text})

    def evaluate(self, indices: list[int], with_features: bool = False):
        """Logits, labels (and features) of some cached images at the evaluation size."""
        mean, std = self.mean_std
        dataset = xdata.XrayDataset(self.splits.cache, indices, output_size=self.config.eval_size or self.config.image_size,
                                    mean=mean, std=std)
        return predict_indices(self.model, dataset, self.batch_size * 2, self.device, self.ctx,
                               with_features=with_features, channels_last=self.channels_last, ood_spec=self.spec)


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
        raise
    finally:
        distributed.teardown(ctx)


def _train_session(config: TrainConfig, progress: Progress, run_id: str | None, resume_from: runs.Run | None,
                   device: torch.device, ctx: distributed.Context, spec: models.BackboneSpec, holder: dict) -> Path:
    """Data, model, run directory, epochs, scoring; a stop asked before the data is ready creates no run."""
    splits = prepare_data(config, progress if ctx.is_main else _silent)
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
    session.run = _open_or_create_run(session, weights_source, run_id, resume_from)
    _fit(session)
    if ctx.is_main and config.ood_outliers and config.fit_ood and session.run.status().get("state") == "finished":
        _expose_to_outliers(session)
    _hear_late_stop(session)
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
    """The finished run's out-of-domain check learns the --ood-outliers films (see exposure.expose). The run is
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


def _open_or_create_run(session: Session, weights_source: str, run_id: str | None,
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
            _record_sharding(run, ctx, rows_seen, len(train_set))
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
           **epoch_metrics(val_logits, val_labels, weights), **_watch_metrics(session, model, weights),
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


def _record_sharding(run: runs.Run | None, ctx: distributed.Context, rows_seen: list[int], train_size: int) -> None:
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
