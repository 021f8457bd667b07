"""Chapter 3 stage speed on the mini profile: the three changes that cut the Ch. 3 wall time.

Usage: PYTHONPATH=src python benchmarks/bench_ch3_speed.py [--images 60] [--repeats 2]

1. Test-image scoring of the PRE-1512 group (PRE-1512, PRE-1512U, 1 and 3 adaptation layers):
   before, each variant's stage scored every test image alone, one forward per scale; now one
   pass through the shared frozen layers C1–C5 feeds the four variants' remaining layers, and
   the patches of several images go through the network in large batches.
2. NO PRETRAIN training data: before, every patch was cropped (roi_align) at every epoch; now
   the ~16k training patches are cropped once (no jitter on mini).
3. Pretraining jitter: before, one torchvision v2 pipeline call per image; now torchvision's
   random-resized-crop parameters per image and one roi_align per batch.

Synthetic inputs with the mini shapes (params.yaml: net, patch scales, image sizes), so the
numbers do not depend on the data stage. The old and new paths run alternately (``--repeats``),
so a busy machine slows both alike; the printed ratios are what to compare. Asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from oquab_repro.lib.models.alexnet import (
    AlexNet,
    spec_from_params,
    split_at,
    to_bundle,
    transfer_network,
)
from oquab_repro.lib.patches import (
    PatchCrops,
    aggregate_scores,
    patch_grid,
    score_image,
    score_images,
)
from oquab_repro.lib.training import precompute
from oquab_repro.params import read_params_file, validate_params
from oquab_repro.pipelines.pretrain.nodes import InMemory, JitteredBatches, transforms

ROOT = Path(__file__).resolve().parents[1]
PARAMS = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml")
NET = PARAMS.pretrain.mini.net
SCALES = tuple(PARAMS.patches.scales)
STEP = PARAMS.patches.step_fraction
DATA = PARAMS.data.mini
CPU = torch.device("cpu")


def _images(n: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    sides = rng.integers(DATA.voc_size_min, DATA.voc_size_max + 1, (n, 2))
    return [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in sides]


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def bench_scoring(n: int, repeats: int) -> None:
    conv = [c.model_dump() for c in NET.conv]
    source = to_bundle(
        AlexNet(
            spec_from_params(
                NET.input_size, conv, PARAMS.pretrain.mini.fc_dim["in1512"], NET.dropout
            ),
            80,
        ),
        [str(i) for i in range(80)],
        NET.mean,
        NET.std,
    )
    hidden = PARAMS.transfer.mini.hidden_dim
    nets = {}
    for v in ("pre_in1512", "pre_in1512u", "pre_in1512_a1", "pre_in1512_a3"):
        spec = PARAMS.transfer.variants[v]
        nets[v] = transfer_network(
            source, None, spec.frozen, [hidden] * (spec.adaptation_layers - 1), 21, seed=0
        ).eval()
    images = _images(n, 0)
    patches = sum(len(patch_grid(im.shape[2], im.shape[1], SCALES, STEP)[0]) for im in images)

    def old() -> None:  # one stage per variant, one forward per scale and image
        with torch.no_grad():
            for net in nets.values():
                for im in images:
                    aggregate_scores(
                        score_image(net, im, SCALES, STEP, NET.input_size, NET.mean, NET.std, CPU)[
                            1
                        ],
                        PARAMS.transfer.k,
                    )

    trunk, _ = split_at(nets["pre_in1512"], 5)
    heads = {v: split_at(m, 5)[1] for v, m in nets.items()}

    def new() -> None:
        score_images(
            ((str(i), im) for i, im in enumerate(images)),
            trunk,
            heads,
            SCALES,
            STEP,
            NET.input_size,
            NET.mean,
            NET.std,
            PARAMS.transfer.k,
            CPU,
        )

    def new_single() -> None:  # batching across images alone, one variant
        score_images(
            ((str(i), im) for i, im in enumerate(images)),
            torch.nn.Sequential(),
            {"a": nets["pre_in1512"]},
            SCALES,
            STEP,
            NET.input_size,
            NET.mean,
            NET.std,
            PARAMS.transfer.k,
            CPU,
        )

    t_old, t_new, t_one = (_best(f, repeats) for f in (old, new, new_single))
    per_variant_old = t_old / len(nets)
    print(f"scoring, {n} test images ({patches / n:.0f} patches each), 4 PRE-1512 variants:")
    print(
        f"  before: {t_old:6.2f} s ({n * len(nets) / t_old:5.1f} image-variants/s)   after:"
        f" {t_new:6.2f} s   ratio ×{t_old / t_new:.1f}"
    )
    print(
        f"  one variant alone: per scale {per_variant_old:6.2f} s vs batched across images"
        f" {t_one:6.2f} s   ratio ×{per_variant_old / t_one:.1f}"
    )
    print(
        f"  extrapolated to the 500 mini test images: before {t_old * 500 / n:5.0f} s (4 stages),"
        f" after {t_new * 500 / n:5.0f} s (1 stage)"
    )


def bench_nopre_crops(n_images: int, repeats: int) -> None:
    images = {str(i): im for i, im in enumerate(_images(n_images, 1))}
    rows = []
    rng = np.random.default_rng(0)
    for key, im in images.items():
        boxes, _ = patch_grid(im.shape[2], im.shape[1], SCALES, STEP)
        keep = rng.random(len(boxes)) < 16000 / 500 / len(
            boxes
        )  # ~32 kept patches per image, as on mini
        rows += [
            {"image_id": key, "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "label": 0}
            for b in boxes[torch.from_numpy(keep)].tolist()
        ]
    ds = PatchCrops(images, pd.DataFrame(rows), NET.input_size, NET.mean, NET.std, flip=False)
    epochs = PARAMS.transfer.mini.max_epochs
    batch = PARAMS.transfer.mini.batch_size

    def old() -> None:
        for _ in range(epochs):
            for _ in DataLoader(ds, batch_size=batch, shuffle=True):
                pass

    def new() -> None:
        cached = precompute(torch.nn.Sequential(), ds, batch, CPU)
        for _ in range(epochs):
            for _ in DataLoader(cached, batch_size=batch, shuffle=True):
                pass

    t_old, t_new = (_best(f, repeats) for f in (old, new))
    scale = 7894 / len(ds)
    print(
        f"NO PRETRAIN training data, {len(ds)} patches × {epochs} epochs (data path only, no"
        " network):"
    )
    print(
        f"  before: {t_old:6.2f} s   after: {t_new:6.2f} s   ratio ×{t_old / t_new:.1f}   (mini's"
        f" 7894 patches: {t_old * scale:.0f} s → {t_new * scale:.0f} s)"
    )


def bench_pretrain_jitter(n: int, repeats: int) -> None:
    cfg = PARAMS.pretrain.mini
    rng = np.random.default_rng(2)
    items = [
        (
            torch.from_numpy(
                rng.integers(0, 256, (3, DATA.source_size, DATA.source_size), dtype=np.uint8)
            ),
            i % 80,
        )
        for i in range(n)
    ]
    train_tf, _ = transforms(cfg.net, cfg.crop_scale_min, cfg.flip)
    per_image = InMemory([], train_tf, "none")
    per_image.items = items
    batched = JitteredBatches(items, cfg.net, cfg.crop_scale_min, cfg.flip)

    def epoch(ds) -> Callable[[], None]:
        return lambda: [None for _ in DataLoader(ds, batch_size=cfg.batch_size, shuffle=True)]

    t_old, t_new = (_best(epoch(d), repeats) for d in (per_image, batched))
    print(f"pretraining jitter, one epoch of {n} {DATA.source_size}px images (data path only):")
    images = (
        sum((60, 60, 80)) * DATA.source_train_per_class
    )  # classes of the mini 1000C / 1000R / 1512 sets (pretrain metrics.json)
    print(
        f"  before: {t_old:6.2f} s   after: {t_new:6.2f} s   ratio ×{t_old / t_new:.1f}  "
        f" ({cfg.max_epochs} epochs of the three mini source sets:"
        f" {cfg.max_epochs * images / n * (t_old - t_new):.0f} s saved)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=60, help="synthetic test images to score")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per path")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (the mini stages use 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    bench_pretrain_jitter(8000, args.repeats)
    bench_nopre_crops(500, args.repeats)
    bench_scoring(args.images, args.repeats)


if __name__ == "__main__":
    main()
