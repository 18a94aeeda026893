"""The sweep verb: ``sweep --preset NAME --data DIR --trials N``: an Optuna search over the preset's ``[search]``
table, every trial a training run (see xraycore.training.sweep); prints the best run and the one ``bundle`` command
that ships it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xraycore.training import config


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or continue) a sweep; its best run on stdout, the bundle command on stderr."""
    from xraycore.cli.progress_bars import TqdmProgress
    from xraycore.evaluation.run_artifacts import track_figures
    from xraycore.runs import directory as runs
    from xraycore.training import sweep, tracking

    tracking.configure(enabled=False if args.no_tracking else None, uri=args.tracking_uri)
    given = {name: getattr(args, name) for name in config.option_names()
             if getattr(args, name) is not None and name not in ("preset", "data", "out", "study")}
    if not args.preset or not args.data:
        raise ValueError("sweep needs --preset NAME (whose [search] table says what to try) and --data DIR")
    if args.trials < 1:
        raise ValueError("--trials must be at least 1")
    root = runs.runs_root(Path(args.out) if args.out else None).resolve()
    name = runs.sanitize_run_id(args.name or sweep.default_name(args.preset, args.smoke))
    plan = sweep.SweepPlan(preset=args.preset, data=args.data, trials=args.trials, name=name, out=str(root),
                           storage=Path(args.storage) if args.storage else sweep.storage_path(name, root),
                           smoke=args.smoke, timeout=args.timeout, given=given)
    plan.space = sweep.search_space(args.preset, given, args.smoke)
    reporter = TqdmProgress(enabled=not args.quiet)
    try:
        study = sweep.run_sweep(plan, reporter)
    except sweep.SweepStopped as stopped:
        print(f"stopped: {stopped}", file=sys.stderr)
        return 1
    for row in sweep.trial_rows(name, storage=plan.storage):
        if row["run"] and (root / row["run"]).is_dir():
            track_figures(root / row["run"])
    best = sweep.best_run(study, root)
    counts = {state: sum(1 for row in sweep.trial_rows(name, storage=plan.storage) if row["state"] == state)
              for state in ("complete", "pruned", "fail")}
    print(f"{name}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed trials "
          f"(journal {plan.storage})", file=sys.stderr)
    if best is None:
        print("no trial completed", file=sys.stderr)
        return 1
    print(f"best: trial {study.best_trial.number}, validation AUROC {study.best_value:.4f}, {study.best_trial.params}",
          file=sys.stderr)
    print(f"ship it: {sweep.bundle_command(plan, best)}", file=sys.stderr)
    print(best.path)
    return 0
