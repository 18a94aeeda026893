"""Inference: file → probability + Grad-CAM overlay through the Predictor, against bare timm/torch.

Baseline: the same model (same weights) on a ready, normalised tensor: one forward + GradCAM from
pytorch-grad-cam, nothing else; for an ensemble, the bare sum of that over its members. The product (the
Predictor on its torch backend) additionally reads and decodes the file, resizes, computes the out-of-domain
score and builds the overlay; for a GAP + linear head its Grad-CAM comes from the forward pass (one-pass CAM,
see bench_serving.py for the ONNX Runtime backend). Ratio = product time / baseline time (goal ≤ 1.2).
Usage: python benchmarks/bench_inference.py [--model models/default] [--n 20]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import DATA, REPO, best_of, report  # noqa: E402
from xraycore import Predictor, read_xray  # noqa: E402
from xraycore import models  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(REPO / "models" / "default"))
    parser.add_argument("--images", default=str(DATA / "chest_xray_fullres" / "PNEUMONIA"))
    parser.add_argument("--n", type=int, default=12)
    args = parser.parse_args()
    files = sorted(Path(args.images).iterdir())[: args.n]
    predictor = Predictor(args.model, device="cpu", backend="torch")
    positive = predictor.positive_index or 0
    images = [read_xray(f) for f in files]
    # The baseline is the bare sum over the model's networks (one for a single model, every member of an
    # ensemble): each network's forward + GradCAM on its own ready tensors, nothing else.
    members = [(network.model, models.cam_target_layer(network.model, network.spec),
                [network.to_tensor(image)[None] for image in images]) for network in predictor.networks]

    def product() -> None:
        for prediction in predictor.predict_files(files, cam="gradcam", batch_size=1):
            assert prediction.ok and prediction.overlay is not None and prediction.backend == "torch"

    def baseline() -> None:
        for model, layer, tensors in members:
            cam = GradCAM(model=model, target_layers=[layer])
            for tensor in tensors:
                heat = cam(input_tensor=tensor, targets=[ClassifierOutputTarget(positive)])
                torch.softmax(cam.outputs, dim=1)
                assert heat.shape[0] == 1
            cam.activations_and_grads.release()

    engine = predictor.networks[0].engine
    one_pass_weights = engine.cam_weights

    def product_backward() -> None:  # the same with one-pass CAM switched off: pytorch-grad-cam, as before it
        engine.cam_weights = None
        try:
            product()
        finally:
            engine.cam_weights = one_pass_weights

    product(), baseline(), product_backward()  # warm-up
    product_s, baseline_s, backward_s = best_of(product), best_of(baseline), best_of(product_backward)
    report("inference (file → probability + Grad-CAM overlay, one image at a time)", {
        "images": len(files), "image_sizes": "original full-resolution JPEGs", "networks": len(predictor.networks),
        "product_ms_per_image": round(1000 * product_s / len(files), 1),
        "baseline_ms_per_image": round(1000 * baseline_s / len(files), 1),
        "ratio_product_over_baseline": round(product_s / baseline_s, 3),
        "product_without_one_pass_cam_ms_per_image": round(1000 * backward_s / len(files), 1),
        "ratio_product_without_one_pass_cam_over_baseline": round(backward_s / baseline_s, 3),
    })


if __name__ == "__main__":
    main()
