"""The training verbs: ``train``, ``runs``, ``presets`` and ``report``: start or resume runs and studies, then
look at what they made.

Training itself lives in xraycore.training; these functions turn parsed options into its calls and print
the run directories (stdout), progress going to stderr.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from xraycore.training import config


def cmd_train(args: argparse.Namespace) -> int:
    """Train, resume or launch a study; print each run directory (under torchrun: rank 0 only)."""
    from xraycore.training import distributed
    from xraycore.training import presets
    from xraycore.training import studies
    from xraycore.training import loop as train
    from xraycore.cli.progress_bars import TqdmProgress

    from xraycore.training import tracking

    tracking.configure(enabled=False if args.no_tracking else None, uri=args.tracking_uri)
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
        from xraycore.runs import directory as runs

        for path in paths:
            if tracking.run_id_of(runs.Run(path)):  # the card and figures; plotly is imported only then
                from xraycore.evaluation.run_artifacts import track_figures

                track_figures(path)
            print(path)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """One line (or JSON line) per training run in the runs folder."""
    from xraycore.runs import directory as runs
    from xraycore.training import tracking

    for run in runs.list_runs(Path(args.root) if args.root else None):
        summary = {**run.summary(), "mlflow_run_id": tracking.run_id_of(run), "pruned": bool(run.status().get("pruned"))}
        if args.json:
            print(json.dumps(summary, default=str))
        else:
            state = "pruned" if summary["pruned"] else summary.get("state") or "?"
            print(f"{summary['id']:<48} {state:<12} {summary.get('backbone') or '':<22} {summary.get('study') or '':<24} "
                  f"{summary['mlflow_run_id'] or ''}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """The named recipes, one preset in full (--show), or the backbones (--backbones)."""
    from xraycore import models
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
    """Write a study's HTML report and print its path."""
    from xraycore.evaluation.study_report import write_study_report

    path = write_study_report(args.study, root=Path(args.root) if args.root else None,
                              output=Path(args.output) if args.output else None)
    print(path)
    return 0
