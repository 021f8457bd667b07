"""Benchmark: E CGANs of one pair trained as one vectorised model vs a Python loop over them.

Usage: PYTHONPATH=src python benchmarks/bench_ensembles.py [--members 100] [--steps 30]

Times a fixed number of training steps of the full-profile CGAN (params.yaml: causal.cgan and
causal.full) for both directions of one pair at E members per direction, with the ``loop``, ``vmap``
and ``bmm`` backends of oquab_repro.lib.ensembles (same computation, same random draws), prints the
speed ratios, and extrapolates the wall time of the full 99-pair run (training only, then with the
measured cost of the C2STs). Prints; asserts nothing about time (it depends on the machine).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from oquab_repro.lib import twosample as ts
from oquab_repro.lib.ensembles import CGANConfig, train_cgan_ensemble
from oquab_repro.lib.tuebingen import read_pairs
from oquab_repro.params import read_params_file, validate_params

ROOT = Path(__file__).resolve().parents[1]


def time_backend(backend: str, cond: torch.Tensor, target: torch.Tensor, cfg: CGANConfig) -> float:
    """Seconds per training step (one discriminator and one generator update of every member)."""
    start = time.perf_counter()
    train_cgan_ensemble(cond, target, cfg, seed=0, backend=backend)
    return (time.perf_counter() - start) / cfg.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100, help="E, CGANs per direction")
    parser.add_argument("--steps", type=int, default=30, help="training steps timed per backend")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the causal stage uses 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml")
    scale = params.causal.full
    # one step per "epoch" over a batch-sized pair: `epochs` then counts steps exactly
    cfg = CGANConfig(**params.causal.cgan.model_dump(), hidden=scale.hidden, epochs=args.steps, batch_size=scale.batch_size)
    m = 2 * args.members  # both directions of one pair, as in the causal stage
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, scale.batch_size, 1, generator=gen)
    y = torch.tanh(2 * x) + 0.2 * torch.randn(m, scale.batch_size, 1, generator=gen)
    print(f"E = {args.members} per direction ({m} CGANs), hidden {scale.hidden}, batch {scale.batch_size}, "
          f"{args.steps} steps, {torch.get_num_threads()} thread(s)")
    seconds = {}
    for backend in ("bmm", "vmap", "loop"):
        time_backend(backend, x, y, CGANConfig(**{**cfg.__dict__, "epochs": 2}))  # warm-up
        seconds[backend] = time_backend(backend, x, y, cfg)
        print(f"  {backend:5s} {1e3 * seconds[backend]:8.2f} ms/step")
    for backend in ("bmm", "vmap"):
        print(f"speed-up of {backend} over the loop: {seconds['loop'] / seconds[backend]:.1f}x")
    fastest = min(("bmm", "vmap"), key=seconds.get)

    # extrapolation to the full run: steps = epochs · ⌊n / batch⌋ per pair, n capped at max_points
    files = {p.stem: p.read_text for p in (ROOT / "data/01_raw/tuebingen").glob("*.txt")}
    if not files:
        print("data/01_raw/tuebingen is empty: run `dvc repro data_tuebingen` for the extrapolation")
        return
    pairs, _ = read_pairs(files)
    sizes = np.array([min(len(p.a), scale.max_points) for p in pairs])
    steps = int(sum(scale.epochs * (n // scale.batch_size) for n in sizes))
    train_hours = steps * seconds[fastest] / 3600
    print(f"full run: {len(pairs)} pairs, {steps} training steps per direction pair at E = {args.members}")
    print(f"  training, one pair at a time ({fastest}): {train_hours:.1f} h; "
          f"with a loop over members: {steps * seconds['loop'] / 3600:.1f} h")
    # C2ST cost of one pair's 2E synthetic datasets at the median pair size
    n = int(np.median(sizes))
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(m, n, 2)), rng.normal(size=(m, n, 2))
    start = time.perf_counter()
    for j in range(m):
        ts.c2st(real[j], fake[j], ts.knn_classifier, params.c2st.test_fraction, j)
        ts.mmd_linear(real[j], fake[j], j, bandwidth=1.0)
    ts.c2st_nn_batched(real, fake, params.c2st.nn_hidden, params.c2st.nn_epochs, params.c2st.nn_lr, params.c2st.test_fraction, 0)
    c2st_hours = (time.perf_counter() - start) * len(pairs) * float(np.mean(sizes)) / n / 3600
    print(f"  C2STs (KNN, NN, MMD of {m} datasets per pair, scaled from n = {n}): ~{c2st_hours:.1f} h")
    print(f"  total CGAN-C2ST, E = {args.members}: ~{train_hours + c2st_hours:.1f} h on this machine "
          "(pairs of equal size share one model in the stage, which only shortens this)")


if __name__ == "__main__":
    main()
