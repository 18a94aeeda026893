"""Which site-adaptation recipe to ship: every figure cross-fitted on the site sample, over several fold shuffles.

`adapt` cross-fits once (fold seed 0); a recipe chosen on one shuffle of 196 films is chosen on noise. This script
reads the site films once, caches each network's views once per view recipe, and for every recipe and fold seed
adapts on 4/5 of the patients and scores the fifth, as `adapt` does (the same functions). Per recipe it reports the
mean and range over seeds of AUROC and of the accuracy, sensitivity and specificity of a temperature and F2
threshold fitted on other folds (`operating_points.cross_fitted_rates`), and the CAM share in the outer band of the
held films' heat maps (top class, each network's map, averaged), their lung lift, and the band probe of the
shortcut report on the held films (each film's clean view with its outer band blanked: the share of calls that
flip at an F2 point fitted on the held logits, and the mean shift of the normals' logit margin): the shortcut
remedies of docs/heat-maps.md measured by what they cost or gain.
It also reports the figures of a blend (``blend_*``): the adapted networks' held logits averaged with the original
networks', and once the figures before adaptation (site calibration of the original networks, cross-fitted).

Usage: python experiments/site_recipes.py [--recipes base,erase,...] [--seeds 0,1,2] [--output FILE.json]
Recipes: base (no remedy), erase (border and corner erasing in the views), penaltyW (CAM band penalty of weight
W, e.g. penalty1), lungW (penalty of weight W on CAM mass outside each view's lung-field estimate), lungboxW (the
same outside the bounding box of each side's estimate), lung[box]posW (on the pneumonia map only, the one the heat
map shows), blankviews (every view's band-blanked twin as a training view of its own), anchorW (L2-SP: weight W on
the tail's squared distance from the original weights), viewsN (N cached views per film), smoothX (label smoothing
X), swaF (the mean of the tail's weights at the end of every epoch from fraction F of the epochs on), epochsN, lrX, full,
last-two-blocks (a method: the last stage and the last block of the stage before it),
joined with "+". With --adult N, each recipe is also fitted on every site film (fold seed 0) and its pneumonia heat
maps are scored on N adult covid_qu films (half per class) against boxes of the lung-field estimate: a proxy for the
adult pointing game of docs/heat-maps.md (expert boxes decide).
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
from xraycore.evaluation import shortcuts  # noqa: E402
from xraycore.evaluation.site_adaptation import BETA, DEFAULT_EPOCHS, FOLDS, figures, read_films  # noqa: E402
from xraycore.evaluation.site_adaptation_fit import view_lungs  # noqa: E402
from xraycore.explain.lung_fields import lung_boxes  # noqa: E402
from xraycore.inference.predictor import READ_MAX_SIDE  # noqa: E402
from xraycore import metrics  # noqa: E402
from xraycore.io.reader import read_xray  # noqa: E402
from xraycore.inference.predictor import Predictor  # noqa: E402
from xraycore.training import adaptation  # noqa: E402


def parse_recipe(name: str) -> dict:
    """A recipe name → its settings (method, epochs, learning rate, band penalty, erasing views)."""
    recipe = {"name": name, "method": adaptation.LAST_STAGE, "epochs": None, "lr": None, "penalty": 0.0,
              "lung": 0.0, "boxes": False, "positive_only": False, "erase": False,
              "blank_views": False, "anchor": 0.0, "views": adaptation.DEFAULT_VIEWS, "smoothing": 0.0,
              "average_from": None}
    for part in name.split("+"):
        if part == "erase":
            recipe["erase"] = True
        elif part.startswith("penalty"):
            recipe["penalty"] = float(part[len("penalty"):])
        elif part.startswith("lung"):  # lung[box][pos]W
            rest = part[len("lung"):]
            recipe["boxes"], rest = rest.startswith("box"), rest.removeprefix("box")
            recipe["positive_only"], rest = rest.startswith("pos"), rest.removeprefix("pos")
            recipe["lung"] = float(rest)
        elif part == "blankviews":
            recipe["blank_views"] = True
        elif part.startswith("epochs"):
            recipe["epochs"] = int(part[len("epochs"):])
        elif part.startswith("anchor"):
            recipe["anchor"] = float(part[len("anchor"):])
        elif part.startswith("smooth"):
            recipe["smoothing"] = float(part[len("smooth"):])
        elif part.startswith("swa"):
            recipe["average_from"] = float(part[len("swa"):])
        elif part.startswith("views"):
            recipe["views"] = int(part[len("views"):])
        elif part.startswith("lr"):
            recipe["lr"] = float(part[len("lr"):])
        elif part in adaptation.METHODS:
            recipe["method"] = part
        elif part != "base":
            raise SystemExit(f"unknown recipe part {part!r}")
    recipe["epochs"] = recipe["epochs"] or DEFAULT_EPOCHS[recipe["method"]]
    return recipe


@torch.no_grad()
def held_outputs(network, method: str, cached: torch.Tensor, delta: dict, lungs: torch.Tensor | None = None,
                 twins: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Logits of the clean views and the band share and lung share (NaN without lungs) of each film's top-class CAM,
    with ``delta`` laid over. ``lungs``: (N, S, S) lung fields of the clean views."""
    model = adaptation.with_delta(network.model, delta).eval()
    split, normalise = adaptation.split_network(model, method), adaptation.normaliser(network.mean, network.std)
    logits, shares, lung_shares, blanked = [], [], [], []
    for start in range(0, cached.shape[0], adaptation.BATCH_SIZE):
        if twins is not None:
            twin = twins[start:start + adaptation.BATCH_SIZE, 0]
            blanked.append(split.tail(normalise(twin) if method == adaptation.FULL else twin))
        batch = cached[start:start + adaptation.BATCH_SIZE, 0]
        features = split.features(normalise(batch) if method == adaptation.FULL else batch)
        out = split.head(features)
        top = out.argmax(1, keepdim=True)
        share = adaptation.band_share(features, model.get_classifier(), network.image_size)
        logits.append(out)
        shares.append(share.gather(1, top).squeeze(1))
        if lungs is not None:
            masks = lungs[start:start + adaptation.BATCH_SIZE]
            inside = adaptation.region_share(features, model.get_classifier(), network.image_size, masks)
            inside = inside.gather(1, top).squeeze(1)
            lung_shares.append(torch.where(masks.flatten(1).any(1), inside, torch.full_like(inside, float("nan"))))
    lung = torch.cat(lung_shares).double().numpy() if lung_shares else np.full(cached.shape[0], np.nan)
    twin_logits = torch.cat(blanked).double().numpy() if blanked else None
    return torch.cat(logits).double().numpy(), torch.cat(shares).double().numpy(), lung, twin_logits


