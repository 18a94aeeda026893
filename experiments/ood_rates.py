"""Out-of-domain flag rates of a model: on its own validation split (should be ~1%), on adult
X-rays from other hospitals (covid_qu: should be high) and on generated colour photographs.

Usage: python experiments/ood_rates.py [--model models/default] [--n 1000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, REPO, report  # noqa: E402
from xraycore import Predictor  # noqa: E402


def flag_rate(predictor: Predictor, files: list[Path]) -> dict:
    flags = [p.out_of_domain for p in predictor.predict_files(files, batch_size=32) if p.ok]
    return {"n": len(flags), "flagged": int(np.sum(flags)), "rate": round(float(np.mean(flags)), 4) if flags else None}


def colour_photos(folder: Path, n: int = 20) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        blocks = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(blocks).resize((256, 256), Image.Resampling.BICUBIC)
        paths.append(folder / f"photo{i}.png")
        image.save(paths[-1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--n", type=int, default=1000, help="per covid_qu class")
    args = parser.parse_args()
    predictor = Predictor(args.model, device="cpu")
    val = predictor.run.predictions("val")
    val_files = [Path(f) for f in val["file"]] if val else []
    result = {"kermany_validation": flag_rate(predictor, [f for f in val_files if f.exists()])}
    for name in ("COVID", "Normal"):
        folder = DATA / "covid_qu" / name
        files = sorted(p for p in folder.iterdir() if p.is_file())[: args.n]
        result[f"covid_qu_{name}"] = flag_rate(predictor, files)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result["colour_photographs"] = flag_rate(predictor, colour_photos(Path(tmp)))
    threshold = predictor.ood.threshold if predictor.ood is not None else None  # an ensemble: one per member
    report("out-of-domain flag rates", {"model": args.model, "threshold": threshold, **result})


if __name__ == "__main__":
    main()
