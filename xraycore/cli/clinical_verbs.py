"""The clinical-governance verbs: ``calibrate`` (a site's operating point), ``operating-point`` (which one
answers), ``release`` (which models readers see) and ``audit`` (who did what).

A verb that changes shared settings acts as the operating-system user (every role) and writes an audit
line, as the app does; the checks and the audit happen inside xraycore.clinical and xraycore.access.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit and store a site's operating point; print it (or, with --json, the stored record)."""
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


def cmd_operating_point(args: argparse.Namespace) -> int:
    """Change which named point answers (activate, reset, mark shipped) or which are kept (rename, remove), then
    list the points."""
    from xraycore.clinical import operating_points as operating

    if args.activate:
        operating.activate(args.model, args.activate)
    elif args.reset:
        print(f"reset to the shipped point {operating.reset(args.model)!r}")
    elif args.mark_shipped:
        print(f"{operating.mark_shipped(args.model)!r} is now the point this model ships with")
    elif getattr(args, "rename", None):
        operating.rename(args.model, *args.rename)
    elif getattr(args, "remove", None):
        operating.remove(args.model, args.remove)
        print(f"removed {args.remove!r}")
    state = operating.load(args.model)
    for name, point in state["points"].items():
        marker, shipped = "*" if name == state["active"] else " ", " (shipped)" if name == state["shipped"] else ""
        print(f"{marker} {name}{shipped}: threshold {point.get('threshold')}, temperature {point.get('temperature')}, "
              f"{point.get('source', '')}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """Release or withdraw a model for readers, or list the releases (clinical.releases does the checks)."""
    from xraycore.clinical import releases

    if args.withdraw and not args.model:
        raise ValueError("--withdraw needs --model DIR: the model readers should stop seeing")
    return releases.main(args.model, args.withdraw)


def cmd_audit(args: argparse.Namespace) -> int:
    """The audit trail, filtered: one readable line (or the stored JSON object) per entry."""
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
