"""Scoring the model under training: validation metrics every epoch, and once training ends the kept
epoch's predictions, temperature, operating point, out-of-domain detector and summary.

Images are sharded across the ranks under torchrun and gathered in order (:mod:`sharded_prediction`), so every
rank computes the same numbers; only rank 0 writes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xraycore import metrics
from xraycore import models
from xraycore.common.tensor_files import load_weights, save_arrays
from xraycore.training import run_view as trainview
from xraycore.training.checkpoint import sync_weights
from xraycore.ood.distance import fit_ood
from xraycore.training.session import Session
from xraycore.runs.directory import OOD_FILE, SUMMARY_FILE, WEIGHTS_FILE


def epoch_metrics(logits: np.ndarray, labels: np.ndarray, weights: torch.Tensor | None,
                  beta: float = 2.0) -> dict[str, float]:
    """Validation numbers used for monitoring: loss, accuracy, AUROC (one-vs-rest macro), F1; for two classes also
    sensitivity, specificity and F-beta at p = 0.5 (experiment tracking plots them per epoch)."""
    t_logits = torch.from_numpy(logits)
    loss = F.cross_entropy(t_logits, torch.from_numpy(labels), weight=weights).item()
    probs = metrics.softmax(logits)
    if probs.shape[1] == 2:
        report = metrics.binary_report(labels, probs[:, 1], threshold=0.5, beta=beta)
        return {"val_loss": loss, "val_accuracy": report["accuracy"], "val_auroc": report["auroc"] or 0.0,
                "val_f1": report["f1"], "val_sensitivity": report["recall"],
                "val_specificity": report["specificity"], "val_fbeta": report["fbeta"]}
    report = metrics.multiclass_report(labels, probs, [str(i) for i in range(probs.shape[1])])
    return {"val_loss": loss, "val_accuracy": report["accuracy"], "val_auroc": report.get("macro_auroc") or 0.0,
            "val_f1": report["classification_report"]["macro avg"]["f1-score"]}


def finish(session: Session, stopped: bool) -> None:
    """Best checkpoint → predictions, temperature, operating point, out-of-domain model, summary."""
    config, splits, ctx, run, model = session.config, session.splits, session.ctx, session.run, session.model
    if ctx.is_main:
        progress = {**run.status().get("progress", {}), "phase": trainview.STOPPING if stopped else trainview.SCORING}
        if stopped:
            run.set_status("running", progress=progress, message="stop requested: scoring the kept epoch on the "
                           "validation and test images so the run stays usable, then it ends")
        else:
            run.set_status("running", progress=progress)
        model.load_state_dict(load_weights(run.path / WEIGHTS_FILE))
    if ctx.enabled:
        sync_weights(model)

    session.say("scoring validation and test images")
    val_logits, val_labels, val_feats = session.evaluate(splits.val, config.fit_ood)
    test = session.evaluate(splits.test) if splits.test else None
    train_feats = None
    if config.fit_ood:
        ood_idx = splits.train[:: max(1, len(splits.train) // 3000)]  # a few thousand images pin the covariance
        train_feats = session.evaluate(ood_idx, True)[2]
    ood_widths = models.ood_feature_widths(session.model, session.spec)
    if not ctx.is_main:
        return

    samples = splits.cache.samples
    temperature = metrics.fit_temperature(val_logits, val_labels)
    names = splits.class_names
    summary: dict[str, Any] = {"temperature": temperature, "split": splits.description}
    operating: dict[str, Any] = {"temperature": temperature, "beta": config.beta}
    for split, idx, (logits, labels) in (("val", splits.val, (val_logits, val_labels)),
                                         ("test", splits.test, test[:2] if test else (None, None))):
        if logits is None:
            continue
        run.write_predictions(split, [samples[i].path for i in idx], labels, metrics.softmax(logits, temperature),
                              names, patients=[samples[i].patient for i in idx], logits=logits)
    positive = names.index(config.positive_class) if config.positive_class in names else None
    if len(names) == 2:
        positive = 1 if positive is None else positive
        val_prob = metrics.softmax(val_logits, temperature)[:, positive]
        y_val = (val_labels == positive).astype(int)
        threshold, best_fbeta = metrics.best_fbeta_threshold(y_val, val_prob, config.beta)
        operating.update(threshold=threshold, positive_class=names[positive], positive_index=positive,
                         source=f"F{config.beta:g}-optimal on the validation split")
        summary["val"] = metrics.binary_report(y_val, val_prob, threshold, config.beta)
        summary["val_ece"] = metrics.expected_calibration_error(y_val, val_prob)
        if test:
            test_prob = metrics.softmax(test[0], temperature)[:, positive]
            summary["test"] = metrics.binary_report((test[1] == positive).astype(int), test_prob, threshold, config.beta)
    else:
        summary["val"] = metrics.multiclass_report(val_labels, metrics.softmax(val_logits, temperature), names)
        if test:
            summary["test"] = metrics.multiclass_report(test[1], metrics.softmax(test[0], temperature), names)
    run.save_operating_point(**operating)
    if train_feats is not None and len(train_feats) > 2 and val_feats is not None:
        ood = fit_ood(train_feats, val_feats, widths=ood_widths,
                      scored=models.ood_scored_blocks(session.spec))
        save_arrays(run.path / OOD_FILE, ood.to_arrays())
        summary["ood_threshold"] = ood.threshold
    run.write_json(SUMMARY_FILE, summary)
    state = "stopped" if stopped else "finished"
    run.set_status(state, message="stopped by request; best checkpoint kept" if stopped else "finished")
    run.log(state)
    session.progress({"kind": "done", "run": str(run.path), "state": state, "summary": summary})
