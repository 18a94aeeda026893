"""How the weights move: the optimiser, the learning-rate schedule (timm.scheduler), the frozen/fine-tune phases
and the loss against mixed images (timm's Mixup / CutMix).

The schedule is a function of the optimisation step alone (``epoch * steps_per_epoch + step``): timm's
schedulers keep no state beyond their settings, so a run resumed at epoch k gets exactly the learning rates
an uninterrupted one would have had.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler

from xraycore import models
from xraycore.training.config import TrainConfig


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One optimiser over every parameter: frozen ones simply get no gradient and are skipped."""
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def warmup_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Steps of the cosine schedule's linear warm-up (at least one)."""
    return max(1, int(round(config.warmup_fraction * max(1, config.epochs * steps_per_epoch))))


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, base_lr: float,
                   steps_per_epoch: int) -> Scheduler | None:
    """The schedule of ``base_lr`` (the phase's, see :func:`phase_lr`), stepped per batch with
    ``step_update(epoch * steps_per_epoch + step)``; None for a constant rate (set here).

    cosine: linear warm-up from ``base_lr / warm-up steps`` at step 0 to ``base_lr`` at the end of the warm-up,
    then cosine decay towards 0 over the remaining steps of the run. exponential: ``base_lr * gamma ** epoch``.
    """
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"] = base_lr  # timm reads its base rate from "initial_lr"
    if config.schedule == "cosine":
        total, warmup = max(1, config.epochs * steps_per_epoch), warmup_steps(config, steps_per_epoch)
        return CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), warmup_t=warmup,
                                 warmup_lr_init=base_lr / warmup, warmup_prefix=True, t_in_epochs=False)
    if config.schedule == "exponential":
        return StepLRScheduler(optimizer, decay_t=steps_per_epoch, decay_rate=config.gamma, t_in_epochs=False)
    return None


def backbone_frozen(config: TrainConfig, epoch: int) -> bool:
    return epoch < config.frozen_epochs or not config.unfreeze and config.frozen_epochs > 0


def phase_lr(config: TrainConfig, epoch: int) -> float:
    """The base learning rate of the phase ``epoch`` belongs to: --finetune-lr once the backbone is unfrozen."""
    if config.frozen_epochs and epoch >= config.frozen_epochs and config.finetune_lr:
        return config.finetune_lr
    return config.lr


def set_phase(model: torch.nn.Module, config: TrainConfig, epoch: int) -> None:
    """Frozen phase: head only, backbone in inference mode. Fine-tune: all but batch-norm."""
    if backbone_frozen(config, epoch):
        models.freeze_backbone(model)
        model.eval()
        model.get_classifier().train()
        return
    if config.frozen_epochs:
        models.unfreeze(model, keep_batchnorm_frozen=config.keep_batchnorm_frozen)
    model.train()
    if config.frozen_epochs and config.keep_batchnorm_frozen:
        models.set_batchnorm_eval(model)
        model.get_classifier().train()


def make_mixing(config: TrainConfig, num_classes: int) -> Mixup | None:
    """timm's Mixup / CutMix for ``--mixup`` / ``--cutmix`` (None when both are off). It also applies
    ``--label-smoothing`` to the mixed targets, so the loss must not smooth them again."""
    if not (config.mixup or config.cutmix):
        return None
    return Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, label_smoothing=config.label_smoothing,
                 num_classes=num_classes)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against soft (mixed) targets, class-weighted as ``F.cross_entropy(weight=...)`` weights
    hard ones: each class's share of a target counts with that class's weight, and the sum is divided by the
    total weight. One-hot targets give exactly the weighted hard-label loss."""
    per_class = -targets * F.log_softmax(logits, dim=1)
    if weights is None:
        return per_class.sum(dim=1).mean()
    return (per_class * weights).sum() / (targets * weights).sum()