BLEND_FIGURES = ("auroc", "accuracy", "sensitivity", "specificity")


def run_recipe(predictor: Predictor, site: dict, cache: dict, recipe: dict, seed: int) -> dict:
    labels, positive = site["labels"], predictor.positive_index
    splits = list(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed).split(labels, labels, site["groups"]))
    held, band = np.zeros((labels.size, len(predictor.class_names))), np.zeros(labels.size)
    lung, held_blanked = np.zeros(labels.size), np.zeros_like(held)
    margin = lambda logits: logits[:, positive] - logits[:, 1 - positive]  # noqa: E731 (two classes)
    for index, network in enumerate(predictor.networks):
        cached, lungs, boxes, twins = cache[(index, recipe["method"], recipe["erase"], recipe["views"])]
        taught = boxes if recipe["boxes"] else lungs
        for train, test in splits:
            delta = fit(network, recipe, cached[train], labels[train], taught[train], twins[train], seed)
            logits, shares, lung_shares, blanked = held_outputs(network, recipe["method"], cached[test], delta,
                                                                lungs[test, 0], twins[test])
            held[test] += logits / network.temperature
            held_blanked[test] += blanked / network.temperature
            band[test] += shares
            lung[test] += lung_shares
    held /= len(predictor.networks)
    held_blanked /= len(predictor.networks)
    truth = (labels == positive).astype(int)
    point = operating.fit_site_point(truth, held, positive, BETA)  # on the held logits: the flips' threshold only
    calls = [metrics.softmax(out, point["temperature"])[:, positive] >= point["threshold"] for out in (held, held_blanked)]
    area = lungs[:, 0].flatten(1).double().mean(1).numpy()
    found = area > 0
    lift = float(np.mean(lung[found] / len(predictor.networks)) / np.mean(area[found]))
    # the adapted networks' held logits averaged with the original networks' (both temperature-scaled): a blend
    blend = figures(truth, (held + site["logits"]) / 2, positive, site["groups"])
    return {**figures(truth, held, positive, site["groups"]), **{f"blend_{key}": blend[key] for key in BLEND_FIGURES},
            "band_share": float(np.mean(band / len(predictor.networks))),
            "lung_lift": lift, "band_flips": float(np.mean(calls[0] != calls[1])),
            "normal_shift": float(np.mean(margin(held_blanked)[truth == 0] - margin(held)[truth == 0]))}


