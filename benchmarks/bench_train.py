"""Training: the product's training loop throughput against a bare PyTorch loop.

Same model (registry backbone, same init), same images (decoded once, same size), same batch,
same optimiser; no augmentation in either. The bare loop is what one writes by hand: DataLoader
over a TensorDataset, forward, cross-entropy, backward, step (default memory format).
Ratio = product images/s ÷ bare images/s (goal ≥ 0.95).
Tracking: the same product run again with MLflow tracking on (the default SQLite store); the seconds spent in
the per-epoch tracking call ÷ the epoch's seconds (goal ≤ 0.03), and the one-time start and end (store, params,
tags, files) reported apart, with the wall time of the tracked over the untracked run.
Usage: python benchmarks/bench_train.py [--backbone mobilenetv2_100] [--size 128] [--images 256] [--no-bare]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, report  # noqa: E402
from xraycore import Run, TrainConfig, build_model, train  # noqa: E402
from xraycore.data import XrayDataset  # noqa: E402
from xraycore.training import tracking  # noqa: E402
from xraycore.training.run_data import prepare_data  # noqa: E402


def bare_loop(images: torch.Tensor, labels: torch.Tensor, backbone: str, batch: int, epochs: int,
              channels_last: bool) -> float:
    torch.manual_seed(0)
    model, _ = build_model(backbone, 2)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch, shuffle=True)
    model.train()
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
    return seen / (time.perf_counter() - start)


def tracking_overhead(config: TrainConfig) -> dict:
    """The product run untracked, then tracked (each in its own runs folder); time inside tracking's calls."""
    spent: dict[str, list[float]] = {"epoch": [], "start": [], "end": []}
    originals = {"epoch": tracking.Tracker.epoch, "start": tracking.start, "end": tracking.end}

    def timed(kind: str):
        def call(*args, **kwargs):
            began = time.perf_counter()
            try:
                return originals[kind](*args, **kwargs)
            finally:
                spent[kind].append(time.perf_counter() - began)
        return call
    walls = {}
    try:
        tracking.Tracker.epoch, tracking.start, tracking.end = timed("epoch"), timed("start"), timed("end")
        for label, on in (("off", False), ("on", True)):
            tracking.configure(enabled=on)
            with tempfile.TemporaryDirectory() as out:
                began = time.perf_counter()
                path = train(config.replace(out=out))
                walls[label] = time.perf_counter() - began
                rows = Run(Path(path)).metrics()
                assert not on or Run(Path(path)).config.get("tracking"), "the tracked run was not tracked"
    finally:
        tracking.Tracker.epoch, tracking.start, tracking.end = originals["epoch"], originals["start"], originals["end"]
        tracking.configure()
    epoch_seconds = sum(row["seconds"] for row in rows) / len(rows)
    per_epoch = sum(spent["epoch"]) / len(spent["epoch"])
    return {"epoch_seconds": round(epoch_seconds, 3), "tracking_seconds_per_epoch": round(per_epoch, 4),
            "ratio_tracking_per_epoch": round(per_epoch / epoch_seconds, 4),
            "tracking_start_seconds": round(sum(spent["start"][-1:]), 3),
            "tracking_end_seconds": round(sum(spent["end"][-1:]), 3),
            "wall_untracked_s": round(walls["off"], 2), "wall_tracked_s": round(walls["on"], 2),
            "ratio_wall_tracked_over_untracked": round(walls["on"] / walls["off"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=192, help="per class")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default=str(DATA / "chest_xray" / "train"), help="class folders")
    parser.add_argument("--no-bare", action="store_true", help="only the tracking on/off comparison")
    args = parser.parse_args()
    folder = Path(args.data)
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(data=str(folder), backbone=args.backbone, pretrained="none", image_size=args.size,
                             epochs=args.epochs, batch_size=args.batch, max_per_class=args.images, loss="ce",
                             val_fraction=0.2, fit_ood=False, out=out, monitor="val_loss")
        overhead = tracking_overhead(config)
        if args.no_bare:
            report("training with MLflow tracking on vs off", {"backbone": args.backbone, "image_size": args.size,
                                                              "batch": args.batch, **overhead})
            return
        path = train(config)
        rows = Run(Path(path)).metrics()
        product = max(row["images_per_second"] for row in rows)
        # the very training images of the product's run, decoded and normalised once, for the bare loop
        splits = prepare_data(config.replace(image_size=args.size))
        dataset = XrayDataset(splits.cache, splits.train, output_size=args.size)
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        labels = torch.tensor([splits.cache.samples[i].label for i in splits.train])
        bare = bare_loop(images, labels, args.backbone, args.batch, args.epochs, channels_last=False)
        bare_cl = bare_loop(images, labels, args.backbone, args.batch, args.epochs, channels_last=True)
    report("training throughput (images/s, forward + backward + step)", {
        "backbone": args.backbone, "image_size": args.size, "batch": args.batch,
        "product_images_per_s": round(product, 2), "bare_images_per_s": round(bare, 2),
        "bare_channels_last_images_per_s": round(bare_cl, 2),
        "ratio_product_over_bare": round(product / bare, 3),
        "ratio_product_over_bare_channels_last": round(product / bare_cl, 3),
        "tracking": overhead,
    })


if __name__ == "__main__":
    main()
