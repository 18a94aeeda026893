"""The argument parser of ``python -m xraycore``: one small function per verb, in the order ``--help`` lists them.

Kept apart from the verbs themselves (training_verbs, scoring_verbs, clinical_verbs, reading_room_verbs,
data_verbs) so that every option and its help text can be read in one place, and so that building the parser
imports nothing a verb needs (no torch).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from xraycore.cli.adapt_verbs import add_adapt_verb
from xraycore.cli.shortcuts_verbs import add_shortcuts_verb
from xraycore.training import config

BACKEND_CHOICES = ("auto", "torch", "onnxruntime")
BACKEND_HELP = ("inference backend: auto (ONNX Runtime on the CPU when the model has an exported graph, see "
                "`export --format onnx`; torch otherwise or on a GPU), torch, or onnxruntime")


def _bool(text: str) -> bool:
    """A true/false option's value; argparse names the converter in its messages, hence the name."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _augment(text: str) -> list[Any]:
    """--augment: a JSON list of specs, or comma-separated names."""
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [name.strip() for name in text.split(",") if name.strip()]


def split_names(text: str) -> list[str]:
    """A comma-separated list (e.g. "DX,CR") as its names, blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


_CONVERTERS = {"bool": _bool, "int": int, "float": float, "text": str, "names": split_names, "specs": _augment}
_METAVARS = {"bool": "{true,false}", "int": "N", "float": "X", "names": "A,B", "specs": "SPECS"}


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, in one argument group per config group; all default to None so a
    preset's (or a --config file's) value survives unless given."""
    for group in config.GROUPS:
        title = group.title if group.title == group.name else f"{group.title} ({group.name})"  # the config file's key
        section = parser.add_argument_group(title, group.settings.__doc__)
        for setting in config.settings(group.name):
            default = str(setting.default).lower() if isinstance(setting.default, bool) else setting.default
            shown = f" (default: {default})" if default not in (None, "", []) and "default" not in setting.help else ""
            section.add_argument(setting.flag, type=_CONVERTERS[setting.kind], default=None, choices=setting.choices,
                                 metavar=None if setting.choices else "FOLDER" if setting.path
                                 else _METAVARS.get(setting.kind, "TEXT"),
                                 help=(setting.help + shown).replace("%", "%%"))


