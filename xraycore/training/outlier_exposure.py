"""Outlier exposure: teach a model's out-of-domain check what films from elsewhere look like.

The distance check (``ood.OodModel``) only knows the training images. Given a folder of films the model must
not answer for (adults, other hospitals), ``expose`` fits each network's ``ood.DomainDiscriminator``: its
training images against those films, both also seen after the processing a film meets on its way to us
(``PROCESSING``: resized from full resolution and re-encoded, blurred, sharpened, equalised, re-compressed,
cropped), so that it learns what differs in the patients and the anatomy rather than in one collection's
file format. The threshold is set on each network's own validation images (never fitted on), and the
detector file is rewritten with the discriminator beside the unchanged distance blocks.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from xraycore.access import policy as access
from xraycore.access import audit
from xraycore.runs import directory as runs
from xraycore.io import image as xray_image
from xraycore.common.files import atomic_stream
from xraycore.common.hashing import sha256_of_content, sha256_of_file
from xraycore.common.tensor_files import save_arrays
from xraycore.common.timestamps import utc_timestamp
from xraycore.io import reader as xio
from xraycore.data.folders import list_images
from xraycore.ood.distance import fit_discriminator
from xraycore.inference.networks import Network
from xraycore.inference.predictor import Predictor

FULL_RESOLUTION_SIDE = 1024  # a film enlarged to this is resized and re-encoded by the loader, as a real one is
SCORED_TRAINING_IMAGES = 2000  # training images the discriminator sees at most (a random sample)
PROCESSED_SHARE = 0.3  # of each set, also seen after every kind of processing


def _reencoded_jpeg(image: Image.Image, quality: int = 40) -> Image.Image:
    buffer = _io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(_io.BytesIO(buffer.getvalue()))


def _centre(image: Image.Image, fraction: float = 0.8) -> Image.Image:
    width, height = image.size
    return image.crop((int(width * (1 - fraction) / 2), int(height * (1 - fraction) / 2),
                       int(width * (1 + fraction) / 2), int(height * (1 + fraction) / 2)))


# Ways a film is processed between the detector and us; each maps a greyscale PIL image to another.
PROCESSING: dict[str, Callable[[Image.Image], Image.Image]] = {
    "full_resolution": lambda image: image.resize((FULL_RESOLUTION_SIDE,) * 2, Image.LANCZOS),
    "blurred": lambda image: image.filter(ImageFilter.GaussianBlur(1)),
    "sharpened": lambda image: image.filter(ImageFilter.UnsharpMask(2, 120, 2)),
    "equalised": ImageOps.equalize,
    "recompressed": _reencoded_jpeg,
    "cropped": _centre,
}


def images_in(folder: str | Path) -> list[Path]:
    """The images of a folder and its sub-folders (class folders, train/ and test/ splits), sorted per folder;
    a COVID-19 Radiography layout (``images/`` beside ``masks/``) contributes its ``images/`` only."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if (folder / "images").is_dir():
        return list_images(folder)
    return list_images(folder) + [p for sub in sorted(folder.iterdir()) if sub.is_dir() for p in images_in(sub)]


def processed_bytes(path: Path, processing: str) -> bytes:
    """The file's image after ``processing``, as PNG bytes (in memory)."""
    grey = xray_image.to_uint8(xio.read_xray(path).pixels)
    buffer = _io.BytesIO()
    PROCESSING[processing](Image.fromarray(grey)).save(buffer, "PNG")
    return buffer.getvalue()


def processed(path: Path, processing: str | None) -> xray_image.XrayImage:
    """The file read as the app reads an upload, after ``processing`` (None: as it is)."""
    if processing is None:
        return xio.read_xray(path)
    return xio.read_xray(processed_bytes(path, processing), name=path.name)


def features(network: Network, predictor: Predictor, paths: Sequence[Path], processing: str | None = None,
             batch_size: int = 32, cache: FeatureCache | None = None) -> np.ndarray:
    """The out-of-domain features ``network`` extracts from each file (unreadable files are skipped); with
    ``cache``, files these weights already scored after this processing are not scored again."""
    def score(missing: Sequence[Path]) -> list[np.ndarray | None]:
        return _scored(network, predictor, missing, processing, batch_size)

    rows = cache.rows(network, processing, paths, score) if cache is not None else score(paths)
    found = [row for row in rows if row is not None]
    width = sum(network.ood.widths) if network.ood is not None else 0
    return np.stack(found).astype(np.float32) if found else np.zeros((0, width), np.float32)