def fit(network, recipe: dict, cached: torch.Tensor, labels: np.ndarray, lungs: torch.Tensor, twins: torch.Tensor,
        seed: int) -> dict:
    """One network's delta under ``recipe`` (the functions `adapt` uses)."""
    if recipe["blank_views"]:  # the band-blanked twins as views of their own, with the film's label
        cached, lungs = torch.cat([cached, twins], dim=1), torch.cat([lungs, lungs], dim=1)
    return adaptation.fit_tail(network.model, recipe["method"], cached, labels, epochs=recipe["epochs"],
                               mean=network.mean, std=network.std, device=torch.device("cpu"), seed=seed,
                               learning_rate=recipe["lr"], band_penalty=recipe["penalty"],
                               image_size=network.image_size, lungs=lungs, lung_penalty=recipe["lung"],
                               lung_class=recipe["lung_class"], anchor=recipe["anchor"],
                               label_smoothing=recipe["smoothing"], average_from=recipe["average_from"])


def adult_proxy(predictor: Predictor, site: dict, cache: dict, adult: list, recipe: dict | None) -> dict:
    """Pointing game and lift of the pneumonia heat maps on adult films, against the boxes of the lung-field estimate
    (one per side), after fitting ``recipe`` on every site film (None: the original weights). Films whose map is
    empty or whose lungs were not found are left out, as in the shortcut report."""
    cams = []
    for index, network in enumerate(predictor.networks):
        delta = {}
        if recipe is not None:
            cached, lungs, boxes, twins = cache[(index, recipe["method"], recipe["erase"], recipe["views"])]
            delta = fit(network, recipe, cached, site["labels"], boxes if recipe["boxes"] else lungs, twins, 0)
        model = adaptation.with_delta(network.model, delta).eval()
        with torch.no_grad():
            features = adaptation.split_network(model, adaptation.LAST_STAGE).features(adult[index]["cached"][:, 0])
            cam = adaptation.class_cams(features, model.get_classifier(), network.image_size)
        cams.append(cam[:, predictor.positive_index].numpy())
    films = [shortcuts.heat_measures(np.mean([cam[film] for cam in cams], axis=0), lungs if lungs.any() else None)
             for film, lungs in enumerate(adult[0]["lungs"].numpy())]
    measured = [film for film in films if not np.isnan(film["pointing"])]  # empty maps and no lungs: left out
    return {"adult_films": len(measured), "adult_pointing": float(np.mean([film["pointing"] for film in measured])),
            "adult_box_lift": float(np.mean([film["box_mass"] for film in measured])
                                    / np.mean([film["box_area"] for film in measured]))}


