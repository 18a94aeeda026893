"""Site adaptation: a site's labelled films teach every network of a model, and the result is a site profile.

Beside :mod:`site_calibration` (which refits temperature and threshold only): the refusals (admin only, the model's
classes, at least ``MIN_SAMPLE_PER_CLASS`` films per class, the site folder inside the data roots), the films the
original model flags as out of domain counted and left out, the cross-fitting (adapt on k-1 folds grouped by patient
and stratified, measure on the held fold: every figure of an adapted model is one on films its adaptation never saw),
the final fit on every film, and writing the profile (:mod:`xraycore.clinical.site_profiles`) before the operating
point that activates it. The torch work is :mod:`xraycore.training.adaptation`'s.

Temperature and F2 threshold of the profile are fitted on the cross-fitted (held-fold) logits, which is how the final
network, fitted on every film, will score films it has not seen; the final network's logits on its own films would
be overconfident. The figures "before" are today's cross-fitted calibration of the original model on the same films.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from xraycore import metrics
from xraycore.access import audit
from xraycore.access import policy as access
from xraycore.clinical import operating_points as operating
from xraycore.clinical import site_profiles
from xraycore.common.hashing import sha256_of_content, sha256_of_file
from xraycore.common.timestamps import utc_timestamp
from xraycore.data import folders
from xraycore.evaluation.external import Labelled, folder_items
from xraycore.evaluation.site_calibration import check_classes
from xraycore.inference.predictor import READ_MAX_SIDE, Predictor
from xraycore.io.image import XrayReadError
from xraycore.io.reader import read_xray

DEFAULT_METHOD = "last-stage"
# Chosen by cross-fitted figures on the site sample over fold shuffles (experiments/site_recipes.py; docs/model.md)
# (the default first: the order the Site page offers them)
DEFAULT_EPOCHS = {"last-stage": 60, "head": 10, "last-two-blocks": 60, "full": 4}
METHODS = tuple(DEFAULT_EPOCHS)
# The shortcut remedies (docs/heat-maps.md): a penalty on the CAM mass in the outer band, and views whose band or
# corners are painted over. They cost no cross-fitted accuracy and took the held films' heat maps off the border.
DEFAULT_BAND_PENALTY = 3.0
ERASING_VIEWS = True
# A penalty on the pneumonia map's mass outside each view's lung-field estimate (views where none is found get none):
# it moves the heat map onto the lungs, fewer calls flip when the border is blanked, and with 60 epochs the accuracy
# at the F2 point rose (+0.004, eight fresh fold shuffles) at an AUROC within the margin fixed in advance (-0.0006,
# margin 0.001): docs/heat-maps.md, "Lung penalty 0.3 with 60 epochs becomes the default".
DEFAULT_LUNG_PENALTY = 0.3
FOLDS = 5
BETA = 2.0

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def adapt_folder(model_dir: str | Path, data_dir: str | Path, name: str, *, method: str = DEFAULT_METHOD,
                 epochs: int | None = None, replay: str | Path | None = None, activate: bool = True,
                 band_penalty: float = DEFAULT_BAND_PENALTY, erasing_views: bool = ERASING_VIEWS,
                 lung_penalty: float = DEFAULT_LUNG_PENALTY,
                 identity: access.Identity | None = None, progress: Progress | None = None,
                 device: str | None = None, roots: list[Path] | None = None) -> dict[str, Any]:
    """Adapt every network of ``model_dir`` to the labelled films of ``data_dir`` (class folders) and store the result
    as site profile and operating point ``name`` (active unless ``activate`` is false). Returns the stored point.
    ``band_penalty``, ``erasing_views`` and ``lung_penalty`` are the shortcut remedies (0, False, 0: none).

    A shared clinical setting: admin only, refused and audited inside; each refusal is one sentence (ValueError or
    access.AccessDenied). The original weights are never touched.
    """
    with access.guarded("adaptation", identity, access.CHANGE_OPERATING_POINT, model=audit.model_info(model_dir),
                       operating_point=str(name)) as line:
        from xraycore.evaluation import site_adaptation_fit as fitting  # torch: only once the caller may adapt
        from xraycore.training.adaptation import applied_penalty

        model_dir = Path(model_dir)
        data_dir = access.inside_roots(data_dir, "site folder", roots)
        replay_dir = access.inside_roots(replay, "replay folder", roots) if replay else None
        _check_new_name(model_dir, name)
        started = time.monotonic()
        predictor = Predictor(model_dir, operating_point=operating.INTERNAL, backend="torch", device=device)
        items = folder_items(data_dir)
        check_classes(items, predictor.class_names)
        _check_counts(items, predictor.class_names)  # before a film is scored
        site = read_films(predictor, items, progress)
        line.note(counts={"images": len(site["labels"]), "out_of_domain": site["n_out_of_domain"],
                          "unreadable": site["n_unreadable"]})
        _check_counts([(None, None, predictor.class_names[label]) for label in site["labels"]], predictor.class_names,
                      after="after leaving out the films flagged as out of domain and the unreadable ones")
        replayed = read_films(predictor, folder_items(replay_dir), progress, limit=len(site["labels"])) if replay_dir else None
        recipe = {"method": method, "epochs": epochs or DEFAULT_EPOCHS[method],
                  "band_penalty": applied_penalty(method, band_penalty),
                  "erasing_views": bool(erasing_views), "lung_penalty": applied_penalty(method, lung_penalty)}
        result = fitting.adapt_networks(predictor, site, replayed, recipe, FOLDS, progress)
        point, profile = _profile_and_point(predictor, site, result, recipe, replay_dir, line.identity.user,
                                            time.monotonic() - started)
        point["profile"] = name
        site_profiles.remove_stale_temporaries(model_dir)
        folder = site_profiles.write_profile(model_dir, name, profile, result["deltas"])
        try:  # the operating point last (atomic): until it is written nothing answers differently
            return operating._save(model_dir, name, point, activate=activate, user=line.identity.user, line=line)
        except BaseException:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            raise


def _check_new_name(model_dir: Path, name: str) -> None:
    site_profiles.check_profile_name(name)
    if site_profiles.profile_dir(model_dir, name).exists() or name in operating.names(model_dir):
        raise ValueError(f"This model already has an operating point or site profile named {name!r}; choose another name.")


def _check_counts(items: list[Labelled], class_names: list[str], after: str = "") -> None:
    counts = {label: sum(1 for *_, found in items if found == label) for label in class_names}
    if min(counts.values()) < operating.MIN_SAMPLE_PER_CLASS:
        found = " and ".join(f"{n} {label}" for label, n in counts.items())
        raise ValueError(f"Adapting needs at least {operating.MIN_SAMPLE_PER_CLASS} films of each class; the sample has "
                         f"{found}{' ' + after if after else ''}.")


def read_films(predictor: Predictor, items: list[Labelled], progress: Progress | None = None,
               limit: int | None = None) -> dict[str, Any]:
    """Read and score labelled films with the original model: their grey inputs per network, labels, patient groups,
    content digests and original logits; films flagged out of domain and unreadable ones are counted and left out.
    ``limit``: at most that many films, the classes balanced (replay)."""
    if limit is not None:
        items = _balanced(items, predictor.class_names, limit)
    kept: dict[str, list] = {"greys": [], "labels": [], "groups": [], "digests": [], "logits": []}
    out_of_domain = unreadable = 0
    for start in range(0, len(items), 16):
        chunk, images = items[start:start + 16], []
        for name, source, label in chunk:
            try:
                images.append((name, source, label, read_xray(source, name=name, max_side=READ_MAX_SIDE)))
            except XrayReadError:
                unreadable += 1
        for (name, source, label, image), scored in zip(images, predictor.predict_images([i[-1] for i in images])):
            if scored.out_of_domain:
                out_of_domain += 1
                continue
            kept["greys"].append([network.grey(image) for network in predictor.networks])
            kept["labels"].append(predictor.class_names.index(label))
            kept["groups"].append(folders.patient_id(name))
            kept["digests"].append(sha256_of_content(source))
            kept["logits"].append(scored.logits)
        if progress:
            progress("reading films", min(start + 16, len(items)), len(items))
    return {"greys": [np.stack(column) for column in zip(*kept["greys"])] if kept["greys"] else [],
            "labels": np.asarray(kept["labels"], dtype=int), "groups": kept["groups"], "digests": kept["digests"],
            "logits": np.asarray(kept["logits"], dtype=np.float64).reshape(-1, len(predictor.class_names)),
            "n_out_of_domain": out_of_domain, "n_unreadable": unreadable}


def _balanced(items: list[Labelled], class_names: list[str], limit: int) -> list[Labelled]:
    rng = np.random.default_rng(0)
    chosen = []
    for label in class_names:
        of_class = [item for item in items if item[2] == label]
        take = min(len(of_class), max(1, limit // len(class_names)))
        chosen += [of_class[i] for i in sorted(rng.choice(len(of_class), size=take, replace=False))]
    return chosen


def figures(truth: np.ndarray, logits: np.ndarray, positive_index: int, groups: list[str]) -> dict[str, Any]:
    """AUROC of the logits, and the cross-fitted rates of a temperature and F2 threshold fitted on other folds."""
    probability = metrics.softmax(logits, 1.0)[:, positive_index]
    crossed = operating.cross_fitted_rates(truth, logits, positive_index, BETA, groups=groups) or {}
    return {"auroc": float(metrics.roc_auc(truth, probability)), **crossed}


def _profile_and_point(predictor: Predictor, site: dict[str, Any], result: dict[str, Any], recipe: dict[str, Any],
                       replay: Path | None, user: str, seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    method = recipe["method"]
    positive = predictor.positive_index
    truth = (site["labels"] == positive).astype(int)
    held = result["held_logits"]
    fitted = operating.fit_site_point(truth, held, positive, BETA)
    counts = {"n": int(truth.size), "n_positive": int(truth.sum()), "n_negative": int(truth.size - truth.sum()),
              "n_out_of_domain": site["n_out_of_domain"], "n_unreadable": site["n_unreadable"]}
    before = figures(truth, site["logits"], positive, site["groups"])
    after = figures(truth, held, positive, site["groups"])
    fingerprint = operating.fingerprint(site["digests"])
    profile = {"kind": site_profiles.PROFILE_KIND, **recipe, "created": utc_timestamp(),
               "created_by": user, "data_fingerprint": fingerprint, "replay": None if replay is None else replay.name,
               **counts, **fitted, "folds": FOLDS, "before": before, "after": after, "seconds": round(seconds, 1),
               "base_weights_sha256": {key: sha256_of_file(path) for key, path in result["weights"].items()},
               "networks": result["networks"],
               # the reference distribution for monitoring: each site film's cross-fitted logits and truth, no names
               "held_out": {"logits": np.round(held, 6).tolist(), "truth": truth.tolist(),
                            "positive_index": positive}}
    point = {**fitted, "kind": site_profiles.PROFILE_KIND, "profile": None, **counts, "method": method,
             "positive_class": predictor.positive_class, "positive_index": positive, "data_fingerprint": fingerprint,
             "source": f"site profile ({method}) adapted on {counts['n']} films", "site_cross_fitted": after,
             "before": before}
    return point, profile


def list_profiles(model_dir: str | Path) -> list[dict[str, Any]]:
    """Every site profile of a model, newest first: name, method, date, who, counts, the cross-fitted figures before
    and after, the operating point that names it and whether that point is active (what the Site page lists)."""
    sites, state = Path(model_dir) / site_profiles.SITES_DIR, operating.load(model_dir)
    pointing = {point.get("profile"): point_name for point_name, point in state["points"].items()
                if site_profiles.is_profile_point(point)}
    found = []
    for folder in sorted(sites.iterdir()) if sites.is_dir() else ():
        if folder.name.startswith(".") or not (folder / site_profiles.PROFILE_FILE).is_file():
            continue
        profile = site_profiles.load_profile(model_dir, folder.name)
        point = pointing.get(folder.name)
        found.append({key: profile.get(key) for key in ("name", "method", "epochs", "band_penalty", "erasing_views",
                                                         "lung_penalty", "created", "created_by", "n_positive",
                                                         "n_negative", "n_out_of_domain", "before", "after",
                                                         "temperature", "threshold", "data_fingerprint", "seconds")}
                     | {"operating_point": point, "active": point is not None and point == state["active"]})
    return sorted(found, key=lambda entry: entry.get("created") or "", reverse=True)


def describe_figures(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The cross-fitted figures before and after, side by side, as the CLI prints them."""
    rows = ["                 before   after   (cross-fitted: measured on films the fit never saw)"]
    for key in ("auroc", "accuracy", "sensitivity", "specificity"):
        if key in before and key in after:
            rows.append(f"{key:>12}:   {before[key]:.4f}  {after[key]:.4f}")
    return rows
