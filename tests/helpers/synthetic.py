"""Small generated chest-X-ray-like datasets: the tests' stand-in for real data.

NORMAL images are smooth "lungs"; PNEUMONIA images add bright blotches, so a tiny network can
learn the difference in one or two epochs. File names follow Kermany's patterns so patient
grouping is exercised.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def xray_like(rng: np.random.Generator, size: int, pneumonia: bool) -> np.ndarray:
    """A grey uint8 image: dark lung fields in a brighter body, plus opacities when pneumonia."""
    y, x = np.mgrid[0:size, 0:size] / size
    body = 0.55 + 0.1 * np.cos(3 * (x - 0.5))
    lungs = np.exp(-(((x - 0.3) / 0.12) ** 2 + ((y - 0.5) / 0.28) ** 2)) + np.exp(-(((x - 0.7) / 0.12) ** 2 + ((y - 0.5) / 0.28) ** 2))
    image = body - 0.35 * lungs
    if pneumonia:
        for _ in range(2):
            cx, cy = rng.uniform(0.25, 0.75), rng.uniform(0.35, 0.65)
            image += 0.45 * np.exp(-(((x - cx) / 0.08) ** 2 + ((y - cy) / 0.08) ** 2))
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 16, size: int = 48, seed: int = 0,
                 splits: tuple[str, ...] = ("",), per_patient: int = 2, classes=("NORMAL", "PNEUMONIA")) -> Path:
    """Write class folders (optionally under split folders) of Kermany-named JPEGs; return root."""
    rng = np.random.default_rng(seed)
    patient = 100
    for split in splits:
        for class_name in classes:
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                if i % per_patient == 0:
                    patient += 1
                kind = "virus" if i % 3 == 0 else "bacteria"
                name = (f"IM-{patient:04d}-{i:04d}.jpeg" if class_name == "NORMAL"
                        else f"person{patient}_{kind}_{i}.jpeg")
                pixels = xray_like(rng, size, pneumonia=class_name != "NORMAL")
                Image.fromarray(pixels).save(folder / name, quality=95)
    return root
