"""Serving: bulk scoring (images/s) and probability + heat map per film, on both inference backends.

Bulk scoring, 224 px JPEGs, batches of 16, probability and call only:
  product (Predictor, onnxruntime backend: read_xray's checks, out-of-domain score, the call) against plain
  ONNX Runtime on the same graph (PIL decode → numpy normalise → session, logits only → softmax) and
  against decoding alone; the torch backend for reference. Goal: product / plain ≥ 0.8.
Heat maps, full-resolution films, one at a time, probability + heat map (+ overlay for the product):
  one-pass CAM (ONNX Runtime, torch) against pytorch-grad-cam's GradCAM on the same ready tensors, their
  mean |Δ|, and the product's ms per film. Goal: ≤ 60 ms per film.

The model directory is copied to a temporary folder and exported there (``models/default`` stays as it is).
Timings are the fastest of three, taken in turns. Usage:
python benchmarks/bench_serving.py [--model models/default] [--n 256] [--n-films 8] [--skip-heat-maps]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, REPO, report  # noqa: E402
from xraycore import Predictor, export_model, read_xray  # noqa: E402
from xraycore.data import is_image_file  # noqa: E402
from xraycore.explain import cam as explain  # noqa: E402
from xraycore.inference.predictor import READ_MAX_SIDE  # noqa: E402
from xraycore.metrics.decision import softmax  # noqa: E402
from xraycore import models  # noqa: E402


def interleaved_best(runs: dict[str, Callable[[], object]], repeats: int = 3) -> dict[str, float]:
    """Fastest of ``repeats`` timings of each, taken in turns (A B C A B C ...): on a shared machine the load
    drifts over minutes, and this way every contender sees the same drift."""
    for fn in runs.values():
        fn()  # warm-up
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def exported_copy(model: Path, folder: Path) -> Path:
    copy = folder / "model"
    shutil.copytree(model, copy)
    export_model(copy, "onnx")
    return copy


def bulk(model: Path, files: list[Path], batch: int, torch_files: int) -> dict:
    product, reference = Predictor(model, backend="onnxruntime"), Predictor(model, backend="torch")
    network = product.networks[0]
    # Plain ONNX Runtime on the same graphs: one per network (an ensemble's members average their logits).
    graphs = [model / "model.onnx"] if (model / "model.onnx").exists() else sorted(model.glob("members/*/model.onnx"))
    sessions = [onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"]) for graph in graphs]
    mean = np.asarray(network.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(network.std, np.float32).reshape(1, -1, 1, 1)
    size = network.image_size

    def decode(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            grey = image.convert("L")
            return np.asarray(grey if grey.size == (size, size) else grey.resize((size, size), Image.Resampling.BILINEAR))

    def decode_only() -> None:
        for path in files:
            decode(path)

    calls: dict[str, list[int]] = {}

    def plain() -> None:
        for start in range(0, len(files), batch):
            grey = np.stack([decode(path) for path in files[start:start + batch]]).astype(np.float32)[:, None] / 255.0
            logits = np.mean([session.run(["logits"], {"image": (grey - mean) / std})[0] for session in sessions], axis=0)
            softmax(logits, product.temperature)

    def scored(predictor: Predictor, key: str) -> None:
        calls[key] = [predictor.class_names.index(p.label) for p in predictor.predict_files(files, batch_size=batch)]

    def product_run() -> None:
        scored(product, "onnxruntime")

    def torch_run() -> None:  # the torch backend is slower: fewer images (its rate is per image all the same)
        calls["torch"] = [reference.class_names.index(p.label)
                          for p in reference.predict_files(files[:torch_files], batch_size=batch)]

    timings = interleaved_best({"decode": decode_only, "plain": plain, "product": product_run, "torch": torch_run})
    rate = {name: round((torch_files if name == "torch" else len(files)) / seconds, 1) for name, seconds in timings.items()}
    return {
        "images": len(files), "batch": batch, "image_size": f"{size} px JPEGs",
        "decode_alone_images_per_s": rate["decode"], "plain_onnxruntime_images_per_s": rate["plain"],
        "product_onnxruntime_images_per_s": rate["product"], "product_torch_images_per_s": rate["torch"],
        "ratio_product_over_plain_onnxruntime": round(rate["product"] / rate["plain"], 3),
        "ratio_onnxruntime_over_torch_backend": round(rate["product"] / rate["torch"], 2),
        "calls_identical_between_backends": calls["onnxruntime"][:torch_files] == calls["torch"],
    }


def heat_maps(model: Path, films: list[Path]) -> dict:
    product, reference = Predictor(model, backend="onnxruntime"), Predictor(model, backend="torch")
    network = reference.networks[0]
    torch_model, layer = network.model, models.cam_target_layer(network.model, network.spec)
    positive = product.positive_index or 0
    batches = [network.prepare(read_xray(path, max_side=READ_MAX_SIDE))[None] for path in films]
    onnx_engine = product.networks[0].engine

    def grad_cam() -> list[np.ndarray]:
        return [explain.compute_cam(torch_model, torch.from_numpy(b), layer, positive) for b in batches]

    def one_pass_torch() -> list[np.ndarray]:
        return [network.engine.forward(b, False, "gradcam", positive).heatmaps for b in batches]

    def one_pass_onnx() -> list[np.ndarray]:
        return [onnx_engine.forward(b, False, "gradcam", positive).heatmaps for b in batches]

    def product_films(predictor: Predictor) -> None:
        for prediction in predictor.predict_files(films, cam="gradcam", batch_size=1):
            assert prediction.ok and prediction.overlay is not None and prediction.cam_method == explain.ONE_PASS

    difference = float(np.mean([np.abs(a - b).mean() for a, b in zip(grad_cam(), one_pass_onnx())]))
    seconds = interleaved_best({"gradcam": grad_cam, "torch": one_pass_torch, "onnx": one_pass_onnx,
                                "product_onnx": lambda: product_films(product),
                                "product_torch": lambda: product_films(reference)})
    ms = {name: round(1000 * value / len(films), 1) for name, value in seconds.items()}
    return {
        "films": len(films), "image_sizes": "original full-resolution JPEGs",
        "gradcam_pytorch_grad_cam_ms": ms["gradcam"], "one_pass_torch_ms": ms["torch"],
        "one_pass_onnxruntime_ms": ms["onnx"],
        "speedup_one_pass_torch_over_gradcam": round(seconds["gradcam"] / seconds["torch"], 2),
        "speedup_one_pass_onnxruntime_over_gradcam": round(seconds["gradcam"] / seconds["onnx"], 2),
        "mean_abs_difference_one_pass_vs_gradcam": float(f"{difference:.2g}"),
        "product_onnxruntime_ms_per_film": ms["product_onnx"], "product_torch_ms_per_film": ms["product_torch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--images", default=str(DATA / "kermany_site"), help="224 px JPEGs in class folders")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--torch-n", type=int, default=64, help="images for the torch backend's bulk rate")
    parser.add_argument("--films", default=str(DATA / "chest_xray_fullres"), help="full-resolution films")
    parser.add_argument("--n-films", type=int, default=8)
    parser.add_argument("--skip-heat-maps", action="store_true")
    args = parser.parse_args()
    files = sorted(path for path in Path(args.images).rglob("*") if is_image_file(path))[: args.n]
    films = sorted(path for path in Path(args.films).rglob("*") if is_image_file(path))[: args.n_films]
    with tempfile.TemporaryDirectory() as folder:
        model = exported_copy(Path(args.model), Path(folder))
        report("bulk scoring (probability and call, batches, no heat map)", {"model": args.model, **bulk(model, files, args.batch, args.torch_n)})
        if not args.skip_heat_maps:
            report("probability + heat map per film (one at a time)", {"model": args.model, **heat_maps(model, films)})


if __name__ == "__main__":
    main()
