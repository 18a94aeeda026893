"""The data verb: ``build-dataset``: a class-folder dataset made from folders already on disk (symlinks, or
copies), printed as its counts per class.
"""
from __future__ import annotations

import argparse
import json


def cmd_build(args: argparse.Namespace) -> int:
    """Make the class folders and print their counts per class as one JSON object."""
    from xraycore import data

    if args.kind == "kermany-3class":
        if len(args.source) != 1:
            raise ValueError("kermany-3class takes one --source: the Kermany train folder")
        counts = data.build_kermany_3class(args.source[0], args.output, link=not args.copy)
    else:
        sources: dict[str, list[str]] = {}
        for item in args.source:
            name, _, folder = item.partition("=")
            if not folder:
                raise ValueError(f"--source must be CLASS=FOLDER, got {item!r}")
            sources.setdefault(name, []).append(folder)
        counts = data.merge_class_folders(sources, args.output, link=not args.copy)
    print(json.dumps(counts))
    return 0
