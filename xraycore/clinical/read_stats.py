"""What the reads so far say: per class, per reader, agreement with the model, and Cohen's kappa between
readers who read the same films (the Site page and ``reads stats``).

Over the current reads only (corrections replace what they supersede, deletions remove). A reader who read a
film twice counts once there, with their latest read.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from xraycore.metrics.agreement import cohen_kappa
from xraycore.store.database import Store
from xraycore.store.reads import current_reads


def reads_stats(store: Store, since: dt.datetime | None = None) -> dict[str, Any]:
    """``{"reads", "per_class", "per_reader", "ai_agreement", "kappa"}`` over the current reads."""
    rows = current_reads(store, since)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:  # oldest first: the latest read of a film by a reader wins
        latest[(row["reader"], row["film_sha256"])] = row
    per_reader: dict[str, dict[str, Any]] = {}
    for reader in sorted({reader for reader, _ in latest}):
        mine = [row for (who, _), row in latest.items() if who == reader]
        per_reader[reader] = {"reads": len(mine), "per_class": dict(Counter(row["read"] for row in mine)),
                              **_agreement(mine)}
    return {"reads": len(rows), "films": len({row["film_sha256"] for row in rows}),
            "per_class": dict(Counter(row["read"] for row in rows)), "per_reader": per_reader,
            "ai_agreement": _agreement(rows), "kappa": _kappas(latest)}


def _agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    compared = [row["agrees"] for row in rows if row["agrees"] is not None]
    agree = sum(bool(value) for value in compared)
    return {"compared_with_ai": len(compared), "agree_with_ai": agree,
            "ai_agreement_rate": agree / len(compared) if compared else None}


def _kappas(latest: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    by_reader: dict[str, dict[str, str]] = defaultdict(dict)
    for (reader, film), row in latest.items():
        by_reader[reader][film] = row["read"]
    found = []
    for first, second in combinations(sorted(by_reader), 2):
        films = sorted(set(by_reader[first]) & set(by_reader[second]))
        if not films:
            continue
        kappa = cohen_kappa([by_reader[first][f] for f in films], [by_reader[second][f] for f in films])
        found.append({"readers": [first, second], "films": len(films),
                      "kappa": None if math.isnan(kappa) else round(kappa, 4)})
    return found