def _add_tta(parser: argparse.ArgumentParser) -> None:
    """--tta / --no-tta, the same for every verb that scores."""
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test-time augmentation (default: the model's own setting)")


def build_parser() -> argparse.ArgumentParser:
    """Every verb with its options; the order here is the order ``python -m xraycore --help`` lists them in."""
    parser = argparse.ArgumentParser(prog="python -m xraycore", description="Pneumonia detection on chest X-rays.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for add_verb in (_add_train, _add_sweep, _add_evaluate, _add_calibrate, _add_ood_expose, _add_operating_point, _add_release,
                     _add_predict, _add_pacs, _add_selfcheck, _add_runs, _add_presets, _add_report, _add_export,
                     _add_bundle, _add_audit, _add_build_dataset, _add_reads,
                     _add_monitor, add_adapt_verb, add_shortcuts_verb):
        add_verb(verbs)
    return parser


def _add_train(verbs: argparse._SubParsersAction) -> None:
    """The train verb: a run, a preset's study or a config file, one option per TrainConfig field."""
    train = verbs.add_parser("train", help="train a model (or a whole preset study)",
                             usage="python -m xraycore train [--config FILE | --preset NAME | --resume RUN_OR_STUDY] "
                                   "[--smoke] [OPTION ...]",
                             description="Train one run, a preset's study, or what a --config file holds; any option "
                                         "given overrides the preset or the file.")
    what = train.add_argument_group("what to train")
    what.add_argument("--config", metavar="FILE", help="settings from a JSON file: one config (grouped as below, or "
                      "flat), a list of them (a study), or a run's config.json (train it again); options given beside "
                      "it override it")
    what.add_argument("--smoke", action="store_true", help="tiny images, few per class, one epoch: checks a recipe end to end in seconds")
    what.add_argument("--resume", metavar="RUN_OR_STUDY", help="continue a stopped or killed run from its last completed epoch, or a whole "
                      "study by its name (finished runs kept, the rest continued or started)")
    what.add_argument("--run-id", help="name the run directory (default: time + backbone)")
    what.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_tracking(what)
    _add_train_options(train)


def _add_tracking(group: argparse._ArgumentGroup) -> None:
    """--tracking-uri / --no-tracking, the same for train and sweep (see xraycore.training.tracking)."""
    group.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking server or store (default: "
                       "$MLFLOW_TRACKING_URI, else sqlite:///<runs folder>/mlflow.db)")
    group.add_argument("--no-tracking", action="store_true", help="do not track this run in MLflow")


def _add_sweep(verbs: argparse._SubParsersAction) -> None:
    """The sweep verb: Optuna over a preset's [search] table; train options given are fixed, not searched."""
    sweep = verbs.add_parser("sweep", help="search a preset's hyper-parameters with Optuna (trials are runs)",
                             usage="python -m xraycore sweep --preset NAME --data DIR --trials N [--timeout S] "
                                   "[--storage FILE] [--smoke] [OPTION ...]")
    what = sweep.add_argument_group("what to search")
    what.add_argument("--trials", type=int, required=True, help="finished (complete or pruned) trials to end with")
    what.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    what.add_argument("--storage", metavar="FILE", help="Optuna journal file (default <runs>/.sweeps/NAME.journal); "
                      "the same command continues a killed sweep")
    what.add_argument("--name", help="the sweep's name (default sweep-PRESET); its trials' study")
    what.add_argument("--smoke", action="store_true", help="tiny images, few per class, two epochs per trial")
    what.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_tracking(what)
    _add_train_options(sweep)


def _add_evaluate(verbs: argparse._SubParsersAction) -> None:
    """The evaluate verb: score a model on labelled class folders."""
    evaluate = verbs.add_parser("evaluate", help="score a model on a folder of class folders")
    evaluate.add_argument("--model", required=True, help="model directory (a run or models/default)")
    evaluate.add_argument("--data", required=True, help="folder with one sub-folder per class")
    evaluate.add_argument("--threshold", type=float, help="operating threshold (default: the model's saved one)")
    evaluate.add_argument("--positive", default=None, help="positive class folder name (default: the model's, PNEUMONIA)")
    evaluate.add_argument("--beta", type=float, default=2.0, help="beta of the reported F-beta")
    _add_tta(evaluate)
    evaluate.add_argument("--ci", action="store_true", help="add bootstrap 95%% confidence intervals")
    evaluate.add_argument("--prevalence", type=float, help="also report precision (PPV) and NPV at this share of "
                          "positives, e.g. 0.1 for a ward where one scan in ten shows pneumonia")
    evaluate.add_argument("--operating-point", metavar="NAME", help="named operating point (default: the active one)")
    evaluate.add_argument("--save", metavar="NAME", help="keep this evaluation (with 95%% CIs) as an external "
                          "evaluation record in the model directory; the model card and the app show it")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help=BACKEND_HELP)


def _add_calibrate(verbs: argparse._SubParsersAction) -> None:
    """The calibrate verb: fit a site's operating point on its labelled sample."""
    calibrate = verbs.add_parser("calibrate", help="fit temperature and threshold on a site's labelled sample and "
                                 "store them as a named operating point of the model")
    calibrate.add_argument("--model", required=True, help="model directory")
    calibrate.add_argument("--data", required=True, help="the site's labelled sample: one sub-folder per class")
    calibrate.add_argument("--name", required=True, help="name of the operating point, e.g. the hospital")
    calibrate.add_argument("--beta", type=float, default=2.0, help="F-beta the threshold maximises (2 favours recall)")
    _add_tta(calibrate)
    calibrate.add_argument("--no-activate", action="store_true", help="store the point without making it active")
    calibrate.add_argument("--json", action="store_true", help="print the stored point as JSON")


def _add_ood_expose(verbs: argparse._SubParsersAction) -> None:
    """The ood-expose verb: outlier exposure for the out-of-domain check."""
    expose = verbs.add_parser("ood-expose", help="teach the out-of-domain check films from elsewhere (outlier exposure)",
                              description="Fit a discriminator of the training images against films the model must "
                                          "not answer for (adults, other hospitals) into each network's out-of-domain "
                                          "check; its threshold is set on the network's validation images.")
    expose.add_argument("--model", required=True, help="model directory (a run or an ensemble)")
    expose.add_argument("--inliers", required=True, help="the folder the model was trained on (class folders)")
    expose.add_argument("--outliers", required=True, help="films from elsewhere (a folder or class folders)")
    expose.add_argument("--max-inliers", type=int, default=2000, help="training images to use at most (a random sample)")
    expose.add_argument("--hold-out", type=int, default=0, metavar="N",
                        help="keep the first N films of each outlier folder out of the fit and report their flag rate")
    expose.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="keep each file's features here, so the next call on this model scores only new films")
    expose.add_argument("--quantile", type=float, default=0.999,
                        help="share of validation images below the discriminator's threshold")
    expose.add_argument("--json", action="store_true", help="print the per-network reports as JSON")


