"""``python -m xraycore VERB ...``: everything the app does, from a terminal.

Verbs: train, evaluate, predict, runs, presets, report, export, build-dataset, calibrate, operating-point,
bundle, audit, pacs, selfcheck. A verb that changes shared settings acts as the operating-system user (every role) and
writes an audit line like the app does. Output meant for other
programs (``--json``) goes to stdout; progress and messages go to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from xraycore.training import config

BACKEND_CHOICES = ("auto", "torch", "onnxruntime")
BACKEND_HELP = ("inference backend: auto (ONNX Runtime on the CPU when the model has an exported graph, see "
                "`export --format onnx`; torch otherwise or on a GPU), torch, or onnxruntime")

def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _augment(text: str) -> list[Any]:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [name.strip() for name in text.split(",") if name.strip()]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


_CONVERTERS = {"bool": _bool, "int": int, "float": float, "text": str, "names": _names, "specs": _augment}
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
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="flip test-time augmentation (default: the model's own setting)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xraycore", description="Pneumonia detection on chest X-rays.")
    verbs = parser.add_subparsers(dest="verb", required=True)

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
    _add_train_options(train)

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

    calibrate = verbs.add_parser("calibrate", help="fit temperature and threshold on a site's labelled sample and "
                                 "store them as a named operating point of the model")
    calibrate.add_argument("--model", required=True, help="model directory")
    calibrate.add_argument("--data", required=True, help="the site's labelled sample: one sub-folder per class")
    calibrate.add_argument("--name", required=True, help="name of the operating point, e.g. the hospital")
    calibrate.add_argument("--beta", type=float, default=2.0, help="F-beta the threshold maximises (2 favours recall)")
    _add_tta(calibrate)
    calibrate.add_argument("--no-activate", action="store_true", help="store the point without making it active")
    calibrate.add_argument("--json", action="store_true", help="print the stored point as JSON")

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

    points = verbs.add_parser("operating-point", help="list, activate or reset a model's named operating points")
    points.add_argument("--model", required=True, help="model directory")
    points.add_argument("--activate", metavar="NAME", help="make NAME the active operating point")
    points.add_argument("--reset", action="store_true", help="go back to the point the model shipped active")
    points.add_argument("--mark-shipped", action="store_true", help="record the active point as the one that ships")

    release = verbs.add_parser("release", help="release a model for reading (readers see only the bundled model and "
                               "released ones), withdraw it, or list the releases")
    release.add_argument("--model", help="model directory to release (or, with --withdraw, to withdraw)")
    release.add_argument("--withdraw", action="store_true", help="readers stop seeing --model")

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
    pacs.add_argument("--json", action="store_true", help="one JSON line per image, like predict --json")

    selfcheck = verbs.add_parser("selfcheck", help="check this installation: score the bundled samples and compare "
                                 "probabilities, heat maps and the weights' sha256 with the model's reference values")
    selfcheck.add_argument("--model", help="model directory (default: the bundled model, or $XRAY_MODEL_DIR)")
    selfcheck.add_argument("--samples", metavar="DIR", help="sample scans (default: models/samples or $XRAY_SAMPLES_DIR)")
    selfcheck.add_argument("--write-reference", action="store_true", help="maintainers: record this installation's "
                           "answers as the model's reference values (selfcheck.json)")

    listing = verbs.add_parser("runs", help="list training runs")
    listing.add_argument("--root", help="runs folder (default ./runs or $XRAY_RUNS_DIR)")
    listing.add_argument("--json", action="store_true", help="JSON lines")

    presets = verbs.add_parser("presets", help="list the named recipes from the studies")
    presets.add_argument("--backbones", action="store_true", help="list the backbones instead")
    presets.add_argument("--show", metavar="NAME", help="print one preset in full")

    report = verbs.add_parser("report", help="write a self-contained HTML report of a study")
    report.add_argument("study", help="study name (or a run id)")
    report.add_argument("--root", help="runs folder")
    report.add_argument("--output", help="HTML file (default: <root>/<study>.html)")

    export = verbs.add_parser("export", help="export a model to TorchScript or ONNX and check it")
    export.add_argument("--model", required=True, help="model directory")
    export.add_argument("--format", choices=("torchscript", "onnx"), required=True, help="torchscript or onnx")
    export.add_argument("--output", help="output file (default: inside the model directory)")

    bundle = verbs.add_parser("bundle", help="copy a finished run into a shippable model directory with a model card")
    bundle.add_argument("--model", required=True, help="finished run directory")
    bundle.add_argument("--output", required=True, help="destination, e.g. models/default")
    bundle.add_argument("--command-file", required=True, help="file holding the exact training command (for the card)")
    bundle.add_argument("--section", action="append", default=[], metavar="TITLE=FILE",
                        help="extra card section from a Markdown file (repeatable)")
    bundle.add_argument("--member", action="append", default=[], metavar="RUN",
                        help="bundle an ensemble instead: every --member run (and --model) averaged")
    bundle.add_argument("--tta", action="store_true", help="ensemble: flip test-time augmentation by default")

    trail = verbs.add_parser("audit", help="read the audit trail: who scored, changed, launched or was refused what")
    trail.add_argument("--since", help="only lines since then: 30m, 24h, 7d or an ISO date/time such as 2026-11-29")
    trail.add_argument("--user", help="only this user (e-mail address, or name for the local user)")
    trail.add_argument("--action", help="only this action or family, e.g. score, operating_point, run.launch")
    trail.add_argument("--log", help="audit log file (default: $XRAY_AUDIT_LOG, else audit.jsonl in the runs folder)")
    trail.add_argument("--json", action="store_true", help="one JSON object per line, as stored")

    build = verbs.add_parser("build-dataset", help="make a class-folder dataset from existing folders (symlinks)")
    build.add_argument("kind", choices=("kermany-3class", "merge"),
                       help="kermany-3class: NORMAL / BACTERIAL / VIRAL from a Kermany folder; merge: combine class folders")
    build.add_argument("--source", action="append", default=[],
                       help="kermany-3class: the Kermany train folder; merge: CLASS=FOLDER (repeatable)")
    build.add_argument("--output", required=True, help="folder to create")
    build.add_argument("--copy", action="store_true", help="copy files instead of symlinking")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "runs": cmd_runs,
        "presets": cmd_presets, "report": cmd_report, "export": cmd_export, "build-dataset": cmd_build,
        "bundle": cmd_bundle, "calibrate": cmd_calibrate, "ood-expose": cmd_ood_expose, "operating-point": cmd_operating_point, "audit": cmd_audit,
        "pacs": cmd_pacs, "selfcheck": cmd_selfcheck, "release": cmd_release,
    }[args.verb]
    try:
        return handler(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ verbs
def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from xraycore.training import distributed
    from xraycore.training import presets
    from xraycore.training import studies
    from xraycore.training import loop as train
    from xraycore.cli.progress_bars import TqdmProgress

    reports = distributed.is_main_process()  # under torchrun only rank 0 talks; the others just train
    reporter = TqdmProgress(enabled=not args.quiet) if reports else (lambda event: None)
    if args.resume:
        root = Path(args.out) if args.out else None
        if studies.names_a_study(args.resume, root):
            paths = studies.resume_study(args.resume, reporter, root=root)
        else:
            paths = [train.resume(args.resume, reporter, root=root)]
    else:
        given = {name: getattr(args, name) for name in config.option_names() if getattr(args, name) is not None}
        if args.config:
            configs = presets.override(config.read_file(args.config), given, smoke=args.smoke)
        else:
            configs = presets.expand(given, smoke=args.smoke)
        paths = studies.launch(configs, reporter, run_id=args.run_id)
    if reports:
        for path in paths:
            print(path)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from xraycore.evaluation.external import evaluate_folder, save_evaluation
    from xraycore.inference.predictor import Predictor

    predictor = Predictor(args.model, threshold=args.threshold, operating_point=args.operating_point, backend=args.backend)
    result = evaluate_folder(args.model, args.data, threshold=args.threshold, positive=args.positive,
                             beta=args.beta, tta=args.tta, with_ci=args.ci or bool(args.save), prevalence=args.prevalence,
                             operating_point=args.operating_point, predictor=predictor)
    result["backend"] = predictor.backend
    if args.save:
        result["saved_as"] = str(save_evaluation(args.model, args.save, args.data, result))
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("n", "accuracy", "precision", "recall", "specificity", "f1", "auroc", "threshold", "operating_point",
                    "backend"):
            print(f"{key:>12}: {result[key]}")
        print(f"{'confusion':>12}: {result['confusion_matrix']}  ([[tn, fp], [fn, tp]])")
        if "at_prevalence" in result:
            shifted = result["at_prevalence"]
            print(f"{'at prevalence':>12} {shifted['prevalence']:g}: precision (PPV) {shifted['ppv']}, NPV {shifted['npv']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from xraycore.access import policy as access
    from xraycore.io.intended_use import SkipNonFrontal
    from xraycore.inference.predictor import Predictor

    predictor = Predictor(args.model, threshold=args.threshold, operating_point=args.operating_point,
                          backend=args.backend)
    cam_dir = Path(args.cam) if args.cam else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    skip = SkipNonFrontal() if args.skip_non_frontal else None
    dicom_dir = Path(args.dicom_out) if args.dicom_out else None
    model = None
    if dicom_dir or args.report:
        from xraycore.inference.provenance import of_model

        model = of_model(args.model)
    kept = []  # small display copies for the PDF report
    failures, answered = 0, 0
    wants_cam = cam_dir is not None or dicom_dir is not None or bool(args.report)
    for prediction in predictor.predict_files(args.files, tta=args.tta, cam=args.cam_method if wants_cam else None,
                                              skip=skip, identity=access.terminal_identity()):
        failures += not prediction.ok
        answered += 1
        if cam_dir and prediction.overlay is not None:
            from PIL import Image

            Image.fromarray(prediction.overlay).save(cam_dir / (Path(prediction.name).stem + "_cam.png"))
        if dicom_dir and prediction.ok and prediction.metadata.get("format") == "dicom":
            _write_dicom_results(dicom_dir, prediction, model)
        if args.report:
            from xraycore.inference.display import for_display

            kept.append(for_display(prediction))
        if args.json:
            print(json.dumps(prediction.to_json()), flush=True)
        elif prediction.ok:
            for guard in prediction.guards:  # the DICOM says: outside the model's intended population
                print(f"{prediction.name}: warning: {guard}")
            flag = "  [out of domain]" if prediction.out_of_domain else ""
            answer = f"not assessed: {prediction.not_assessed}" if prediction.not_assessed else \
                f"{prediction.label} (p={prediction.to_json()['probability']:.3f})"
            print(f"{prediction.name}: {answer}{flag}")
        else:
            print(f"{prediction.name}: error: {prediction.error}")
    if skip is not None:
        _say(f"skipped {len(skip.skipped)} non-frontal DICOM file(s)")
    if args.report:
        from xraycore.reading_room.pdf_report import build

        Path(args.report).write_bytes(build(kept, threshold=predictor.threshold,
                                            operating_point=predictor.operating_point, model=model))
        _say(f"wrote the report to {args.report}")
    return 1 if answered and failures == answered else 0


def _write_dicom_results(directory: Path, prediction: Any, model: Any) -> None:
    """The SR and overlay of one scored DICOM file; a source that cannot take them is named, the batch goes on."""
    from xraycore.reading_room import dicom_out

    try:
        source = dicom_out.read_source(Path(prediction.name))
        paths = dicom_out.write_results(directory, Path(prediction.name).stem, source,
                                        dicom_out.Finding.from_prediction(prediction), prediction.overlay, model)
    except dicom_out.DicomOutError as error:
        _say(f"{prediction.name}: no DICOM result written: {error}")
        return
    _say(f"{prediction.name}: wrote {', '.join(path.name for path in paths)}")


def cmd_pacs(args: argparse.Namespace) -> int:
    """Find, fetch, score (and store back): one line per image on stdout, everything else on stderr.

    No patient attribute is asked for or printed: images are named by study position, date, series and number.
    """
    from xraycore.reading_room import pacs
    from xraycore.reading_room import pacs_nodes
    from xraycore.io.intended_use import SkipNonFrontal
    from xraycore.inference.predictor import Predictor
    from xraycore.inference.provenance import of_model

    node = pacs_nodes.from_command_line(args.node, args.host, args.port, args.called_aet, args.calling_aet, args.timeout)
    modalities = tuple(m.upper() for m in _names(args.modality))
    since = pacs.check_date(args.since) if args.since else None
    predictor = Predictor(args.model)
    model = of_model(args.model) if args.store_results else None
    studies = pacs.find_studies(node, since, modalities)
    _say(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} with {'/'.join(modalities)} images on {node}"
         + (f" since {since}" if since else ""))
    skip = None if args.include_non_frontal else SkipNonFrontal()
    scored = failures = stored = already = 0
    for item in pacs.scan(node, predictor, studies, modalities=modalities, skip=skip, store_results=args.store_results,
                          model=model):
        if isinstance(item, pacs.Notice):
            _say(item.message)
            continue
        prediction = item.prediction
        scored += 1
        failures += not prediction.ok
        stored, already = stored + bool(item.stored), already + bool(item.already and not item.stored)
        if args.json:
            print(json.dumps(item.to_json()), flush=True)
        elif prediction.ok:
            flag = "  [out of domain]" if prediction.out_of_domain else ""
            print(f"{prediction.name}: {prediction.label} (p={prediction.to_json()['probability']:.3f}){flag}", flush=True)
        else:
            print(f"{prediction.name}: error: {prediction.error}", flush=True)
    if skip is not None:
        _say(f"skipped {len(skip.skipped)} non-frontal image(s)")
    _say(f"scored {scored - failures} image(s), {failures} could not be read"
         + (f"; results stored for {stored}, already in the PACS for {already}" if args.store_results else ""))
    return 1 if scored and failures == scored else 0


def cmd_selfcheck(args: argparse.Namespace) -> int:
    """Plain PASS/FAIL lines and a verdict; exit status 1 on any mismatch."""
    from xraycore.clinical.releases import bundled_model_dir
    from xraycore.inference import selfcheck

    model = Path(args.model) if args.model else bundled_model_dir()
    if args.write_reference:
        samples = None
        if args.samples:
            from xraycore.data import IMAGE_SUFFIXES

            root = Path(args.samples)
            samples = sorted(p for p in root.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        path = selfcheck.write_reference(model, samples)
        print(f"wrote the reference values to {path}")
        return 0
    try:
        checks = selfcheck.run(model, args.samples)
    except selfcheck.ReferenceMissing as error:
        print(f"self-check cannot run: {error}")
        return 1
    for check in checks:
        print(check.line())
    print(selfcheck.summary(checks))
    return 0 if all(check.passed for check in checks) else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from xraycore.runs import directory as runs

    for run in runs.list_runs(Path(args.root) if args.root else None):
        summary = run.summary()
        if args.json:
            print(json.dumps(summary, default=str))
        else:
            print(f"{summary['id']:<48} {summary.get('state', '?'):<12} {summary.get('backbone') or '':<22} {summary.get('study') or ''}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from xraycore.models import registry as models
    from xraycore.training import presets

    if args.backbones:
        for name in models.list_backbones():
            spec = models.get_spec(name)
            print(f"{name:<24} {spec.input_size:>4}px  {'heavy for a CPU' if spec.heavy else ''}")
        return 0
    if args.show:
        print(json.dumps(presets.load(args.show), indent=2))
        return 0
    for name in presets.names():
        preset = presets.load(name)
        print(f"{name:<22} {', '.join(preset['backbones']):<70} {preset['source']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from xraycore.evaluation.study_report import write_study_report

    path = write_study_report(args.study, root=Path(args.root) if args.root else None,
                              output=Path(args.output) if args.output else None)
    print(path)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from xraycore.inference.export import export_model

    path, max_difference = export_model(args.model, args.format, Path(args.output) if args.output else None)
    print(path)
    _say(f"checked: largest probability difference against PyTorch {max_difference:.2e}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from xraycore.evaluation.model_card import bundle_model

    extra = {}
    for item in args.section:
        title, _, path = item.partition("=")
        extra[title] = Path(path).read_text(encoding="utf-8")
    command = Path(args.command_file).read_text(encoding="utf-8")
    if args.member:
        from xraycore.evaluation.model_card import bundle_ensemble

        print(bundle_ensemble([args.model, *args.member], Path(args.output), command, extra, tta=args.tta))
    else:
        print(bundle_model(args.model, Path(args.output), command, extra))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from xraycore import data

    if args.kind == "kermany-3class":
        if len(args.source) != 1:
            raise ValueError("kermany-3class takes one --source: the Kermany train folder")
        counts = data.build_kermany_3class(args.source[0], args.output, link=not args.copy)
    else:
        sources: dict[str, list[str]] = {}
        for item in args.source:
            name, _, folder = item.partition("=")
            if not folder:
                raise ValueError(f"--source must be CLASS=FOLDER, got {item!r}")
            sources.setdefault(name, []).append(folder)
        counts = data.merge_class_folders(sources, args.output, link=not args.copy)
    print(json.dumps(counts))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from xraycore.clinical import operating_points as operating
    from xraycore.evaluation.site_calibration import calibrate_folder

    point = calibrate_folder(args.model, args.data, args.name, beta=args.beta, activate=not args.no_activate, tta=args.tta)
    if args.json:
        print(json.dumps(point))
        return 0
    report, ci, state = point["site_report"], point["site_ci95"], "stored, not active" if args.no_activate else "active"
    print(f"operating point {point['name']!r} ({state}): threshold {point['threshold']:.4f}, "
          f"temperature {point['temperature']:.3f}, F{point['beta']:g}-optimal on {point['n']} images")
    for key in ("accuracy", "recall", "specificity", "precision"):
        low, high = (ci.get(key) or [None, None, None])[1:]
        interval = f" (95% CI {low:.3f}-{high:.3f})" if low is not None else ""
        print(f"{key:>12}: {report[key]:.4f}{interval}   on the sample itself (optimistic); CI: refitted on resamples")
    print(operating.describe_cross_fit(point.get("site_cross_fitted")))
    return 0


def cmd_ood_expose(args: argparse.Namespace) -> int:
    from xraycore.training.outlier_exposure import expose

    reports = expose(args.model, args.inliers, args.outliers, max_inliers=args.max_inliers, quantile=args.quantile,
                     hold_out_outliers=args.hold_out, cache_dir=args.cache_dir, say=(lambda _: None) if args.json else print)
    if args.json:
        print(json.dumps(reports))
    return 0


def cmd_operating_point(args: argparse.Namespace) -> int:
    from xraycore.clinical import operating_points as operating

    if args.activate:
        operating.activate(args.model, args.activate)
    elif args.reset:
        print(f"reset to the shipped point {operating.reset(args.model)!r}")
    elif args.mark_shipped:
        print(f"{operating.mark_shipped(args.model)!r} is now the point this model ships with")
    state = operating.load(args.model)
    for name, point in state["points"].items():
        marker, shipped = "*" if name == state["active"] else " ", " (shipped)" if name == state["shipped"] else ""
        print(f"{marker} {name}{shipped}: threshold {point.get('threshold')}, temperature {point.get('temperature')}, "
              f"{point.get('source', '')}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from xraycore.clinical import releases

    if args.withdraw and not args.model:
        raise ValueError("--withdraw needs --model DIR: the model readers should stop seeing")
    return releases.main(args.model, args.withdraw)


def cmd_audit(args: argparse.Namespace) -> int:
    from xraycore.access import audit

    entries = audit.read(Path(args.log) if args.log else None, since=audit.parse_since(args.since) if args.since else None,
                         user=args.user, action=args.action)
    for entry in entries:
        if args.json:
            print(json.dumps(entry, sort_keys=True))
            continue
        model = entry.get("model") or {}
        parts = [entry.get("time", "?"), f"{entry.get('user') or '-'} ({entry.get('role') or 'no role'})",
                 entry.get("action", "?"), entry.get("outcome", "?")]
        if model:
            parts.append(f"model {model.get('name')} sha256:{str(model.get('sha256') or '-')[:12]}")
        for key in ("operating_point", "target", "counts"):
            if entry.get(key) is not None:
                parts.append(f"{key.replace('_', ' ')} {entry[key]}")
        if "old" in entry or "new" in entry:
            parts.append(f"{entry.get('old')} -> {entry.get('new')}")
        if entry.get("detail"):
            parts.append(str(entry["detail"]))
        print("  ".join(str(part) for part in parts))
    return 0
