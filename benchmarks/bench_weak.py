"""Ch. 4 dense scoring (one forward of the fully-convolutional net) vs cropping every window and
scoring each crop (the Ch. 3 way, lib/patches.crop_patches + one batched forward).

Usage: PYTHONPATH=src python benchmarks/bench_weak.py [--repeats 3] [--no-full]
       [--full-sides 500 1000]

The windows are the dense map's own cells (side = the net's input size, step = its stride), so
both paths score the same windows with the same weights (random: speed does not depend on them).
Scores agree to float precision only for a net without zero padding: with padding, a crop sees
zeros at its border where the dense net sees the neighbouring pixels, so the padded nets' max
difference measures that border effect, not an error. The speed-up is bounded by the windows'
overlap, (window / stride)²: 9 for the mini net (24 px, stride 8), 49 for AlexNet (224, 32), so
it grows with the image towards that bound. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from oquab_repro.lib.models.alexnet import AlexNet, full_spec, spec_from_params
from oquab_repro.lib.models.fcn import FullyConvNet, from_alexnet
from oquab_repro.lib.patches import crop_patches
from oquab_repro.params import WEAK_SOURCE, read_params_file, validate_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml")
MINI = PARAMS.pretrain.mini


def windows(fcn: FullyConvNet, n: int, m: int, size: int) -> torch.Tensor:
    """XYXY boxes of the windows the n × m dense cells score (row-major, as the flattened map)."""
    stride, _ = fcn.geometry()
    ys, xs = torch.meshgrid(torch.arange(n) * stride, torch.arange(m) * stride, indexing="ij")
    x0, y0 = xs.reshape(-1).float(), ys.reshape(-1).float()
    return torch.stack([x0, y0, x0 + size, y0 + size], dim=1)


@torch.no_grad()
def compare(name: str, fcn: FullyConvNet, side: int, repeats: int, batch: int) -> None:
    size = fcn.spec.input_size
    image = torch.randn(3, side, side)
    fcn(image[None])  # warm-up
    tic = time.perf_counter()
    for _ in range(repeats):
        dense = fcn(image[None])[0]
    t_dense = (time.perf_counter() - tic) / repeats
    k, n, m = dense.shape
    boxes = windows(fcn, n, m, size)
    tic = time.perf_counter()
    for _ in range(repeats):
        crops = crop_patches(image, boxes, size)
        scores = torch.cat([fcn(chunk).flatten(1) for chunk in crops.split(batch)])
    t_crops = (time.perf_counter() - tic) / repeats
    diff = (scores - dense.flatten(1).T).abs().max().item()
    print(
        f"{name:34s} {side:4d}² image, {n * m:4d} windows of {size}²: dense {1000 * t_dense:8.1f}"
        f" ms, crops {1000 * t_crops:9.1f} ms, speed-up {t_crops / t_dense:6.1f}×, max |Δscore|"
        f" {diff:.2e}"
    )


def mini_net(padding: bool, classes: int = 20) -> FullyConvNet:
    conv = [{**c.model_dump(), **({} if padding else {"padding": 0})} for c in MINI.net.conv]
    size = (
        MINI.net.input_size if padding else 44
    )  # unpadded convs need a larger window for a 3×3 C5 map
    trunk = AlexNet(spec_from_params(size, conv, MINI.fc_dim[WEAK_SOURCE], MINI.net.dropout), 0)
    return from_alexnet(
        trunk, classes, PARAMS.weak.mini.hidden_dim, PARAMS.weak.mini.dropout
    ).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-full", action="store_true", help="skip the full-size AlexNet")
    parser.add_argument(
        "--full-sides",
        type=int,
        nargs="+",
        default=[500, 1000],
        help="image sides for the full AlexNet (500 = S, 1000 = test scale 2)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    side = round(max(PARAMS.weak.test_scales) * PARAMS.weak.mini.image_size)
    compare("mini net (params.yaml), padded", mini_net(True), side, args.repeats, 256)
    compare("mini net, no padding (exactness)", mini_net(False), side, args.repeats, 256)
    if not args.no_full:
        full = from_alexnet(AlexNet(full_spec(), 0), 80, 2048, 0.5).eval()
        for side in args.full_sides:
            compare("full AlexNet, padded", full, side, 1, 16)


if __name__ == "__main__":
    main()
