"""``python -m xraycore VERB ...``: everything the app does, from a terminal.

This module parses the command line (parser.build_parser) and hands the verb to its group's module:
training_verbs (train, runs, presets, report), sweep_verbs (sweep), scoring_verbs (predict, evaluate), model_verbs
(export, bundle, ood-expose, selfcheck), clinical_verbs (calibrate, operating-point, release, audit), adapt_verbs
(adapt), reading_room_verbs (pacs), data_verbs (build-dataset), reads_verbs (reads), monitor_verbs (monitor) and
shortcuts_verbs (shortcuts). A verb that changes shared settings acts as the operating-system user (every role)
and writes an audit line like the app does. Output meant for other programs (``--json``) goes to stdout; progress
and messages go to stderr. A plain-language error exits with status 2.
"""
from __future__ import annotations

import sys
from typing import Sequence

from xraycore.cli import (adapt_verbs, clinical_verbs, data_verbs, model_verbs, reading_room_verbs, reads_verbs,
                          scoring_verbs, shortcuts_verbs, sweep_verbs, training_verbs)
from xraycore.cli.monitor_verbs import cmd_monitor
from xraycore.cli.parser import build_parser

HANDLERS = {
    "train": training_verbs.cmd_train, "runs": training_verbs.cmd_runs, "presets": training_verbs.cmd_presets,
    "report": training_verbs.cmd_report, "sweep": sweep_verbs.cmd_sweep,
    "evaluate": scoring_verbs.cmd_evaluate, "predict": scoring_verbs.cmd_predict,
    "export": model_verbs.cmd_export, "bundle": model_verbs.cmd_bundle, "ood-expose": model_verbs.cmd_ood_expose,
    "selfcheck": model_verbs.cmd_selfcheck,
    "calibrate": clinical_verbs.cmd_calibrate, "operating-point": clinical_verbs.cmd_operating_point,
    "release": clinical_verbs.cmd_release, "audit": clinical_verbs.cmd_audit,
    "pacs": reading_room_verbs.cmd_pacs,
    "build-dataset": data_verbs.cmd_build,
    "reads": reads_verbs.cmd_reads,
    "monitor": cmd_monitor,
    "adapt": adapt_verbs.cmd_adapt,
    "shortcuts": shortcuts_verbs.cmd_shortcuts,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; its exit status, or 2 with one ``error: ...`` line on stderr for bad input it refused."""
    args = build_parser().parse_args(argv)
    handler = HANDLERS[args.verb]
    try:
        return handler(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError, PermissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
