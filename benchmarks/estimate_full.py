"""Compute needs of the full profile, stage by stage, from FLOP counts and measured throughput.

Usage: PYTHONPATH=src python benchmarks/estimate_full.py [--gpu-tflops 8] [--markdown]

For every training stage the script builds the *full-size* model of ``params.yaml`` (its ``full``
sections), runs one real training step under ``torch.utils.flop_counter.FlopCounterMode`` (forward
and backward, frozen layers included only as far as autograd really goes) and multiplies the FLOPs
per sample by the samples the stage sees: dataset size × epochs (× variants). Two
throughputs turn FLOPs into hours:

- **measured**: the same full-size step timed on this machine's CPU (``cpu h`` column), and the mini
  profile's step timed the same way (printed, so the mini → full scale-up is visible);
- **assumed GPU**: ``--gpu-tflops`` sustained (default 8 TFLOP/s: about half the FP32 peak of a
  V100/A100-class card, typical for AlexNet-sized convolutions in PyTorch).
  ``gpu h`` = FLOPs / that.

Dataset sizes are the official split sizes; where the thesis' source sets have no published image
count (1000R, 1512), the count is derived in :data:`SOURCE_IMAGES`. Numbers are estimates of
arithmetic, not of I/O: the ImageNet stages are I/O bound without fast local storage.
Prints numbers, asserts nothing; the README's "Reproducing the thesis" table comes from this output.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # sibling benchmark: synthetic VOC-like annotations

from bench_patches import PARAMS, synthetic_annotations  # noqa: E402
from oquab_repro.lib.models.alexnet import (  # noqa: E402
    AlexNet,
    TransferNet,
    freeze,
    spec_from_params,
)
from oquab_repro.lib.models.dcgan import NOISE_DIM, Discriminator, Generator  # noqa: E402
from oquab_repro.lib.models.fcn import from_alexnet, global_max_pool  # noqa: E402
from oquab_repro.lib.patches import label_patches, patch_grid, sample_training_patches  # noqa: E402
from oquab_repro.params import NO_SOURCE, WEAK_SOURCE  # noqa: E402

ILSVRC_TRAIN, ILSVRC_VAL = 1_281_167, 50_000
MEAN_IMAGES_PER_SYNSET = 14_197_122 / 21_841  # fall-2011 ImageNet: images / synsets ≈ 650
SOURCE_IMAGES = {
    "in1000c": ILSVRC_TRAIN,
    "in1000r": round(1000 * MEAN_IMAGES_PER_SYNSET),  # 1000 random fall-2011 synsets
    "in1512": ILSVRC_TRAIN + round(512 * MEAN_IMAGES_PER_SYNSET),  # ILSVRC + 512 added synsets
}
SOURCE_CLASSES = {"in1000c": 1000, "in1000r": 1000, "in1512": 1512}
VOC07_TRAINVAL, VOC07_TEST = 5_011, 4_952
VOC_CLASSES = 20
WEAK_IMAGES = {
    "voc": (5_717, 5_823),
    "coco": (82_783, 40_504),
}  # VOC 2012 train/val, COCO 2014 train/val
WEAK_CLASSES = {"voc": 20, "coco": 80}
GAN_IMAGES = {"lsun_bedroom": 3_033_042, "lfw": 13_233}


@dataclass
class Row:
    stage: str
    runs: int
    samples: float  # samples processed by one run (all epochs)
    flops_per_sample: float
    note: str

    @property
    def flops(self) -> float:
        return self.runs * self.samples * self.flops_per_sample


def step_flops(step: Callable[[], None], batch: int) -> float:
    """FLOPs per sample of one training step (forward + backward + nothing else)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch


