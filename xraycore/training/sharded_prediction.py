"""Logits (and out-of-domain features) of a dataset, each rank scoring its share and every rank getting all of
them back in order.

The loop scores the validation and watch images every epoch, and the final scoring the kept epoch's images:
both call :func:`predict_indices`, which lives here so that the session (which scores through it) and the
validation code (which takes a session) need not import each other.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from xraycore import data as xdata
from xraycore import models
from xraycore.training import distributed


@torch.no_grad()
def predict_indices(model: torch.nn.Module, dataset: xdata.XrayDataset, batch_size: int,
                    device: torch.device, ctx: distributed.Context, with_features: bool = False,
                    channels_last: bool = False, ood_spec: models.BackboneSpec | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Logits (and out-of-domain features, see models.OodFeatures) for a dataset, sharded across ranks and
    gathered in order."""
    model.eval()
    mine = list(range(ctx.rank, len(dataset), ctx.world_size))
    loader = DataLoader(torch.utils.data.Subset(dataset, mine), batch_size=batch_size)
    logits, feats, labels = [], [], []
    for images, label, _ in loader:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with models.OodFeatures(model, ood_spec) as captured:
            logits.append(model(images).float().cpu())
        if with_features:
            feats.append(captured.features().cpu())
        labels.append(label)
    part = (
        np.asarray(mine, dtype=int),
        torch.cat(labels).numpy() if labels else np.zeros(0, int),
        torch.cat(logits).numpy() if logits else np.zeros((0, 0), np.float32),
        torch.cat(feats).numpy() if feats else None,
    )
    parts = distributed.gather_objects(ctx, part)
    order = np.concatenate([p[0] for p in parts])
    sort = np.argsort(order, kind="stable")
    all_labels = np.concatenate([p[1] for p in parts])[sort]
    all_logits = np.concatenate([p[2] for p in parts if len(p[0])])[sort]
    all_feats = np.concatenate([p[3] for p in parts if p[3] is not None])[sort] if with_features else None
    return all_logits, all_labels, all_feats