def _scored(network: Network, predictor: Predictor, paths: Sequence[Path], processing: str | None,
            batch_size: int) -> list[np.ndarray | None]:
    """Each file's feature row, None for a file that cannot be read, in batches."""
    rows: list[np.ndarray | None] = []
    for start in range(0, len(paths), batch_size):
        prepared: list[np.ndarray | None] = []
        for path in paths[start:start + batch_size]:
            try:
                prepared.append(network.prepare(processed(path, processing)))
            except xray_image.XrayReadError:
                prepared.append(None)
        readable = [image for image in prepared if image is not None]
        batch = iter(network.forward(np.stack(readable), False, None, predictor.positive_index).features
                     if readable else [])
        rows.extend(None if image is None else next(batch) for image in prepared)
    return rows


class FeatureCache:
    """Features of files already scored, on disk, so that a second ``ood-expose`` of the same model (other films
    from elsewhere, another quantile) does not score the same 2000 training images and their processed copies
    again (about 6 minutes per member on 2 CPU cores).

    One file per network and processing, named by a digest of the network's weights, the settings that turn a
    file into its input, the processing's name and the code that reads and processes films (so an edit there
    starts afresh); a file is found in it by its path, size and modification time, so a changed file is scored
    again. Unreadable files are not cached (they are skipped each time)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._weights_sha256: dict[Path, str] = {}  # each network's weights hashed once, not once per call

    def rows(self, network: Network, processing: str | None, paths: Sequence[Path],
             score: Callable[[Sequence[Path]], list[np.ndarray | None]]) -> list[np.ndarray | None]:
        """Each file's row (None: unreadable), ``score`` called on the files not yet in the cache only."""
        file = self.folder / f"ood-features-{self._digest(network, processing)}.npz"
        known = self._load(file)
        keys = [self._key(path) for path in paths]
        missing = [index for index, key in enumerate(keys) if key not in known]
        if missing:
            for index, row in zip(missing, score([paths[index] for index in missing])):
                if row is not None:
                    known[keys[index]] = np.asarray(row, np.float32)
            self._save(file, known)
        return [known.get(key) for key in keys]

    def _digest(self, network: Network, processing: str | None) -> str:
        weights = network.run.file(runs.WEIGHTS_FILE)
        if weights not in self._weights_sha256:
            self._weights_sha256[weights] = sha256_of_file(weights)
        preparation = {key: network.run.config.get(key) for key in (
            "backbone", "image_size", "load_size", "mean", "std", "input_jpeg_quality", "intensity", "crop_margin")}
        widths = network.ood.widths if network.ood is not None else None
        text = json.dumps([self._weights_sha256[weights], preparation, widths,
                           type(network.engine).__name__, processing, _reading_code_digest()], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @staticmethod
    def _key(path: Path) -> str:
        status = Path(path).stat()
        return f"{Path(path).resolve()}|{status.st_size}|{status.st_mtime_ns}"

    @staticmethod
    def _load(file: Path) -> dict[str, np.ndarray]:
        if not file.is_file():
            return {}
        with np.load(file, allow_pickle=False) as stored:  # plain arrays only: nothing is unpickled
            return dict(zip(stored["keys"].tolist(), stored["features"]))

    @staticmethod
    def _save(file: Path, known: dict[str, np.ndarray]) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_stream(file) as stream:  # a reader never sees half a file
            np.savez(stream, keys=np.array(list(known), dtype=str), features=np.stack(list(known.values())))


def _reading_code_digest() -> str:
    """sha256 of the modules between a file and the network's input: this one (``PROCESSING``), io's reader and
    image, decode."""
    from xraycore.data import decode

    modules = (__file__, xio.__file__, xray_image.__file__, decode.__file__)
    return sha256_of_content("\n".join(sha256_of_file(module) for module in modules).encode())


def expose(model: str | Path, inliers: str | Path, outliers: str | Path, *, identity: access.Identity | None = None,
           **options: Any) -> list[dict[str, Any]]:
    """:func:`fit_exposure` on a model in use. It changes which patients' films the model declines to answer
    for, so it is a shared clinical setting: admin only, one 'ood_exposure' audit line."""
    with access.guarded("ood_exposure", identity, access.CHANGE_OPERATING_POINT, model=audit.model_info(model),
                       target=Path(outliers).name) as line:
        reports = fit_exposure(model, inliers, outliers, **options)
        line.note(counts={"networks": len(reports), "outliers": reports[0]["n_outliers"]},
                  new={r["network"]: r["flagged_validation"] for r in reports})
        return reports


def fit_exposure(model: str | Path, inliers: str | Path, outliers: str | Path, *,
                 max_inliers: int = SCORED_TRAINING_IMAGES, hold_out_outliers: int = 0,
                 processed_share: float = PROCESSED_SHARE, quantile: float = 0.999, strength: float = 0.01,
                 seed: int = 0, cache_dir: str | Path | None = None,
                 say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Fit and save the discriminator of every network of ``model`` (each member of an ensemble).

    ``inliers``: the folder the model was trained on (each network's validation images are found in it by file
    name, held out, and set the threshold; its test images are left out). ``outliers``: films from elsewhere;
    the first ``hold_out_outliers`` of each of its folders are kept out of the fit and measured instead.
    ``cache_dir``: keep every file's features there (:class:`FeatureCache`) for the next call on this model.
    ``processed_share`` of each set is also seen after each of ``PROCESSING``. Returns, per network, what was
    fitted and its flag rates. Training calls it on its own new run (``--ood-outliers``).
    """
    unseen, fitted_on = _first_of_each_folder(images_in(outliers), hold_out_outliers)
    if len(fitted_on) < 2:
        raise ValueError(f"{outliers} leaves {len(fitted_on)} images to fit on: give a folder of films from elsewhere")
    predictor = Predictor(model, device=None)
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    pool = images_in(inliers)
    reports = []
    for network in predictor.networks:
        if network.ood is None:
            raise ValueError(f"{network.run.path} has no out-of-domain detector to add a discriminator to")
        heldout, training = _home_images(network, pool, Path(inliers), max_inliers, seed)
        say(f"{network.run.path.name}: {len(training)} training images, {len(fitted_on)} from elsewhere, "
            f"{len(heldout)} validation images to set the threshold")
        home, away = _with_processing(network, predictor, training, fitted_on, processed_share, say, cache)
        heldout_features = features(network, predictor, heldout, cache=cache)
        discriminator = fit_discriminator(home, away, network.ood.own_features(heldout_features), quantile, strength)
        detector = network.ood.with_discriminator(discriminator)
        save_arrays(network.run.path / runs.OOD_FILE, detector.to_arrays())
        report = {"network": network.run.path.name, "inliers": Path(inliers).name, "n_inliers": len(training),
                  "outliers": Path(outliers).name, "n_outliers": len(fitted_on), "n_outliers_held_out": len(unseen),
                  "processing": list(PROCESSING), "processed_share": processed_share, "quantile": quantile,
                  "strength": strength, "date": utc_timestamp(),
                  "flagged_validation": float(np.mean(detector.is_out_of_domain(heldout_features))),
                  "flagged_outliers_in_sample": float(np.mean(discriminator.ratio(away) > 1.0)),
                  "flagged_outliers_held_out": (float(np.mean(detector.is_out_of_domain(
                      features(network, predictor, unseen, cache=cache)))) if unseen else None)}
        summary = network.run.read_json(runs.SUMMARY_FILE, {}) or {}
        network.run.write_json(runs.SUMMARY_FILE, {**summary, "ood_exposure": report})
        unseen_rate = report["flagged_outliers_held_out"]
        say(f"{network.run.path.name}: flagged {report['flagged_validation']:.1%} of its validation images, "
            f"{report['flagged_outliers_in_sample']:.1%} of the films it was fitted on"
            + (f", {unseen_rate:.1%} of the {len(unseen)} held out" if unseen_rate is not None else ""))
        reports.append(report)
    return reports


def _first_of_each_folder(paths: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(the first ``count`` paths of each folder, the rest), in the order given."""
    seen: dict[Path, int] = {}
    first, rest = [], []
    for path in paths:
        seen[path.parent] = seen.get(path.parent, 0) + 1
        (first if seen[path.parent] <= count else rest).append(path)
    return first, rest


def _home_images(network: Network, pool: list[Path], inliers: Path, max_inliers: int,
                 seed: int) -> tuple[list[Path], list[Path]]:
    """(the network's validation images, up to ``max_inliers`` of its training images) found in ``pool``."""
    validation_names = {Path(f).name for f in (network.run.predictions("val") or {}).get("file", [])}
    validation = [p for p in pool if p.name in validation_names]
    if not validation or len(validation) < 0.9 * len(validation_names):
        raise ValueError(f"{inliers} holds {len(validation)} of the {len(validation_names)} validation images of "
                         f"{network.run.path.name}: give the folder it was trained on")
    test_names = {Path(f).name for f in (network.run.predictions("test") or {}).get("file", [])}
    training = [p for p in pool if p.name not in validation_names | test_names]
    random.Random(seed).shuffle(training)
    return validation, training[:max_inliers]


def _with_processing(network: Network, predictor: Predictor, training: list[Path], elsewhere: list[Path],
                     share: float, say: Callable[[str], None],
                     cache: FeatureCache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features of both sets as they are and, for ``share`` of each, after every kind of processing."""
    sets = []
    for paths in (training, elsewhere):
        some = paths[:: max(1, round(1 / share))] if share > 0 else []
        parts = [features(network, predictor, paths, cache=cache)]
        for name in PROCESSING if some else ():
            say(f"  {network.run.path.name}: {len(some)} images {name.replace('_', ' ')}")
            parts.append(features(network, predictor, some, name, cache=cache))
        sets.append(network.ood.own_features(np.concatenate(parts)))
    return sets[0], sets[1]