def step_seconds(step: Callable[[], None], batch: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds per sample of one training step on this CPU."""
    step()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - tic)
    return best / batch


def classifier_step(model: nn.Module, size: int, classes: int, batch: int) -> Callable[[], None]:
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def gan_step(gf: int, df: int, size: int, batch: int) -> Callable[[], None]:
    """One DCGAN iteration: a discriminator step on real + fake, then a generator step."""
    g, d = Generator(gf, size), Discriminator(df, size)
    og, od = torch.optim.Adam(g.parameters(), 2e-4), torch.optim.Adam(d.parameters(), 2e-4)
    real = torch.randn(batch, 3, size, size)
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def step() -> None:
        fake = g(torch.randn(batch, NOISE_DIM))
        od.zero_grad(set_to_none=True)
        (
            F.binary_cross_entropy_with_logits(d(real), ones)
            + F.binary_cross_entropy_with_logits(d(fake.detach()), zeros)
        ).backward()
        od.step()
        og.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(d(fake), ones).backward()
        og.step()

    return step


def weak_step(model: nn.Module, size: int, classes: int, batch: int) -> Callable[[], None]:
    """One Ch. 4 step: the fully-convolutional net on a padded S×S image, global
    max pool, K logistic losses."""
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch, classes)).float()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        scores, _ = global_max_pool(model(x))
        F.binary_cross_entropy_with_logits(scores, y, reduction="sum").backward()
        opt.step()

    return step


def full_alexnet(fc_dim: int, classes: int) -> AlexNet:
    net = PARAMS.pretrain.full.net
    return AlexNet(
        spec_from_params(net.input_size, [c.model_dump() for c in net.conv], fc_dim, net.dropout),
        classes,
    )


def transfer_patches_per_image(n: int = 400) -> tuple[float, float]:
    """Mean training patches (positives + kept background) and all grid
    patches per VOC-sized image."""
    p = PARAMS.patches
    gen = torch.Generator().manual_seed(0)
    train = total = 0
    for w, h, boxes, labels in synthetic_annotations(n, seed=0):
        grid, _ = patch_grid(w, h, tuple(p.scales), p.step_fraction)
        labelled = label_patches(grid, boxes, labels, p.min_patch_fraction, p.min_object_fraction)
        train += len(sample_training_patches(labelled, p.background_fraction, gen))
        total += len(grid)
    return train / n, total / n


def pretrain_rows(batch: int, speed: dict[str, float]) -> list[Row]:
    size, pre, out = PARAMS.pretrain.full.net.input_size, PARAMS.pretrain.full, []
    for source, images in SOURCE_IMAGES.items():
        model = full_alexnet(pre.fc_dim[source], SOURCE_CLASSES[source])
        step = classifier_step(model, size, SOURCE_CLASSES[source], batch)
        flops = step_flops(step, batch)
        if "alexnet" not in speed:  # timed once: seconds per FLOP of the family
            speed["alexnet"] = step_seconds(step, batch) / flops
        out.append(
            Row(
                f"pretrain@{source}",
                1,
                images * pre.max_epochs,
                flops,
                f"{images:,} images × {pre.max_epochs} epochs",
            )
        )
    return out


def transfer_rows(batch: int) -> list[Row]:
    """A row per transfer variant (NO PRETRAIN, source none: all layers trained), with its tests."""
    size, pre, tr, out = (
        PARAMS.pretrain.full.net.input_size,
        PARAMS.pretrain.full,
        PARAMS.transfer,
        [],
    )
    per_image_train, per_image_all = transfer_patches_per_image()
    for variant, spec in tr.variants.items():
        trunk = full_alexnet(
            tr.full.scratch_fc_dim if spec.source == NO_SOURCE else pre.fc_dim[spec.source], 0
        )
        freeze(trunk, spec.frozen)
        model = TransferNet(
            trunk, [tr.full.hidden_dim] * (spec.adaptation_layers - 1), VOC_CLASSES + 1, 0.5
        )
        flops = step_flops(classifier_step(model, size, VOC_CLASSES + 1, batch), batch)
        samples = VOC07_TRAINVAL * per_image_train * tr.full.max_epochs
        test_flops = (
            VOC07_TEST
            * per_image_all
            * step_flops(lambda m=model: m.eval()(torch.randn(batch, 3, size, size)), batch)
        )
        out.append(
            Row(
                f"transfer@{variant}",
                1,
                samples,
                flops + test_flops / samples,
                f"{per_image_train:.0f} training / {per_image_all:.0f} test patches per image ×"
                f" {tr.full.max_epochs} epochs",
            )
        )
    return out


def weak_rows(batch: int) -> list[Row]:
    size, pre, weak, out = (
        PARAMS.pretrain.full.net.input_size,
        PARAMS.pretrain.full,
        PARAMS.weak.full,
        [],
    )
    lo, hi = PARAMS.weak.train_scales
    mean_area = (hi**3 - lo**3) / (
        3 * (hi - lo)
    )  # E[s²] for s ~ U[lo, hi]: pixels grow with the square
    test_area = sum(s * s for s in PARAMS.weak.test_scales)
    for dataset, (train, test) in WEAK_IMAGES.items():
        model = from_alexnet(
            full_alexnet(pre.fc_dim[WEAK_SOURCE], 0),
            WEAK_CLASSES[dataset],
            weak.hidden_dim,
            weak.dropout,
        )
        flops = step_flops(weak_step(model, weak.image_size, WEAK_CLASSES[dataset], batch), batch)
        fwd = step_flops(
            lambda m=model: m.eval()(torch.randn(batch, 3, weak.image_size, weak.image_size)), batch
        )
        samples = train * weak.max_epochs
        # three trained variants (weak sup, full images ≈ one 224-px window, masked
        # pool); test at every scale
        full_images = flops * (size / weak.image_size) ** 2
        per_sample = flops * mean_area * 2 + full_images + test * fwd * test_area * 3 / samples
        out.append(
            Row(
                f"weak@{dataset}",
                1,
                samples,
                per_sample,
                f"{train:,} images of {weak.image_size}² × {weak.max_epochs} epochs × 3 variants;"
                f" {test:,} test images × {len(PARAMS.weak.test_scales)} scales",
            )
        )
    return out


def gan_rows(batch: int, speed: dict[str, float]) -> list[Row]:
    gan, out = PARAMS.gan.full, []
    epochs = max(gan.snapshot_epochs)
    widths = sorted(set(gan.widths.values()))
    for dataset, images in GAN_IMAGES.items():
        per_cell = []
        for gf in widths:
            for df in widths:
                step = gan_step(gf, df, gan.image_size, batch)
                per_cell.append(step_flops(step, batch))
        if "dcgan" not in speed:
            speed["dcgan"] = step_seconds(step, batch) / per_cell[-1]
        out.append(
            Row(
                f"gan@{dataset}",
                1,
                images * epochs,
                sum(per_cell),
                f"{len(per_cell)} cells, {images:,} images × {epochs} epochs each",
            )
        )
    return out


def rows(batch: int) -> tuple[list[Row], dict[str, float]]:
    """One row per full-profile stage family, and measured CPU seconds per FLOP by model family."""
    speed: dict[str, float] = {}
    out = [
        *pretrain_rows(batch, speed),
        *transfer_rows(batch),
        *weak_rows(batch),
        *gan_rows(batch, speed),
    ]
    return out, speed


def mini_seconds_per_flop(batch: int) -> float:
    """The mini AlexNet's measured CPU seconds per FLOP, for comparison with the full-size step."""
    net = PARAMS.pretrain.mini.net
    model = AlexNet(
        spec_from_params(net.input_size, [c.model_dump() for c in net.conv], 128, net.dropout), 60
    )
    step = classifier_step(model, net.input_size, 60, batch * 8)
    return step_seconds(step, batch * 8) / step_flops(step, batch * 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gpu-tflops", type=float, default=8.0, help="assumed sustained GPU throughput (TFLOP/s)"
    )
    parser.add_argument(
        "--batch", type=int, default=4, help="batch of the measured full-size steps"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for the measured steps (1: a core-hour figure)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    table, speed = rows(args.batch)
    mini = mini_seconds_per_flop(args.batch)
    print(
        f"measured CPU throughput ({args.threads} threads): full AlexNet"
        f" {1e-9 / speed['alexnet']:.1f} GFLOP/s, mini AlexNet {1e-9 / mini:.1f} GFLOP/s, full"
        f" DCGAN {1e-9 / speed['dcgan']:.1f} GFLOP/s"
    )
    print(f"assumed GPU: {args.gpu_tflops:g} TFLOP/s sustained\n")
    print("| stage | PFLOP | GPU h | CPU h (measured) | workload |")
    print("| --- | ---: | ---: | ---: | --- |")
    total_gpu = 0.0
    for row in table:
        family = "dcgan" if row.stage.startswith("gan") else "alexnet"
        gpu_h = row.flops / (args.gpu_tflops * 1e12) / 3600
        cpu_h = row.flops * speed[family] / 3600
        total_gpu += gpu_h
        print(
            f"| {row.stage} | {row.flops / 1e15:,.0f} | {gpu_h:,.1f} | {cpu_h:,.0f} | {row.note} |"
        )
    print(f"| **total** | | **{total_gpu:,.0f}** | | |")


if __name__ == "__main__":
    main()
