"""Throughput of Ch. 3 patch extraction + labelling, and of transfer-time image scoring.

Usage: PYTHONPATH=src python benchmarks/bench_patches.py [--images 4000] [--score-images 40]

Labelling runs on synthetic VOC-like annotations (500×375 and 375×500 images, 1–5 boxes each, as
in Pascal VOC 2007) so the number does not depend on the data stage; scoring runs the mini and the
full-size AlexNet (random weights: speed does not depend on them) on every grid patch, one batched
forward per scale, and compares with a Python loop over patches. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from oquab_repro.lib.models.alexnet import AlexNet, TransferNet, full_spec, spec_from_params
from oquab_repro.lib.patches import (
    crop_patches,
    label_patches,
    normalise,
    patch_grid,
    sample_training_patches,
    score_image,
)
from oquab_repro.params import read_params_file, validate_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml")
SCALES = tuple(PARAMS.patches.scales)  # the stage's own λ grid, not a copy
MINI_CONV = [layer.model_dump() for layer in PARAMS.pretrain.mini.net.conv]


def synthetic_annotations(n: int, seed: int) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = (500, 375) if rng.random() < 0.7 else (375, 500)
        k = int(rng.integers(1, 6))
        x0, y0 = rng.uniform(0, w * 0.7, k), rng.uniform(0, h * 0.7, k)
        bw, bh = rng.uniform(20, w * 0.6, k), rng.uniform(20, h * 0.6, k)
        boxes = np.stack([x0, y0, np.minimum(x0 + bw, w), np.minimum(y0 + bh, h)], 1)
        out.append(
            (w, h, torch.tensor(boxes, dtype=torch.float32), torch.tensor(rng.integers(1, 21, k)))
        )
    return out


def label_all(
    annotations: list[tuple[int, int, torch.Tensor, torch.Tensor]], seed: int = 0
) -> float:
    """Grid + labels + background sample for every image; returns the seconds spent."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(seed)
    tic = time.perf_counter()
    for w, h, boxes, labels in annotations:
        grid, _ = patch_grid(w, h, SCALES, 0.5)
        lab = label_patches(grid, boxes, labels, 0.2, 0.6)
        sample_training_patches(lab, 0.1, generator)
    return time.perf_counter() - tic


def _worker(n: int, seed: int) -> float:
    """One process: build its own annotations (nothing large crosses the process
    boundary), warm up, time."""
    annotations = synthetic_annotations(n, seed)
    label_all(annotations[:50])
    return label_all(annotations)


def bench_labelling(n: int) -> None:
    one = n / _worker(n, 0)
    with ProcessPoolExecutor(2) as pool:
        seconds = list(pool.map(_worker, [n // 2, n - n // 2], [1, 2]))
    two = n / max(seconds)
    patches = len(patch_grid(500, 375, SCALES, 0.5)[0])
    print(f"labelling: {patches} patches per 500×375 image")
    print(
        f"labelling: {one:8.0f} images/s on 1 core, {two:8.0f} images/s on 2 processes (target ≥"
        " 2000)"
    )


@torch.no_grad()
def bench_scoring(
    name: str, model: torch.nn.Module, size: int, shape: tuple[int, int], n: int, loop_images: int
) -> None:
    model.eval()
    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, *shape, generator=g) * 255).to(torch.uint8) for _ in range(n)]
    device = torch.device("cpu")
    score_image(model, images[0], SCALES, 0.5, size, [0.5] * 3, [0.25] * 3, device)  # warm-up
    tic = time.perf_counter()
    for image in images:
        boxes, _ = score_image(model, image, SCALES, 0.5, size, [0.5] * 3, [0.25] * 3, device)
    batched = n / (time.perf_counter() - tic)
    tic = time.perf_counter()
    for image in images[:loop_images]:
        pixels = image.float() / 255
        for box in patch_grid(shape[1], shape[0], SCALES, 0.5)[0]:
            model(normalise(crop_patches(pixels, box[None], size), [0.5] * 3, [0.25] * 3)).softmax(
                1
            )
    loop = loop_images / (time.perf_counter() - tic)
    print(
        f"scoring {name}: {len(boxes)} patches/image, {batched:7.2f} images/s "
        f"({batched * len(boxes):8.0f} patches/s) batched per scale vs {loop:7.2f} images/s "
        f"with a Python loop over patches (×{batched / loop:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="images to label")
    parser.add_argument(
        "--score-images", type=int, default=40, help="images to score with the mini net"
    )
    parser.add_argument(
        "--full-images", type=int, default=2, help="images to score with the full AlexNet"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for scoring")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads")
    bench_labelling(args.images)
    torch.set_num_threads(args.threads)
    mini = TransferNet(AlexNet(spec_from_params(24, MINI_CONV, 128, 0.5), 0), [128], 21, 0.5)
    bench_scoring("mini net, 140×120 image", mini, 24, (120, 140), args.score_images, 3)
    full = TransferNet(AlexNet(full_spec(4096), 0), [2048], 21, 0.5)
    bench_scoring("full AlexNet, 500×375 image", full, 224, (375, 500), args.full_images, 1)


if __name__ == "__main__":
    main()
