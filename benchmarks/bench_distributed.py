"""Benchmark: torch.distributed ranks on this machine, 2 ranks vs 1, measured in one run.

Usage: python benchmarks/bench_distributed.py [--repeat 1]

Each workload runs under ``torchrun --standalone`` with 1 and with 2 ranks (gloo on CPU, one
intra-op thread per rank, as the mini stages set); the worker times its work on rank 0 between two
barriers (process start-up, imports and rendezvous excluded); the driver prints seconds and ratios:

- ``gan``: a DCGAN grid at mini size (3 × 3 cells of widths 4, 8, 16 on 32 × 32 images, 2 epochs
  over 512 images) trained and every snapshot scored, cells shared among ranks
  (``pipelines/gan/nodes.py`` ``train_cells`` and ``score_cells``);
- ``cgan``: CGAN-C2ST units at mini size (96 pairs of 100-500 points, E = 10 per direction, 10
  epochs, mini's ``pack_members``), shared among ranks (``pipelines/causal/nodes.py``
  ``cgan_c2st``, one joblib worker per rank), beside today's single process with ``workers: 2``
  joblib processes;
- ``pretrain``: one epoch of the mini AlexNet (24 × 24, 120 classes, 6000 + 1200 images, global
  batch 64) with :func:`oquab_repro.lib.training.fit`: one process vs DDP on 2 ranks.

Prints; asserts nothing about time. The machine is shared: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import TensorDataset

from oquab_repro.lib import distributed
from oquab_repro.lib import twosample as ts
from oquab_repro.lib.adversarial import GanConfig, discriminator_classifier
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params
from oquab_repro.lib.training import TrainConfig, fit
from oquab_repro.lib.unit_cache import UnitCache
from oquab_repro.params import GanParams, with_profile
from oquab_repro.pipelines.causal import nodes as causal
from oquab_repro.pipelines.gan import nodes as gan

ROOT = Path(__file__).resolve().parents[1]
PAIRS = 96  # about the 99 Tübingen pairs: 2 stacked models of mini's pack_members (1000 CGANs)
TRAIN = 6000  # images of a mini pretraining epoch (pretrain@in1000c: 6000 train, 1200 val)


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def gan_work(workdir: Path) -> None:

    params = _params()
    section = params["gan"]
    section["mini"].update(eval_samples=200, snapshot_epochs=[1, 2])
    p = with_profile(GanParams, section, "mini")[1]
    gen = torch.Generator().manual_seed(0)
    images = list(torch.rand(512, 3, p.image_size, p.image_size, generator=gen) * 2 - 1)
    real = torch.rand(p.eval_samples, 3, p.image_size, p.image_size, generator=gen) * 2 - 1
    runs = [
        GanConfig(gf=p.widths[g], df=p.widths[d], image_size=p.image_size, batch_size=p.batch_size,
                  lr=2e-4, beta1=0.5, snapshot_epochs=(1, 2), seed=0)
        for g, d in gan.grid_cells()
    ]  # fmt: skip
    trained = gan.train_cells(images, runs, Checkpointer(workdir), torch.device("cpu"), 0, "bench")
    snapshots = {
        gan.cell_name(g, d): s for (g, d), (s, _) in zip(gan.grid_cells(), trained, strict=True)
    }

    def featurise(x: torch.Tensor) -> np.ndarray:
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1).numpy()

    pc = p.pixel_c2st
    pixel = discriminator_classifier(pc.df, pc.epochs, pc.lr, pc.batch_size)
    options = ts.TestOptions.from_params(params["c2st"])
    ref = gan._Reference(real, featurise(real), featurise, options, pixel, 0)
    gan.score_cells(ref, snapshots, p, "bench")


def cgan_work(workdir: Path, workers: int = 1) -> None:
    params = _params()
    params["causal"]["mini"].update(epochs=10, workers=workers)
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(PAIRS):
        n = int(rng.integers(100, 500))
        x = rng.uniform(-2, 2, n)
        y = np.tanh(2 * x) + 0.2 * rng.standard_normal(n)
        pairs.append({"pair_id": f"{i + 1:04d}", "a": causal.standardise(x, "a"),
                      "b": causal.standardise(y, "b")})  # fmt: skip
    causal.cgan_c2st(pairs, params["causal"], params["c2st"], "mini", 0, "cpu", UnitCache(workdir))


def cgan_joblib_work(workdir: Path) -> None:
    cgan_work(workdir, workers=2)


def pretrain_work(workdir: Path) -> None:

    pre = _params()["pretrain"]
    net_params, mini = pre["mini"]["net"], pre["mini"]
    size, classes = net_params["input_size"], 120
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(TRAIN + 1200, 3, size, size, generator=gen)
    y = torch.randint(0, classes, (len(x),), generator=gen)
    torch.manual_seed(0)
    spec = spec_from_params(
        size, net_params["conv"], mini["fc_dim"]["in1000c"], net_params["dropout"]
    )
    cfg = TrainConfig.from_optim(
        type("Optim", (), pre["optim"]), max_epochs=1, batch_size=mini["batch_size"],
        num_workers=0, seed=0,
    )  # fmt: skip
    train, val = TensorDataset(x[:TRAIN], y[:TRAIN]), TensorDataset(x[TRAIN:], y[TRAIN:])
    fit(AlexNet(spec, classes), train, val, cfg, torch.device("cpu"), None)


WORK = {
    "gan": gan_work,
    "cgan": cgan_work,
    "cgan_joblib2": cgan_joblib_work,
    "pretrain": pretrain_work,
}


def worker(name: str, out: str) -> None:
    """One workload on this rank; rank 0 writes its wall time between two barriers."""
    w = distributed.init("cpu")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(distributed.broadcast(tmp))  # one folder for all ranks (rank 0's)
        distributed.barrier()
        tic = time.perf_counter()
        WORK[name](workdir)
        distributed.barrier()
        seconds = time.perf_counter() - tic
    if w.is_main:
        Path(out).write_text(json.dumps({"seconds": seconds, "size": w.size}))
    distributed.shutdown()


def measure(name: str, nproc: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
               "PYTHONPATH": str(ROOT), "KEDRO_DISABLE_TELEMETRY": "1"}  # fmt: skip
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", __file__, "--worker", name, str(out)]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return json.loads(out.read_text())["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (the best counts)")
    parser.add_argument("--worker", nargs=2, metavar=("NAME", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    print(f"cores available: {len(os.sched_getaffinity(0))}, load: {os.getloadavg()}")
    plan = [("gan", 1), ("gan", 2), ("cgan", 1), ("cgan", 2), ("cgan_joblib2", 1),
            ("pretrain", 1), ("pretrain", 2)]  # fmt: skip
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repeat):
        for name, nproc in plan:
            seconds = measure(name, nproc)
            best[name, nproc] = min(seconds, best.get((name, nproc), float("inf")))
            print(f"  {name:<13} {nproc} rank(s): {seconds:7.1f} s", flush=True)
    print("\nratios (1 rank / 2 ranks; target >= 1.7 on 2 free cores):")
    for name in ("gan", "cgan", "pretrain"):
        print(f"  {name:<9} speed-up {best[name, 1] / best[name, 2]:.2f}x")
    print(f"  cgan, 2 ranks vs 1 process with 2 joblib workers (today's mini): "
          f"{best['cgan_joblib2', 1] / best['cgan', 2]:.2f}x")  # fmt: skip
    overhead = 2 * best["pretrain", 2] / best["pretrain", 1] - 1
    print(f"  pretrain DDP: 2 ranks cost {overhead:+.0%} core-time over 1 process per epoch")


if __name__ == "__main__":
    main()