def _add_operating_point(verbs: argparse._SubParsersAction) -> None:
    """The operating-point verb: list, activate, reset, mark, rename or remove a model's points."""
    points = verbs.add_parser("operating-point", help="list, activate or reset a model's named operating points")
    points.add_argument("--model", required=True, help="model directory")
    points.add_argument("--activate", metavar="NAME", help="make NAME the active operating point")
    points.add_argument("--reset", action="store_true", help="go back to the point the model shipped active")
    points.add_argument("--mark-shipped", action="store_true", help="record the active point as the one that ships")
    points.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"), help="give a saved point another name (history kept)")
    points.add_argument("--remove", metavar="NAME", help="retire a saved point or site profile that is neither in use "
                        "nor shipped (a profile's weights go with it; the history keeps the entry)")


def _add_release(verbs: argparse._SubParsersAction) -> None:
    """The release verb: which models readers may score with."""
    release = verbs.add_parser("release", help="release a model for reading (readers see only the bundled model and "
                               "released ones), withdraw it, or list the releases")
    release.add_argument("--model", help="model directory to release (or, with --withdraw, to withdraw)")
    release.add_argument("--withdraw", action="store_true", help="readers stop seeing --model")


def _add_predict(verbs: argparse._SubParsersAction) -> None:
    """The predict verb: score files, optionally with overlays, DICOM results and a PDF."""
    predict = verbs.add_parser("predict", help="score image files")
    predict.add_argument("--model", required=True, help="model directory")
    predict.add_argument("files", nargs="+", help="PNG, JPEG or DICOM files")
    predict.add_argument("--threshold", type=float, help="operating threshold (default: the model's saved one)")
    predict.add_argument("--operating-point", metavar="NAME", help="named operating point (default: the active one)")
    _add_tta(predict)
    predict.add_argument("--cam", metavar="DIR", help="also write Grad-CAM overlays as PNG into DIR")
    predict.add_argument("--cam-method", default="gradcam", help="Grad-CAM method")
    predict.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help=BACKEND_HELP)
    predict.add_argument("--json", action="store_true", help="one JSON line per file")
    predict.add_argument("--dicom-out", metavar="DIR", help="for every scored DICOM, write a Comprehensive SR and a "
                         "Secondary Capture of the Grad-CAM overlay, filed in the source's study, into DIR")
    predict.add_argument("--report", metavar="PDF", help="also write a printable report (PDF): a summary page, then "
                         "one page per image with the scan, overlay, probability, call, model and warnings")
    predict.add_argument("--skip-non-frontal", action="store_true", help="leave out DICOMs whose View Position says "
                         "they are not a frontal view the model reads (e.g. lateral) and say how many were skipped")
    predict.add_argument("--record", action="store_true", help="record each scored film in the store for monitoring "
                         "(`monitor`): the answer, model and point, never a file name or pixels")
    predict.add_argument("--db", metavar="URL", help="with --record: the store (default: $XRAY_DB_URL, else xray.db "
                         "beside the runs folder)")


def _add_pacs(verbs: argparse._SubParsersAction) -> None:
    """The pacs verb: find, score and optionally file results back on a PACS."""
    pacs = verbs.add_parser("pacs", help="find chest studies on a PACS, score every image, optionally store the "
                            "results (SR and overlay) back")
    pacs.add_argument("--node", help="a configured PACS node by name (.streamlit/pacs_nodes.toml or $XRAY_PACS_NODES)")
    pacs.add_argument("--host", help="or any PACS host name or address (a terminal's choice; the app: configured only)")
    pacs.add_argument("--port", type=int, help="its DICOM port (with --host)")
    pacs.add_argument("--called-aet", help="the PACS's AE title (with --host)")
    pacs.add_argument("--calling-aet", help="this workbench's AE title (default: the node's, else XRAY)")
    pacs.add_argument("--since", metavar="YYYYMMDD", help="studies from this date on (default: all)")
    pacs.add_argument("--modality", default="DX,CR", help="modalities to score, comma-separated (default DX,CR)")
    pacs.add_argument("--model", required=True, help="model directory")
    pacs.add_argument("--store-results", action="store_true", help="store a Comprehensive SR and the overlay "
                      "(Secondary Capture) of every scored image back into its study (C-STORE)")
    pacs.add_argument("--include-non-frontal", action="store_true", help="also score images whose View Position "
                      "says they are not a frontal view (skipped by default, with a count)")
    pacs.add_argument("--timeout", type=float, help="seconds to wait for the PACS (default: the node's, else 30)")
    pacs.add_argument("--record", action="store_true", help="record each scored image in the store for monitoring")
    pacs.add_argument("--db", metavar="URL", help="with --record: the store (default: $XRAY_DB_URL, else xray.db "
                      "beside the runs folder)")
    pacs.add_argument("--json", action="store_true", help="one JSON line per image, like predict --json")


