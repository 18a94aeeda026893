"""``python -m xraycore reads ...``: radiologists' reads from a terminal (issue 29).

``reads add FILE... --read CLASS`` scores each file with the model and records the terminal user's read;
``reads import DIR`` does the same for a labelled sample (one sub-folder per read); ``reads list``, ``reads
stats`` and ``reads export --output DIR`` (class folders of the kept films, named by sha256, that
``calibrate``, ``evaluate`` and ``adapt`` take) read the store; ``reads keep-films on|off`` is the admin setting.
The reader is the operating-system user (:func:`xraycore.access.terminal_identity`); checks and audit lines
happen inside ``xraycore.clinical.site_reads``. File names appear on this terminal only, never in the store.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable

from xraycore.cli.messages import say


def cmd_reads(args: argparse.Namespace) -> int:
    """Hand the sub-verb to its function."""
    return {"add": _add, "import": _import, "list": _list, "export": _export, "stats": _stats,
            "keep-films": _keep_films}[args.reads_verb](args)


def _store():  # type: ignore[no-untyped-def]
    from xraycore.clinical.site_store import open_site_store

    return open_site_store()


def _add(args: argparse.Namespace) -> int:
    return _record(args, [(str(path), Path(path), args.read) for path in args.files])


def _import(args: argparse.Namespace) -> int:
    from xraycore.evaluation.external import folder_items

    return _record(args, folder_items(args.folder))


def _record(args: argparse.Namespace, items: Iterable[tuple[str, Any, str]]) -> int:
    """Score every (name, source, read) with the model and record the read; 1 when any film failed."""
    from xraycore.clinical import site_reads
    from xraycore.inference.predictor import Predictor
    from xraycore.inference.provenance import of_model
    from xraycore.inference.read_record import record_prediction_read

    items = list(items)
    model_dir = Path(args.model) if args.model else _bundled_model()
    predictor, provenance, store = Predictor(model_dir), of_model(model_dir), _store()
    choices = site_reads.read_choices(predictor.class_names)
    unknown = sorted({read for _, _, read in items} - set(choices))
    if unknown:
        raise ValueError(f"A read is one of {', '.join(choices)}; {', '.join(unknown)} is not.")
    reads = {name: read for name, _, read in items}
    failed, kept = 0, site_reads.keep_films(store)
    for prediction in predictor.predict_sources((name, source) for name, source, _ in items):
        if not prediction.ok:
            failed += 1
            say(f"{prediction.name}: not recorded: {prediction.error}")
            continue
        read_id = record_prediction_read(store, prediction, provenance, reads[prediction.name], None,
                                         classes=predictor.class_names, reference=args.reference,
                                         heatmap_on_region=args.heatmap_on_region)
        say(f"{prediction.name}: read {read_id} recorded: {reads[prediction.name]} "
                f"(model: {prediction.label or 'no call'})")
    say(f"{len(items) - failed} read(s) recorded in {store.where}; film pixels "
            f"{'kept' if kept else 'not kept (keep-films is off)'}")
    return 1 if failed else 0


def _bundled_model() -> Path:
    from xraycore.clinical.releases import bundled_model_dir

    return bundled_model_dir()


def _list(args: argparse.Namespace) -> int:
    from xraycore.access.audit import parse_since
    from xraycore.store import reads

    store = _store()
    since = parse_since(args.since) if args.since else None
    rows = reads.all_reads(store) if args.history else reads.current_reads(store, since)
    if args.history and since is not None:
        rows = [row for row in rows if row["created"] >= since]
    for row in rows:
        shown = {**row, "created": row["created"].isoformat()}
        if args.json:
            print(json.dumps(shown, sort_keys=True))
            continue
        change = f" (supersedes {row['supersedes']})" if row["supersedes"] else ""
        print(f"{row['id']:>6} {shown['created']} {row['kind']}{change} film {row['film_sha256'][:12]} "
              f"read {row['read']} model {row['ai_call']} agrees {row['agrees']} by {row['reader']} ({row['role']})")
    if not args.json:
        say(f"{len(rows)} read(s) in {store.where}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """Class folders of the kept films (clinical.read_export), and why the others were left out."""
    from xraycore.clinical.read_export import describe_export, export_reads

    counts = export_reads(_store(), args.output)
    print(json.dumps(counts, sort_keys=True))
    say(describe_export(counts, args.output))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from xraycore.clinical.read_stats import reads_stats

    stats = reads_stats(_store())
    if args.json:
        print(json.dumps(stats, sort_keys=True))
        return 0
    print(f"{stats['reads']} current read(s) of {stats['films']} film(s)")
    print("per class: " + (", ".join(f"{name} {n}" for name, n in sorted(stats["per_class"].items())) or "none"))
    overall = stats["ai_agreement"]
    rate = overall["ai_agreement_rate"]
    print(f"agreement with the model: {overall['agree_with_ai']} of {overall['compared_with_ai']}"
          + (f" ({rate:.1%})" if rate is not None else ""))
    for reader, mine in stats["per_reader"].items():
        print(f"  {reader}: {mine['reads']} read(s), agrees with the model on {mine['agree_with_ai']} of "
              f"{mine['compared_with_ai']}")
    for pair in stats["kappa"]:
        kappa = "undefined" if pair["kappa"] is None else f"{pair['kappa']:.3f}"
        print(f"Cohen's kappa {' vs '.join(pair['readers'])}: {kappa} on {pair['films']} film(s)")
    return 0


def _keep_films(args: argparse.Namespace) -> int:
    from xraycore.clinical import site_reads

    store = _store()
    if args.state is not None:
        site_reads.set_keep_films(store, args.state == "on")
    state = "on" if site_reads.keep_films(store) else "off"
    print(f"{site_reads.KEEP_FILMS_LABEL}: {state}")
    for change in site_reads.keep_films_history(store):
        print(f"  {change['changed'].isoformat()} {change['value']} by {change['changed_by']}", file=sys.stderr)
    return 0
