"""Which site-adaptation recipe to ship: every figure cross-fitted on the site sample, over several fold shuffles.

`adapt` cross-fits once (fold seed 0); a recipe chosen on one shuffle of 196 films is chosen on noise. This script
reads the site films once, caches each network's views once per view recipe, and for every recipe and fold seed
adapts on 4/5 of the patients and scores the fifth, as `adapt` does (the same functions). Per recipe it reports the
mean and range over seeds of AUROC and of the accuracy, sensitivity and specificity of a temperature and F2
threshold fitted on other folds (`operating_points.cross_fitted_rates`), and the CAM share in the outer band of the
held films' heat maps (top class, each network's map, averaged): the shortcut remedies of docs/heat-maps.md
measured by what they cost or gain.

Usage: python experiments/site_recipes.py [--recipes base,erase,...] [--seeds 0,1,2] [--output FILE.json]
Recipes: base (the shipped one), erase (border and corner erasing in the views), penaltyW (CAM band penalty of weight
W, e.g. penalty1), erase+penaltyW, epochsN, lrX, full.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA  # noqa: E402
from xraycore.clinical import operating_points as operating  # noqa: E402
from xraycore.evaluation.external import folder_items  # noqa: E402
from xraycore.evaluation.site_adaptation import DEFAULT_EPOCHS, FOLDS, figures, read_films  # noqa: E402
from xraycore.inference.predictor import Predictor  # noqa: E402
from xraycore.training import adaptation  # noqa: E402


def parse_recipe(name: str) -> dict:
    """A recipe name → its settings (method, epochs, learning rate, band penalty, erasing views)."""
    recipe = {"name": name, "method": adaptation.LAST_STAGE, "epochs": None, "lr": None, "penalty": 0.0,
              "erase": False}
    for part in name.split("+"):
        if part == "erase":
            recipe["erase"] = True
        elif part.startswith("penalty"):
            recipe["penalty"] = float(part[len("penalty"):])
        elif part.startswith("epochs"):
            recipe["epochs"] = int(part[len("epochs"):])
        elif part.startswith("lr"):
            recipe["lr"] = float(part[len("lr"):])
        elif part in adaptation.METHODS:
            recipe["method"] = part
        elif part != "base":
            raise SystemExit(f"unknown recipe part {part!r}")
    recipe["epochs"] = recipe["epochs"] or DEFAULT_EPOCHS[recipe["method"]]
    return recipe


@torch.no_grad()
def held_outputs(network, method: str, cached: torch.Tensor, delta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the clean views and the band share of each film's top-class CAM, with ``delta`` laid over."""
    model = adaptation.with_delta(network.model, delta).eval()
    split, normalise = adaptation.split_network(model, method), adaptation.normaliser(network.mean, network.std)
    logits, shares = [], []
    for start in range(0, cached.shape[0], adaptation.BATCH_SIZE):
        batch = cached[start:start + adaptation.BATCH_SIZE, 0]
        features = split.features(normalise(batch) if method == adaptation.FULL else batch)
        out = split.head(features)
        share = adaptation.band_share(features, model.get_classifier(), network.image_size)
        logits.append(out)
        shares.append(share.gather(1, out.argmax(1, keepdim=True)).squeeze(1))
    return torch.cat(logits).double().numpy(), torch.cat(shares).double().numpy()


def run_recipe(predictor: Predictor, site: dict, cache: dict, recipe: dict, seed: int) -> dict:
    labels, positive = site["labels"], predictor.positive_index
    splits = list(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed).split(labels, labels, site["groups"]))
    held, band = np.zeros((labels.size, len(predictor.class_names))), np.zeros(labels.size)
    for index, network in enumerate(predictor.networks):
        cached = cache[(index, recipe["method"], recipe["erase"])]
        for train, test in splits:
            delta = adaptation.fit_tail(network.model, recipe["method"], cached[train], labels[train],
                                        epochs=recipe["epochs"], mean=network.mean, std=network.std,
                                        device=torch.device("cpu"), seed=seed, learning_rate=recipe["lr"],
                                        band_penalty=recipe["penalty"], image_size=network.image_size)
            logits, shares = held_outputs(network, recipe["method"], cached[test], delta)
            held[test] += logits / network.temperature
            band[test] += shares
    held /= len(predictor.networks)
    truth = (labels == positive).astype(int)
    return {**figures(truth, held, positive, site["groups"]), "band_share": float(np.mean(band / len(predictor.networks)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--site", default=str(DATA / "kermany_site"))
    parser.add_argument("--recipes", default="base,erase,penalty1,erase+penalty1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output")
    args = parser.parse_args()
    recipes = [parse_recipe(name) for name in args.recipes.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    predictor = Predictor(args.model, operating_point=operating.INTERNAL, backend="torch", device="cpu")
    site = read_films(predictor, folder_items(Path(args.site)))
    print(f"{len(site['labels'])} films ({site['n_out_of_domain']} out of domain left out)", flush=True)
    cache = {}
    for index, network in enumerate(predictor.networks):
        augment = (network.run.config.get("train") or {}).get("augment") or ["hflip"]
        for method, erase in sorted({(recipe["method"], recipe["erase"]) for recipe in recipes}):
            specs = list(augment) + ([adaptation.ERASING_VIEW] if erase else [])
            views = adaptation.grey_views(site["greys"][index], specs, adaptation.DEFAULT_VIEWS, network.image_size,
                                          seed=0)
            cache[(index, method, erase)] = adaptation.cache_views(network.model, method, views, network.mean,
                                                                   network.std, torch.device("cpu"))
    results = []
    for recipe in recipes:
        started = time.monotonic()
        per_seed = [run_recipe(predictor, site, cache, recipe, seed) for seed in seeds]
        summary = {key: [round(run[key], 4) for run in per_seed]
                   for key in ("auroc", "accuracy", "sensitivity", "specificity", "band_share")}
        results.append({"recipe": recipe, "seeds": seeds, **summary, "seconds": round(time.monotonic() - started, 1)})
        print(f"{recipe['name']:>22}: " + "  ".join(f"{key} {np.mean(values):.4f} ({min(values):.3f}-{max(values):.3f})"
                                                    for key, values in summary.items()), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