def _add_selfcheck(verbs: argparse._SubParsersAction) -> None:
    """The selfcheck verb: this installation against the model's reference answers."""
    selfcheck = verbs.add_parser("selfcheck", help="check this installation: score the bundled samples and compare "
                                 "probabilities, heat maps and the weights' sha256 with the model's reference values")
    selfcheck.add_argument("--model", help="model directory (default: the bundled model, or $XRAY_MODEL_DIR)")
    selfcheck.add_argument("--samples", metavar="DIR", help="sample scans (default: models/samples or $XRAY_SAMPLES_DIR)")
    selfcheck.add_argument("--write-reference", action="store_true", help="maintainers: record this installation's "
                           "answers as the model's reference values (selfcheck.json)")


def _add_runs(verbs: argparse._SubParsersAction) -> None:
    """The runs verb: list the training runs."""
    listing = verbs.add_parser("runs", help="list training runs")
    listing.add_argument("--root", help="runs folder (default ./runs or $XRAY_RUNS_DIR)")
    listing.add_argument("--json", action="store_true", help="JSON lines")


def _add_presets(verbs: argparse._SubParsersAction) -> None:
    """The presets verb: the named recipes, or the backbones."""
    presets = verbs.add_parser("presets", help="list the named recipes from the studies")
    presets.add_argument("--backbones", action="store_true", help="list the backbones instead")
    presets.add_argument("--show", metavar="NAME", help="print one preset in full")


def _add_report(verbs: argparse._SubParsersAction) -> None:
    """The report verb: a study's HTML report."""
    report = verbs.add_parser("report", help="write a self-contained HTML report of a study")
    report.add_argument("study", help="study name (or a run id)")
    report.add_argument("--root", help="runs folder")
    report.add_argument("--output", help="HTML file (default: <root>/<study>.html)")


def _add_export(verbs: argparse._SubParsersAction) -> None:
    """The export verb: TorchScript or ONNX, checked against PyTorch."""
    export = verbs.add_parser("export", help="export a model to TorchScript or ONNX and check it")
    export.add_argument("--model", required=True, help="model directory")
    export.add_argument("--format", choices=("torchscript", "onnx"), required=True, help="torchscript or onnx")
    export.add_argument("--output", help="output file (default: inside the model directory)")


def _add_bundle(verbs: argparse._SubParsersAction) -> None:
    """The bundle verb: a finished run (or an ensemble) into a shippable model directory."""
    bundle = verbs.add_parser("bundle", help="copy a finished run into a shippable model directory with a model card")
    bundle.add_argument("--model", required=True, help="finished run directory")
    bundle.add_argument("--output", required=True, help="destination, e.g. models/default")
    bundle.add_argument("--command-file", required=True, help="file holding the exact training command (for the card)")
    bundle.add_argument("--section", action="append", default=[], metavar="TITLE=FILE",
                        help="extra card section from a Markdown file (repeatable)")
    bundle.add_argument("--member", action="append", default=[], metavar="RUN",
                        help="bundle an ensemble instead: every --member run (and --model) averaged")
    bundle.add_argument("--tta", action="store_true", help="ensemble: flip test-time augmentation by default")


def _add_audit(verbs: argparse._SubParsersAction) -> None:
    """The audit verb: read the audit trail, filtered."""
    trail = verbs.add_parser("audit", help="read the audit trail: who scored, changed, launched or was refused what")
    trail.add_argument("--since", help="only lines since then: 30m, 24h, 7d or an ISO date/time such as 2026-11-29")
    trail.add_argument("--user", help="only this user (e-mail address, or name for the local user)")
    trail.add_argument("--action", help="only this action or family, e.g. score, operating_point, run.launch")
    trail.add_argument("--log", help="audit log file (default: $XRAY_AUDIT_LOG, else audit.jsonl in the runs folder)")
    trail.add_argument("--json", action="store_true", help="one JSON object per line, as stored")


