"""The scoring verbs: ``predict`` (files → one answer per file, optionally overlays, DICOM results and a PDF)
and ``evaluate`` (a labelled folder → the numbers).

Output meant for programs (``--json``) goes to stdout, messages to stderr (messages.say).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from xraycore.cli.messages import say


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a labelled folder: the numbers as aligned lines, or one JSON object with --json."""
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
    """One line per file (or a JSON line each with --json); exit status 1 only when every file failed."""
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
    recorder = _recorder(args, predictor)
    kept = []  # small display copies for the PDF report
    failures, answered = 0, 0
    wants_cam = cam_dir is not None or dicom_dir is not None or bool(args.report)
    for prediction in predictor.predict_files(args.files, tta=args.tta, cam=args.cam_method if wants_cam else None,
                                              skip=skip, identity=access.terminal_identity()):
        failures += not prediction.ok
        answered += 1
        if recorder is not None and (recorded := recorder.record([prediction])).problem:
            say(f"{prediction.name}: {recorded.problem}")
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
        say(f"skipped {len(skip.skipped)} non-frontal DICOM file(s)")
    if args.report:
        from xraycore.reading_room.pdf_report import build

        Path(args.report).write_bytes(build(kept, threshold=predictor.threshold,
                                            operating_point=predictor.operating_point, model=model))
        say(f"wrote the report to {args.report}")
    return 1 if answered and failures == answered else 0


def _recorder(args: argparse.Namespace, predictor: Any) -> Any:
    """With --record, the store each scored film is recorded in (monitoring); None without it."""
    if not args.record:
        return None
    from xraycore.monitoring.recording import Recorder

    return Recorder("cli", predictor.audit_model, store=args.db)


def _write_dicom_results(directory: Path, prediction: Any, model: Any) -> None:
    """The SR and overlay of one scored DICOM file; a source that cannot take them is named, the batch goes on."""
    from xraycore.reading_room import dicom_out

    try:
        source = dicom_out.read_source(Path(prediction.name))
        paths = dicom_out.write_results(directory, Path(prediction.name).stem, source,
                                        dicom_out.Finding.from_prediction(prediction), prediction.overlay, model)
    except dicom_out.DicomOutError as error:
        say(f"{prediction.name}: no DICOM result written: {error}")
        return
    say(f"{prediction.name}: wrote {', '.join(path.name for path in paths)}")
