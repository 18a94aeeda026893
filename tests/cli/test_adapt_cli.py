"""``python -m xraycore adapt``: a site profile from a folder like ``reads export`` writes, active, used by predict,
rolled back; the refusals in xraycore (a reader, too few films, other classes, a folder outside the data roots);
films flagged out of domain counted and left out; and a kill mid-adapt leaves the model directory byte-identical."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.sites import site_sample
from tests.helpers.synthetic import xray_like
from xraycore.access import identity as roles
from xraycore.access.policy import AccessDenied
from xraycore.clinical import operating_points as operating
from xraycore.evaluation import site_adaptation
from xraycore.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[2]


def _model(tiny_exported: Path, target: Path, ood: bool = False) -> Path:
    shutil.copytree(tiny_exported, target)
    if not ood:  # the tiny network flags many synthetic films; these tests are about the rest
        (target / "ood.safetensors").unlink()
    return target


def _sha256_named_pngs(root: Path, per_class: int = 52) -> Path:
    """Class folders of PNGs named by the sha256 of their bytes, as ``reads export`` writes them."""
    rng = np.random.default_rng(5)
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
        for _ in range(per_class):
            path = root / label / "film.png"
            Image.fromarray(xray_like(rng, 48, pneumonia=label == "PNEUMONIA")).save(path)
            path.rename(root / label / f"{hashlib.sha256(path.read_bytes()).hexdigest()}.png")
    return root


def _cli(*args: str, env: dict, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xraycore", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, **options)


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "XRAY_DATA_ROOTS": str(tmp_path), "PYTHONPATH": str(ROOT)}


def test_adapt_stores_an_active_profile_that_answers_and_rolls_back(tiny_exported, tmp_path):
    model, site = _model(tiny_exported, tmp_path / "model"), _sha256_named_pngs(tmp_path / "reads")
    done = _cli("adapt", "--model", str(model), "--data", str(site), "--name", "site-a", "--method", "head",
                "--epochs", "5", "--band-penalty", "0.5", "--no-erasing-views", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "before" in done.stdout and "after" in done.stdout and "auroc" in done.stdout
    profile = json.loads((model / "sites" / "site-a" / "profile.json").read_text())
    assert profile["method"] == "head" and profile["n_positive"] == profile["n_negative"] == 52
    assert (profile["epochs"], profile["band_penalty"], profile["erasing_views"]) == (5, 0.0, False), \
        "the recipe kept (head: no map, so no band penalty whatever was asked)"
    assert len(profile["held_out"]["logits"]) == 104 and profile["before"] and profile["after"]
    assert "film" not in json.dumps(profile) and ".png" not in json.dumps(profile), "no file names"
    assert operating.active_name(model) == "site-a"
    film = str(next((site / "NORMAL").iterdir()))
    answered = json.loads(_cli("predict", "--model", str(model), "--json", film, env=_env(tmp_path)).stdout)
    assert answered["operating_point"] == "site-a"
    assert Predictor(model).describe()["site_profile"] == "site-a", "a new process (a restart) answers with it"
    assert _cli("operating-point", "--model", str(model), "--activate", "internal", env=_env(tmp_path)).returncode == 0
    assert Predictor(model).site_profile is None
    assert [entry["action"] for entry in operating.load(model)["history"]] == ["save", "activate"]
    removed = _cli("operating-point", "--model", str(model), "--remove", "site-a", env=_env(tmp_path))
    assert removed.returncode == 0, removed.stderr
    assert "site-a" not in removed.stdout.replace("removed 'site-a'", "") and not (model / "sites" / "site-a").exists()


def test_a_reader_may_not_adapt_and_is_audited(tiny_exported, tmp_path, log):
    model, site = _model(tiny_exported, tmp_path / "model"), site_sample(tmp_path / "site")
    reader = roles.Identity("reader", "r@example.org", frozenset({roles.READER}))
    with pytest.raises(AccessDenied):
        site_adaptation.adapt_folder(model, site, "site-a", identity=reader, roots=[tmp_path])
    entry = json.loads(log.read_text().splitlines()[-1])
    assert (entry["action"], entry["outcome"]) == ("adaptation", "refused")
    assert not (model / "sites").exists()


@pytest.mark.parametrize("problem, expected", [("few", "at least 50 films of each class"),
                                               ("classes", "one sub-folder per class"),
                                               ("outside", "not inside the folders")])
def test_refusals_are_one_sentence_and_store_nothing(tiny_exported, tmp_path, problem, expected):
    model = _model(tiny_exported, tmp_path / "model")
    site = site_sample(tmp_path / "site", per_class=20 if problem == "few" else 52)
    if problem == "classes":
        (site / "PNEUMONIA").rename(site / "COVID")
    roots = [tmp_path / "elsewhere"] if problem == "outside" else [tmp_path]
    error = AccessDenied if problem == "outside" else ValueError
    with pytest.raises(error, match=expected):
        site_adaptation.adapt_folder(model, site, "site-a", roots=roots)
    assert not (model / "sites").exists() and operating.active_name(model) == operating.INTERNAL


def test_films_flagged_out_of_domain_are_counted_and_left_out(tiny_exported, tmp_path):
    model, site = _model(tiny_exported, tmp_path / "model", ood=True), site_sample(tmp_path / "site", per_class=60)
    flagged = sum(bool(p.out_of_domain) for p in Predictor(model, operating_point="internal").predict_files(
        sorted(site.rglob("*.jpeg"))))
    assert flagged > 0, "the tiny network flags some synthetic films"
    try:
        point = site_adaptation.adapt_folder(model, site, "site-a", method="head", epochs=2, roots=[tmp_path])
    except ValueError as refusal:  # too few left of a class: the sentence says why
        assert "after leaving out the films flagged as out of domain" in str(refusal)
    else:
        assert point["n_out_of_domain"] == flagged and point["n"] == 120 - flagged


def test_the_lung_penalty_takes_each_views_lung_fields_and_is_recorded(tiny_exported, tmp_path, monkeypatch):
    """``lung_penalty`` reaches every fit with the lung fields of each cached view (films where some were found) and the
    pneumonia class (the heat map's), and the profile and the Site page's recipe say so."""
    from xraycore.app.site_view import recipe_text
    from xraycore.training import adaptation

    model, site = _model(tiny_exported, tmp_path / "model"), _sha256_named_pngs(tmp_path / "reads")
    seen, real_fit = [], adaptation.fit_tail

    def recording_fit(*args, **kwargs):
        lungs = kwargs.get("lungs")
        found = None if lungs is None else float(lungs.flatten(2).any(2).float().mean())
        seen.append((kwargs.get("lung_penalty"), found, kwargs.get("lung_class")))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(adaptation, "fit_tail", recording_fit)
    site_adaptation.adapt_folder(model, site, "site-a", method="last-stage", epochs=1, lung_penalty=2.0,
                                 roots=[tmp_path])
    assert len(seen) == site_adaptation.FOLDS + 1, "every fold and the final fit"
    shown = Predictor(model, operating_point="internal").positive_index
    assert all(weight == 2.0 and found is not None and found > 0.5 and index == shown for weight, found, index in seen), \
        "each fit gets the weight, the views' lung fields, and the class whose map Diagnose draws"
    profile = json.loads((model / "sites" / "site-a" / "profile.json").read_text())
    assert profile["lung_penalty"] == 2.0 and "lung penalty 2" in recipe_text(profile)
    listed = site_adaptation.list_profiles(model)  # what the Site page's table of profiles is drawn from
    assert "lung penalty 2" in recipe_text(listed[0])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("stage, epochs", [("fold 1", 40), ("final fit", 12)])  # long enough a stage to be killed in
def test_a_killed_adapt_leaves_the_model_directory_byte_identical(tiny_exported, tmp_path, stage, epochs):
    model, site = _model(tiny_exported, tmp_path / "model"), site_sample(tmp_path / "site")
    before = _snapshot(model)
    # without the lung penalty: the lung-field estimate of every view would only lengthen the wait for the stage
    process = subprocess.Popen([sys.executable, "-m", "xraycore", "adapt", "--model", str(model), "--data", str(site),
                                "--name", "site-a", "--epochs", str(epochs), "--lung-penalty", "0"],
                               cwd=ROOT, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 300
    while stage.encode() not in seen and process.poll() is None and time.monotonic() < deadline:
        seen += process.stderr.read1(4096)
    assert stage.encode() in seen, seen[-500:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _snapshot(model) == before
    assert Predictor(model).site_profile is None


def test_the_cli_offers_exactly_the_methods_xraycore_adapts_with():
    from xraycore.cli import adapt_verbs
    from xraycore.training import adaptation

    assert adapt_verbs.METHODS == site_adaptation.METHODS
    assert set(site_adaptation.METHODS) == set(adaptation.METHODS) == set(adaptation.LEARNING_RATES)
