"""The shortcuts verb: where a model's heat maps look on a labelled folder, and what blanking regions does.

Its own module because the report is a job of its own (issue 33) and the other verb groups are near their size
limit. Output meant for programs (``--json``) goes to stdout, progress and messages to stderr.
"""
from __future__ import annotations

import argparse
import json

from xraycore.cli.messages import say
from xraycore.inference.backends.choice import AUTO, ONNXRUNTIME, TORCH


def add_shortcuts_verb(verbs: argparse._SubParsersAction) -> None:
    """The shortcuts verb's options (here, not in parser.py, which is at its size limit)."""
    report = verbs.add_parser("shortcuts", help="does the model look at the lungs? heat-map mass in the outer band "
                              "and on the lung fields, occlusion probes, each with a bootstrap 95%% CI and a "
                              "pass/fail at documented limits (docs/heat-maps.md)")
    report.add_argument("--model", required=True, help="model directory (a run or models/default)")
    report.add_argument("--data", required=True, help="folder of class folders (e.g. NORMAL/, PNEUMONIA/)")
    report.add_argument("--positive", help="the positive class (default: the model's)")
    report.add_argument("--backend", choices=(AUTO, TORCH, ONNXRUNTIME), default=AUTO,
                        help="inference backend, as for evaluate (default: auto)")
    report.add_argument("--save", metavar="NAME", help="keep the report with the model (shortcuts/NAME.json): the "
                        "model card and the Compare page show it")
    report.add_argument("--json", action="store_true", help="one JSON object on stdout")


def cmd_shortcuts(args: argparse.Namespace) -> int:
    """The report as a table (or one JSON object with --json); exit status 0 whether or not it passes."""
    from xraycore.evaluation import shortcuts
    from xraycore.evaluation.shortcut_probes import shortcut_report

    result = shortcut_report(args.model, args.data, positive=args.positive, backend=args.backend,
                             progress=lambda done, total: say(f"probed {done} of {total} films"))
    if args.save:
        result["saved_as"] = str(shortcuts.save_report(args.model, args.save, result))
        say(f"kept the report as {result['saved_as']}")
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['model']} on {result['data']}: {result['n']} films ({result['n_positive']} positive), "
          f"{result['not_scored']} not scored, {result['empty_heatmaps']} empty heat maps, lung fields not found on "
          f"{result['lungs_not_found']}; "
          f"{result['seconds']} s")
    for row in shortcuts.figure_rows(result):
        print(f"{row['verdict']:>7}  {row['value (95% CI)']:<24} n={row['n']:<4} {row['limit']:<8} {row['figure']}")
    verdict = {True: "every limit met", False: "some limits NOT met", None: "nothing could be judged"}
    print(verdict[result["passed"]])
    return 0
