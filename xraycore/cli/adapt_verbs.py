"""The ``adapt`` verb: fine-tune a model on a site's labelled films into a site profile, with a progress bar.

Apart from clinical_verbs (which is near its size limit) because it has its own options and its own progress bar.
Like ``calibrate``, it acts as the operating-system user and the checks and the audit happen inside xraycore
(:mod:`xraycore.evaluation.site_adaptation`).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tqdm import tqdm

# site_adaptation.METHODS, kept here so that building the parser imports no model code (a test holds them equal)
METHODS = ("last-stage", "head", "last-two-blocks", "full")


def add_adapt_verb(verbs: argparse._SubParsersAction) -> None:
    """The adapt verb's options."""
    adapt = verbs.add_parser("adapt", help="fine-tune every network of a model on a site's labelled films and store "
                                           "the result as a site profile (an operating point; the original weights "
                                           "are untouched)")
    adapt.add_argument("--model", required=True, help="model directory")
    adapt.add_argument("--data", required=True, help="the site's labelled films: one sub-folder per class")
    adapt.add_argument("--name", required=True, help="name of the site profile, e.g. the hospital")
    adapt.add_argument("--method", choices=METHODS, default=None,
                       help="what adapts: the last stage and the head (last-stage, the default), the classifier "
                            "(head), the last stage with the last block before it (last-two-blocks), or every layer "
                            "(full: slow on a CPU)")
    adapt.add_argument("--epochs", type=int, default=None, help="passes over the site's films (default: the method's)")
    adapt.add_argument("--replay", metavar="TRAIN_DIR", help="class folders of training films mixed in against forgetting")
    adapt.add_argument("--band-penalty", type=float, default=None, metavar="W",
                       help="weight of the penalty on heat-map mass in the film's outer band, where markers and text "
                            "sit (default: the shipped recipe's; 0: none)")
    adapt.add_argument("--lung-penalty", type=float, default=None, metavar="W",
                       help="weight of the penalty on heat-map mass outside each film's lung-field estimate "
                            "(default: the shipped recipe's; 0: none)")
    adapt.add_argument("--no-erasing-views", action="store_true",
                       help="train on views whose border and corners are never painted over")
    adapt.add_argument("--no-activate", action="store_true", help="store the profile without making it active")
    adapt.add_argument("--json", action="store_true", help="print the stored operating point as JSON")


class _Bars:
    """One tqdm bar per stage of the adaptation, on stderr."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.bar is None or self.bar.desc != stage:
            self.close()
            self.bar = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_adapt(args: argparse.Namespace) -> int:
    """Adapt, store, and print the cross-fitted figures before and after side by side."""
    from xraycore.evaluation import site_adaptation

    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    remedies: dict[str, Any] = {"erasing_views": not args.no_erasing_views}
    for option, weight in (("band_penalty", args.band_penalty), ("lung_penalty", args.lung_penalty)):
        if weight is not None and weight < 0:
            raise ValueError(f"--{option.replace('_', '-')} must be 0 or more")
        if weight is not None:
            remedies[option] = weight
    bars = _Bars()
    try:
        point = site_adaptation.adapt_folder(args.model, args.data, args.name,
                                             method=args.method or site_adaptation.DEFAULT_METHOD, epochs=args.epochs,
                                             replay=args.replay, activate=not args.no_activate, progress=bars,
                                             **remedies)
    finally:
        bars.close()
    if args.json:
        print(json.dumps(point))
        return 0
    state = "stored, not active" if args.no_activate else "active"
    print(f"site profile {point['name']!r} ({state}): {point['method']}, {point['n']} films "
          f"({point['n_positive']} {point['positive_class']}, {point['n_negative']} other), "
          f"{point['n_out_of_domain']} left out as out of domain; threshold {point['threshold']:.4f}, "
          f"temperature {point['temperature']:.3f}")
    for row in site_adaptation.describe_figures(point["before"], point["site_cross_fitted"]):
        print(row)
    return 0
