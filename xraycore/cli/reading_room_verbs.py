"""The reading-room verb: ``pacs``: find chest studies on a PACS, score every image, optionally file the
results (SR and overlay) back.

One line per image on stdout (``--json``: one JSON object, like ``predict --json``); everything else on
stderr. No patient attribute is asked for or printed.
"""
from __future__ import annotations

import argparse
import json

from xraycore.cli.messages import say
from xraycore.cli.parser import split_names


def cmd_pacs(args: argparse.Namespace) -> int:
    """Find, fetch, score (and store back): one line per image on stdout, everything else on stderr.

    No patient attribute is asked for or printed: images are named by study position, date, series and number.
    """
    from xraycore.reading_room import pacs
    from xraycore.reading_room import pacs_scan
    from xraycore.reading_room import pacs_nodes
    from xraycore.io.intended_use import SkipNonFrontal
    from xraycore.inference.predictor import Predictor
    from xraycore.inference.provenance import of_model

    node = pacs_nodes.from_command_line(args.node, args.host, args.port, args.called_aet, args.calling_aet, args.timeout)
    modalities = tuple(m.upper() for m in split_names(args.modality))
    since = pacs.check_date(args.since) if args.since else None
    predictor = Predictor(args.model)
    model = of_model(args.model) if args.store_results else None
    studies = pacs.find_studies(node, since, modalities)
    say(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} with {'/'.join(modalities)} images on {node}"
        + (f" since {since}" if since else ""))
    skip = None if args.include_non_frontal else SkipNonFrontal()
    scored = failures = stored = already = 0
    recorder = None
    if args.record:  # the CLI records for monitoring only when asked
        from xraycore.monitoring.recording import Recorder

        recorder = Recorder("pacs", predictor.audit_model, store=args.db)
    for item in pacs_scan.scan(node, predictor, studies, modalities=modalities, skip=skip, store_results=args.store_results,
                          model=model, recorder=recorder):
        if isinstance(item, pacs.Notice):
            say(item.message)
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
        say(f"skipped {len(skip.skipped)} non-frontal image(s)")
    say(f"scored {scored - failures} image(s), {failures} could not be read"
        + (f"; results stored for {stored}, already in the PACS for {already}" if args.store_results else ""))
    return 1 if scored and failures == scored else 0