def _add_build_dataset(verbs: argparse._SubParsersAction) -> None:
    """The build-dataset verb: class folders made from existing folders."""
    build = verbs.add_parser("build-dataset", help="make a class-folder dataset from existing folders (symlinks)")
    build.add_argument("kind", choices=("kermany-3class", "merge"),
                       help="kermany-3class: NORMAL / BACTERIAL / VIRAL from a Kermany folder; merge: combine class folders")
    build.add_argument("--source", action="append", default=[],
                       help="kermany-3class: the Kermany train folder; merge: CLASS=FOLDER (repeatable)")
    build.add_argument("--output", required=True, help="folder to create")
    build.add_argument("--copy", action="store_true", help="copy files instead of symlinking")


def _add_reads(verbs: argparse._SubParsersAction) -> None:
    """The reads verb: radiologists' reads of scored films, kept in the store ($XRAY_DB_URL)."""
    reads = verbs.add_parser("reads", help="radiologists' reads: add, import, list, export, stats, keep-films "
                             "(the store: $XRAY_DB_URL, default xray.db beside the runs)")
    sub = reads.add_subparsers(dest="reads_verb", required=True, metavar="ACTION",
                               help="add, import, list, export, stats or keep-films (each has its own --help)")
    for name, text in (("add", "score FILEs with the model and record your read of each"),
                       ("import", "score a labelled sample (one sub-folder per read) and record its reads")):
        verb = sub.add_parser(name, help=text)
        if name == "add":
            verb.add_argument("files", nargs="+", help="PNG, JPEG or DICOM files")
            verb.add_argument("--read", required=True, help="your final read: a class of the model, other or uncertain")
        else:
            verb.add_argument("folder", help="folder of sub-folders named by read (e.g. NORMAL/, PNEUMONIA/)")
        verb.add_argument("--model", help="model directory (default: the bundled model, or $XRAY_MODEL_DIR)")
        verb.add_argument("--reference", choices=("report", "CT", "follow-up", "consensus"),
                          help="what the read rests on")
        verb.add_argument("--heatmap-on-region", type=_bool, metavar="yes|no",
                          help="was the heat map on the relevant region?")
    listing = sub.add_parser("list", help="the current reads (--history: every row, corrections and deletions)")
    listing.add_argument("--since", help="ISO date/time or a span such as 7d, 12h")
    listing.add_argument("--history", action="store_true", help="every row, superseded ones included")
    listing.add_argument("--json", action="store_true", help="one JSON object per read")
    export = sub.add_parser("export", help="class folders of the kept read films (PNG named by sha256) for "
                            "calibrate, evaluate and adapt")
    export.add_argument("--output", required=True, help="folder to write CLASS/<sha256>.png into")
    stats = sub.add_parser("stats", help="reads per class and reader, agreement with the model, Cohen's kappa")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    keep = sub.add_parser("keep-films", help="keep read films' pixels for site learning: on or off (admin), or show it")
    keep.add_argument("state", nargs="?", choices=("on", "off"), help="on or off; left out: show the setting and its "
                      "history")


def _add_monitor(verbs: argparse._SubParsersAction) -> None:
    """The monitor verb: drift, expected and realised performance and alerts over the recorded scored films."""
    from xraycore.cli.monitor_verbs import CBPE_ASSUMES

    monitor = verbs.add_parser(
        "monitor", help="is the model still working? drift, expected performance and alerts over the scored films",
        description="Per window of recorded scored films: n, positive_rate (95% Wilson interval), ood_rate, "
                    "guard_rate, psi (logit, 10 quantile bins of the reference; warn > 0.1, alert > 0.2), "
                    "wasserstein (in reference standard deviations), expected_* and realised_* (where reads "
                    "exist), alerts. " + CBPE_ASSUMES + " An alert needs two consecutive "
                    "windows over a limit or one over twice it. Exit status 1 while an alert is active.")
    monitor.add_argument("--model", help="model directory (default: $XRAY_MODEL_DIR, else the bundled models/default)")
    monitor.add_argument("--since", help="only films scored since this date, e.g. 2026-11-29 (UTC)")
    monitor.add_argument("--window", default="week", help="week, day, or N consecutive films (default: week)")
    monitor.add_argument("--reference", metavar="NAME", help="compare with the films operating point NAME was fitted "
                         "on (default: the answering point's; 'internal' = internal validation)")
    monitor.add_argument("--db", metavar="URL", help="the store (default: $XRAY_DB_URL, else xray.db beside the runs)")
    monitor.add_argument("--json", action="store_true", help="one JSON object per window, exactly the keys above "
                         "plus start and end")