def adult_films(predictor: Predictor, count: int) -> list[dict]:
    """Per network: the clean views of ``count`` covid_qu films (the first of each class, sorted) through the frozen
    trunk, and their lung-field estimates (network 0's views; the proxy averages the maps in that frame)."""
    root = DATA / "covid_qu"
    files = [path for name in ("COVID", "Normal") for path in sorted((root / name).iterdir())[:count // 2]]
    images = [read_xray(path, max_side=READ_MAX_SIDE) for path in files]
    out = []
    for network in predictor.networks:
        greys = np.stack([network.grey(image) for image in images])
        views = adaptation.grey_views(greys, [], 1, network.image_size)
        out.append({"cached": adaptation.cache_views(network.model, adaptation.LAST_STAGE, views, network.mean,
                                                     network.std, torch.device("cpu")),
                    "lungs": view_lungs(views)[:, 0]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--site", default=str(DATA / "kermany_site"))
    parser.add_argument("--recipes", default="base,erase,penalty1,erase+penalty1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--adult", type=int, default=0, help="adult films for the pointing proxy (0: none)")
    parser.add_argument("--output")
    args = parser.parse_args()
    recipes = [parse_recipe(name) for name in args.recipes.split(",")]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    predictor = Predictor(args.model, operating_point=operating.INTERNAL, backend="torch", device="cpu")
    for recipe in recipes:
        recipe["lung_class"] = predictor.positive_index if recipe["positive_only"] else None
    site = read_films(predictor, folder_items(Path(args.site)))
    print(f"{len(site['labels'])} films ({site['n_out_of_domain']} out of domain left out)", flush=True)
    cache = {}
    for index, network in enumerate(predictor.networks):
        augment = (network.run.config.get("train") or {}).get("augment") or ["hflip"]
        kinds = {(recipe["method"], recipe["erase"], recipe["views"]) for recipe in recipes}
        for method, erase, count in sorted(kinds):
            specs = list(augment) + ([adaptation.ERASING_VIEW] if erase else [])
            views = adaptation.grey_views(site["greys"][index], specs, count, network.image_size, seed=0)
            masks = view_lungs(views)  # every recipe reports the lung lift
            boxes = torch.from_numpy(np.stack([[lung_boxes(m) for m in film] for film in masks.numpy()]))
            trunk = lambda v: adaptation.cache_views(network.model, method, v, network.mean, network.std,
                                                     torch.device("cpu"))
            cache[(index, method, erase, count)] = (trunk(views), masks, boxes, trunk(adaptation.band_blanked(views)))
    truth = (site["labels"] == predictor.positive_index).astype(int)
    print("before (original networks, site calibration cross-fitted):",
          figures(truth, site["logits"], predictor.positive_index, site["groups"]), flush=True)
    adult = adult_films(predictor, args.adult) if args.adult else None
    results = []
    if adult:
        print("original weights:", adult_proxy(predictor, site, cache, adult, None), flush=True)
    for recipe in recipes:
        started = time.monotonic()
        per_seed = [run_recipe(predictor, site, cache, recipe, seed) for seed in seeds]
        summary = {key: [round(run[key], 4) for run in per_seed]
                   for key in ("auroc", "accuracy", "sensitivity", "specificity", "band_share", "lung_lift",
                               "band_flips", "normal_shift", *(f"blend_{key}" for key in BLEND_FIGURES))}
        extra = adult_proxy(predictor, site, cache, adult, recipe) if adult else {}
        results.append({"recipe": recipe, "seeds": seeds, **summary, **extra,
                        "seconds": round(time.monotonic() - started, 1)})
        print(f"{recipe['name']:>22}: " + "  ".join(f"{key} {np.mean(values):.4f} ({min(values):.3f}-{max(values):.3f})"
                                                    for key, values in summary.items()) + f"  {extra}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
