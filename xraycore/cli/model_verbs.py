"""The model-directory verbs: ``export``, ``bundle``, ``ood-expose`` and ``selfcheck``: what a maintainer does
to a model before it ships, and what an installation checks after.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from xraycore.cli.messages import say


def cmd_selfcheck(args: argparse.Namespace) -> int:
    """Plain PASS/FAIL lines and a verdict; exit status 1 on any mismatch."""
    from xraycore.clinical import releases
    from xraycore.inference import selfcheck

    model = Path(args.model) if args.model else releases.bundled_model_dir()
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


def cmd_export(args: argparse.Namespace) -> int:
    """Export, check against PyTorch, print the exported file; the largest difference goes to stderr."""
    from xraycore.inference.export import export_model

    path, max_difference = export_model(args.model, args.format, Path(args.output) if args.output else None)
    print(path)
    say(f"checked: largest probability difference against PyTorch {max_difference:.2e}")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """Copy a finished run (or an ensemble of runs) into a model directory with its card; print where."""
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


def cmd_ood_expose(args: argparse.Namespace) -> int:
    """Fit each network's outlier-exposure discriminator; the reports as JSON with --json."""
    from xraycore.training.outlier_exposure import expose

    reports = expose(args.model, args.inliers, args.outliers, max_inliers=args.max_inliers, quantile=args.quantile,
                     hold_out_outliers=args.hold_out, cache_dir=args.cache_dir, say=(lambda _: None) if args.json else print)
    if args.json:
        print(json.dumps(reports))
    return 0
