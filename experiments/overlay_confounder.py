"""Which classes carry the "KVnn" overlay one of the hospital's X-ray units prints bottom right?

The bundled model's site errors concentrate in a run of consecutive normal films (NORMAL2-IM-0201 to 0238 in
kermany_site) from a unit that prints its tube voltage ("KV59") in the bottom-right corner. This counts, per class,
the films of a folder whose corner matches that print, with templates cut from one TRAINING film only
(normalised cross-correlation of the "KV" letters, and of "KV" plus two digits, over the corner): in the training
split the print is found on pneumonia films only, so the unit's look is confounded with the label. Recall is
partial (faint prints are missed); a match above the threshold was a visible print in every case looked at.
Optionally writes the matched files, e.g. to train without them (`--write-matches FILE`).

Usage: python experiments/overlay_confounder.py [FOLDER ...] [--threshold 0.55] [--write-matches FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA  # noqa: E402
from xraycore.data import list_images  # noqa: E402

SIDE = 224  # the films are compared at the size the training split ships at
TEMPLATE_FILM = "PNEUMONIA/person1026_virus_1718.jpeg"  # a training film with a clear "KV59" print
TEMPLATE_TOP, TEMPLATE_LEFT, TEMPLATE_HEIGHT = 212, 207, 10
TEMPLATE_WIDTHS = (9, 16)  # "KV" alone (the digits vary), and "KV" with its two digits
CORNER = (slice(194, SIDE), slice(176, SIDE))  # rows, columns searched
MIN_CONTRAST = 20.0  # grey-level spread below which a window cannot hold printed text


def grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize((SIDE, SIDE)), dtype=np.float32)


def standardised(patch: np.ndarray) -> np.ndarray:
    return (patch - patch.mean()) / (patch.std() + 1e-6)


def templates(train_dir: Path) -> list[np.ndarray]:
    film = grey(train_dir / TEMPLATE_FILM)
    rows = slice(TEMPLATE_TOP, TEMPLATE_TOP + TEMPLATE_HEIGHT)
    return [standardised(film[rows, TEMPLATE_LEFT:TEMPLATE_LEFT + width]) for width in TEMPLATE_WIDTHS]


def overlay_score(image: np.ndarray, kernels: list[np.ndarray]) -> float:
    """Highest normalised cross-correlation of any template with any window of the corner (-1: no text-like window)."""
    corner, best = image[CORNER], -1.0
    for kernel in kernels:
        windows = np.lib.stride_tricks.sliding_window_view(corner, kernel.shape)
        mean = windows.mean(axis=(-1, -2), keepdims=True)
        spread = windows.std(axis=(-1, -2), keepdims=True)
        correlation = (((windows - mean) / (spread + 1e-6)) * kernel).mean(axis=(-1, -2))
        correlation[spread[..., 0, 0] < MIN_CONTRAST] = -1.0
        best = max(best, float(correlation.max()))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path,
                        default=[DATA / "chest_xray" / "train", DATA / "kermany_site"])
    parser.add_argument("--train", type=Path, default=DATA / "chest_xray" / "train", help="where the template film is")
    parser.add_argument("--threshold", type=float, default=0.55)
    parser.add_argument("--write-matches", type=Path, help="write the matched files (CLASS/name), one per line")
    args = parser.parse_args()
    kernels = templates(args.train)
    matched: list[str] = []
    for folder in args.folders:
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = list_images(class_dir)
            hits = [f for f in files if overlay_score(grey(f), kernels) > args.threshold]
            matched += [f"{class_dir.name}/{f.name}" for f in hits]
            shown = ", ".join(f.name for f in hits[:10]) + (" ..." if len(hits) > 10 else "")
            print(f"{folder.name}/{class_dir.name}: {len(hits)} of {len(files)} films carry the print"
                  + (f" ({shown})" if hits else ""), flush=True)
    if args.write_matches:
        args.write_matches.write_text("".join(f"{line}\n" for line in matched))


if __name__ == "__main__":
    main()
