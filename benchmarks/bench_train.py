"""Training: the product's training loop throughput against a bare PyTorch loop.

Same model (registry backbone, same init), same images (decoded once, same size), same batch,
same optimiser; no augmentation in either. The bare loop is what one writes by hand: DataLoader
over a TensorDataset, forward, cross-entropy, backward, step (default memory format).
Ratio = product images/s ÷ bare images/s (goal ≥ 0.95).
Usage: python benchmarks/bench_train.py [--backbone mobilenetv2_100] [--size 128] [--images 256]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="mobilenetv2_100")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=192, help="per class")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    folder = DATA / "chest_xray" / "train"
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(data=str(folder), backbone=args.backbone, pretrained="none", image_size=args.size,
                             epochs=args.epochs, batch_size=args.batch, max_per_class=args.images, loss="ce",
                             val_fraction=0.2, fit_ood=False, out=out, monitor="val_loss")
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
    })


if __name__ == "__main__":
    main()
