"""Data: one epoch of the product's pipeline against torchvision ImageFolder + PIL on the same folder.

Both produce normalised 3×S×S float batches with the same augmentation (h-flip + rotation).
The product decodes every image once into a uint8 cache (kept on disk between runs) and
augments whole batches at once with kornia (one affine resample per image, fused normalisation); the
baseline decodes every JPEG every epoch, as a plain ImageFolder pipeline does. Reported: the
cold first epoch (cache being built) and a warm epoch. Ratio = baseline s ÷ product s (goal ≥ 3).
Usage: python benchmarks/bench_data.py [--size 224] [--workers 0]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, report  # noqa: E402
from xraycore.data import ImageCache, scan_class_folders, training_input  # noqa: E402


def epoch(loader) -> int:
    seen = 0
    for images, *_ in loader:
        seen += len(images)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", default=str(DATA / "chest_xray" / "train"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    augment = [{"name": "hflip"}, {"name": "rotate", "degrees": 10}]

    baseline_set = datasets.ImageFolder(args.folder, transform=transforms.Compose([
        transforms.Grayscale(3), transforms.Resize((args.size, args.size)), transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    baseline_loader = torch.utils.data.DataLoader(baseline_set, batch_size=args.batch, shuffle=True, num_workers=args.workers)

    def product_epoch(cache: ImageCache) -> int:
        dataset, finish = training_input(cache, list(range(len(cache))), augment, args.size)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers)
        return sum(len(finish(images)) for images, *_ in loader)

    with tempfile.TemporaryDirectory() as cache_dir:
        samples, _ = scan_class_folders(args.folder)
        start = time.perf_counter()
        n = product_epoch(ImageCache(samples, args.size, cache_dir=Path(cache_dir)))
        cold = time.perf_counter() - start
        start = time.perf_counter()
        product_epoch(ImageCache(samples, args.size, cache_dir=Path(cache_dir)))  # a later run: cache on disk
        warm = time.perf_counter() - start
    start = time.perf_counter()
    m = epoch(baseline_loader)
    baseline = time.perf_counter() - start
    report("data pipeline, one epoch", {
        "images": n, "baseline_images": m, "size": args.size, "workers": args.workers,
        "baseline_s": round(baseline, 2), "product_cold_s": round(cold, 2), "product_warm_s": round(warm, 2),
        "ratio_baseline_over_product_warm": round(baseline / warm, 2),
        "ratio_baseline_over_product_cold": round(baseline / cold, 2),
    })


if __name__ == "__main__":
    main()
