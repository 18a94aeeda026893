"""Site adaptation's tail training: what the heat-map penalties cost (goal: `adapt` on 200 films <= 10 min).

Two measurements, each against a bare baseline in the same run, on the default ensemble's MobileNetV2 member with
cached views of random films (the timing does not depend on the pixels):
- one penalty step, forward and backward: the band and lung shares weighed on the 7 x 7 feature grid (the product,
  `adaptation.weighted_share` over precomputed `region_weights`) against the same shares of the CAM upsampled to
  224 x 224 and masked pixel by pixel (`adaptation.class_cams`, the bare way, as it was done before);
- a whole `fit_tail` with the shipped remedies and the lung penalty against the same fit without any penalty.
Usage: python benchmarks/bench_adapt.py [--films 160] [--epochs 4]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, best_of, report  # noqa: E402
from xraycore.inference.predictor import Predictor  # noqa: E402
from xraycore.metrics.regions import band_mask  # noqa: E402
from xraycore.training import adaptation  # noqa: E402

SIZE = 224


def _lungs(films: int, views: int) -> torch.Tensor:
    lungs = torch.zeros((films, views, SIZE, SIZE), dtype=torch.bool)
    lungs[..., 40:180, 30:100] = True
    lungs[..., 40:180, 124:194] = True
    return lungs


def penalty_steps(features: torch.Tensor, classifier: torch.nn.Module, lungs: torch.Tensor) -> dict:
    """One batch's band and lung shares with their gradient, on the feature grid against on the pixels."""
    band = torch.from_numpy(band_mask((SIZE, SIZE)))
    grid = features.shape[-2:]
    everywhere = adaptation.region_weights(torch.ones((SIZE, SIZE)), grid, SIZE)
    band_w, lung_w = adaptation.region_weights(band, grid, SIZE), adaptation.region_weights(lungs, grid, SIZE)
    features = features.detach().requires_grad_(True)

    def on_grid() -> None:
        shares = adaptation.weighted_share(features, classifier, band_w, everywhere).mean()
        shares = shares + adaptation.weighted_share(features, classifier, lung_w, everywhere)[:, 1].mean()
        shares.backward()

    def on_pixels() -> None:
        cams = adaptation.class_cams(features, classifier, SIZE)
        total = cams.sum(dim=(-2, -1)).clamp(min=1e-6)
        shares = ((cams * band).sum(dim=(-2, -1)) / total).mean()
        shares = shares + ((cams[:, 1] * lungs).sum(dim=(-2, -1)) / total[:, 1]).mean()
        shares.backward()

    grid_s, pixel_s = best_of(on_grid, 5), best_of(on_pixels, 5)
    return {"penalty_step_ms": round(grid_s * 1e3, 2), "bare_pixel_penalty_step_ms": round(pixel_s * 1e3, 2),
            "penalty_ratio": round(grid_s / pixel_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--films", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    network = Predictor(args.model, device="cpu", backend="torch").networks[0]
    device, views = torch.device("cpu"), adaptation.DEFAULT_VIEWS
    torch.manual_seed(0)
    greys = torch.rand(args.films, views, 1, SIZE, SIZE)
    cached = adaptation.cache_views(network.model, adaptation.LAST_STAGE, greys, network.mean, network.std, device)
    labels, lungs = np.arange(args.films) % 2, _lungs(args.films, views)
    split = adaptation.split_network(network.model, adaptation.LAST_STAGE)
    with torch.no_grad():
        features = split.features(cached[:adaptation.BATCH_SIZE, 0])
    result = penalty_steps(features, network.model.get_classifier(), lungs[:adaptation.BATCH_SIZE, 0])

    def fit(**penalties) -> None:
        adaptation.fit_tail(network.model, adaptation.LAST_STAGE, cached, labels, epochs=args.epochs,
                            mean=network.mean, std=network.std, device=device, image_size=SIZE, **penalties)

    penalised = best_of(lambda: fit(band_penalty=3.0, lungs=lungs, lung_penalty=0.3, lung_class=1), 2)
    bare = best_of(fit, 2)
    result.update({"fit_s": round(penalised, 2), "bare_fit_s": round(bare, 2), "fit_ratio": round(penalised / bare, 3),
                   "films": args.films, "views": views, "epochs": args.epochs})
    report("adapt", result)


if __name__ == "__main__":
    main()
