"""The reads so far as a labelled sample: class folders of the kept films that ``calibrate``, ``evaluate`` and
``adapt`` take (``reads export`` and the Site page).

One film, one label: a film enters its read's folder when every current read of it agrees and is one of the
model's classes (``other`` and ``uncertain`` say nothing a class folder can hold), and only while its pixels are
kept. Each file is the film's grey pixels at the network's input size, named by their sha256: no file name, no
header. What is left out is counted, so the caller can say why the sample is smaller than the reads.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from xraycore.store import reads
from xraycore.store.database import Store
from xraycore.store.schema import OTHER_FINDING, UNCERTAIN


def export_reads(store: Store, output: str | Path) -> dict[str, Any]:
    """Write the class folders under ``output``; ``{"written": {class: n}, "pixels_not_kept", "readers_disagree",
    "other_or_uncertain"}``."""
    from PIL import Image

    by_film: dict[str, set[str]] = defaultdict(set)
    for row in reads.current_reads(store):
        by_film[row["film_sha256"]].add(row["read"])
    written: dict[str, int] = defaultdict(int)
    counts: dict[str, Any] = {"pixels_not_kept": 0, "readers_disagree": 0, "other_or_uncertain": 0}
    output = Path(output)
    for film, found in sorted(by_film.items()):
        if len(found) > 1:
            counts["readers_disagree"] += 1
            continue
        read = next(iter(found))
        if read in (OTHER_FINDING, UNCERTAIN):
            counts["other_or_uncertain"] += 1
            continue
        pixels = reads.kept_pixels(store, film)
        if pixels is None:
            counts["pixels_not_kept"] += 1
            continue
        (output / read).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(output / read / f"{film}.png")
        written[read] += 1
    return {"written": dict(written), **counts}


def describe_export(counts: dict[str, Any], output: str | Path) -> str:
    """One sentence: how many films went where, and why the others did not."""
    return (f"{sum(counts['written'].values())} film(s) written to {output}; {counts['pixels_not_kept']} read "
            f"film(s) left out because their pixels are not kept, {counts['readers_disagree']} because readers "
            f"disagree, {counts['other_or_uncertain']} read as other or uncertain")
