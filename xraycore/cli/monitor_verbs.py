"""The monitoring verb: ``monitor`` (is the model still working? drift, expected and realised performance, alerts).

Exit status 1 while an alert is active, so cron and a hospital's monitoring system can watch it; 2 with one
sentence when the store cannot be read or the model keeps no reference.
"""
from __future__ import annotations

import argparse
import json

from xraycore.cli.messages import say

CBPE_ASSUMES = ("expected_accuracy, expected_sensitivity and expected_specificity are estimated without labels from "
                "the calibrated probabilities (confidence-based performance estimation, CBPE); they assume the "
                "calibration still holds on the new films and that there is no concept shift (the same image means "
                "the same truth as when the point was fitted). An out-of-domain surge or a score shift breaks the "
                "first assumption: trust the realised figures (from reads) then.")


def _number(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _line(window: dict) -> str:
    interval = window["positive_rate_ci95"]
    band = f" [{interval[0]:.2f}-{interval[1]:.2f}]" if interval else ""
    realised = (f"  realised acc {_number(window['realised_accuracy'])} (n={window['realised_n']})"
                if window["realised_n"] else "")
    return (f"{window['start'][:16]}  n={window['n']:<6} positive {_number(window['positive_rate'], 2)}{band}  "
            f"ood {_number(window['ood_rate'], 2)}  guard {_number(window['guard_rate'], 2)}  "
            f"psi {_number(window['psi'])}  W {_number(window['wasserstein'])}  "
            f"expected acc {_number(window['expected_accuracy'])}{realised}")


def cmd_monitor(args: argparse.Namespace) -> int:
    """Print one line (or JSON object) per window, then the alerts; 1 while one is active."""
    from xraycore.clinical.releases import bundled_model_dir
    from xraycore.monitoring.report import NO_FILMS, monitor, parse_since
    from xraycore.monitoring.windows import parse_window
    from xraycore.store.database import StoreUnavailable

    model = args.model or str(bundled_model_dir())
    try:
        report = monitor(model, since=parse_since(args.since), window=parse_window(args.window),
                         reference=args.reference, store=args.db)
    except StoreUnavailable as error:
        raise RuntimeError(str(error)) from None
    if args.json:
        for window in report.windows:
            print(json.dumps(window))
    else:
        say(f"Model {model}, operating point {report.operating_point}; reference: {report.reference}; "
            f"{report.films} films.")
        for window in report.windows:
            print(_line(window))
    if report.empty:
        say(NO_FILMS)
    for sentence in report.alerts:
        say(f"ALERT: {sentence}")
    return 1 if report.alerts else 0
