"""xray: a pneumonia-detection workbench for chest X-rays. The rooms, one subpackage per job:

    io/            files → image: PNG/JPEG/DICOM reading, typed read errors, intended-use facts
    data/          class folders, patients, splits, decode, cache, augmentation
    models/        the backbone registry (facts as data), builders, weights sources
    training/      loop, validation scoring, optimisation, checkpoints, distributed, config, presets, studies,
                   background jobs and their queue, outlier exposure
    inference/     the Predictor, Prediction, model directories, backends (torch, ONNX Runtime), export,
                   provenance, self-check
    explain/       CAM from the forward pass and Grad-CAM overlays
    ood/           out-of-domain distances
    metrics/       pure metric functions over numpy arrays
    evaluation/    external evaluations, site calibration, comparisons, figures, study reports, model cards
    clinical/      which threshold answers: operating points, releases, triage
    reading_room/  PACS networking, the worklist, DICOM results (SR, overlay capture), PDF reports
    access/        identities, roles, confined paths, the audit trail
    runs/          run directories on disk, process liveness
    app/           everything that imports streamlit (pages/ and app.py call it)
    cli/           ``python -m xraycore VERB``

docs/architecture.md says what each room may import and how a film flows from upload to SR.

The names a script needs are importable from here, each from its module on first use, so ``import xraycore``
is cheap and pulls in no torch (a reading-room install has none)::

    from xraycore import Predictor, read_xray, evaluate, calibrate, train, TrainConfig

    predictor = Predictor("models/default")
    for prediction in predictor.predict_files(["a.dcm", "b.png"]):
        print(prediction.name, prediction.label, prediction.positive_probability)
    report = evaluate("models/default", "site/")          # site/NORMAL/*, site/PNEUMONIA/*
    run_dir = train(TrainConfig(data="data/train", backbone="resnet18", epochs=5))

Reading:     read_xray, XrayImage, XrayReadError
Scoring:     Predictor, Prediction, open_model
Evaluating:  evaluate (a model on a labelled folder), score_folder, save_evaluation, list_evaluations,
             calibrate (site calibration of a labelled folder, stored as a named operating point),
             adapt (site adaptation of a labelled folder, stored as a site profile)
Training:    train, resume, TrainConfig, list_backbones, build_model, fit_exposure (outlier exposure)
Runs:        Run, open_run, list_runs
Shipping:    bundle_model, bundle_ensemble, export_model, selfcheck
"""
from __future__ import annotations

import importlib
from typing import Any

_API = {  # public name -> (module under xraycore, its name there)
    "read_xray": ("io.reader", "read_xray"),
    "XrayImage": ("io.reader", "XrayImage"),
    "XrayReadError": ("io.reader", "XrayReadError"),
    "Predictor": ("inference.predictor", "Predictor"),
    "Prediction": ("inference.prediction", "Prediction"),
    "open_model": ("inference.model_directory", "open_model"),
    "evaluate": ("evaluation.external", "evaluate_folder"),
    "score_folder": ("evaluation.external", "score_folder"),
    "save_evaluation": ("evaluation.external", "save_evaluation"),
    "list_evaluations": ("evaluation.external", "list_evaluations"),
    "calibrate": ("evaluation.site_calibration", "calibrate_folder"),
    "adapt": ("evaluation.site_adaptation", "adapt_folder"),
    "train": ("training.loop", "train"),
    "resume": ("training.loop", "resume"),
    "TrainConfig": ("training.config", "TrainConfig"),
    "list_backbones": ("models.registry", "list_backbones"),
    "build_model": ("models.builder", "build_model"),
    "fit_exposure": ("training.outlier_exposure", "fit_exposure"),
    "Run": ("runs.directory", "Run"),
    "open_run": ("runs.directory", "open_run"),
    "list_runs": ("runs.directory", "list_runs"),
    "bundle_model": ("evaluation.model_card", "bundle_model"),
    "bundle_ensemble": ("evaluation.model_card", "bundle_ensemble"),
    "export_model": ("inference.export", "export_model"),
    "selfcheck": ("inference.selfcheck", "run"),
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (training's and export's bring torch with them).

    Subpackages are not listed here: ``from xraycore import metrics`` finds no such attribute and Python then
    imports the subpackage, as it always has."""
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _API[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
