"""Benchmark: cost of the causal stage's work units, packed or not, and the full run it implies.

Usage: python benchmarks/bench_causal_units.py [--steps 40] [--packs 1 4 20] [--threads 1]

A unit is one Tübingen pair's 2E CGANs (full profile: E = 100, hidden 128, batch 16, params.yaml
causal.full), trained with the original alternating schedule. The script times ``--steps``
training steps of 1, 4, ... units packed into one stacked model (``causal.<profile>.pack_members``
sets the pack; results do not depend on it), prints the speed-up per unit-step over training one
unit at a time, times one unit's two-sample tests (KNN, NN, MMD of its 2E synthetic datasets) at two
pair sizes, and extrapolates the full run's core-hours from the pair sizes of data/01_raw/tuebingen
after the stage's preprocessing (5 % outliers out, ≤ max_points). Prints; asserts nothing about
time. Times are CPU seconds of this single-threaded process (``time.process_time``), so other jobs
on a shared machine inflate them little; still compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from oquab_repro.lib.ensembles import CGANConfig, EnsembleUnit, steps_per_run, train_units
from oquab_repro.lib.tuebingen import read_pairs
from oquab_repro.params import read_params_file, validate_params
from oquab_repro.pipelines.causal.units import UnitSettings, score_unit

ROOT = Path(__file__).resolve().parents[1]


def unit(i: int, n: int, members: int) -> EnsembleUnit:
    gen = torch.Generator().manual_seed(i)
    a = torch.randn(n, generator=gen)
    b = torch.tanh(2 * a) + 0.2 * torch.randn(n, generator=gen)
    half = members // 2
    return EnsembleUnit(
        torch.stack([a] * half + [b] * half)[..., None],
        torch.stack([b] * half + [a] * half)[..., None],
        seed=i,
    )


def cpu_seconds(run: Callable[[], object]) -> float:
    """CPU time of this (single-threaded) process: robust to other jobs sharing the machine."""
    start = time.process_time()
    run()
    return time.process_time() - start


def seconds_per_step(
    k: int, cfg: CGANConfig, members: int, steps: int, backend: str = "bmm"
) -> float:
    """CPU seconds per training step of ``k`` packed units: two run lengths,
    so initialisation cancels."""
    one_epoch = CGANConfig(**{**cfg.__dict__, "epochs": 1})
    short, long = (
        cpu_seconds(
            lambda s=s: train_units(
                [unit(i, cfg.batch_size * s, members) for i in range(k)], one_epoch, backend=backend
            )
        )
        for s in (2, 2 + steps)
    )
    return max(long - short, 1e-9) / steps


def test_seconds(n: int, settings: UnitSettings, c2st) -> float:
    rng = np.random.default_rng(0)
    pair = {"pair_id": "0001", "a": rng.normal(size=n), "b": rng.normal(size=n)}
    e = settings.ensemble_size
    samples = torch.as_tensor(rng.normal(size=(2 * e, n, 1)), dtype=torch.float32)
    return cpu_seconds(lambda: score_unit(pair, type("T", (), {"samples": samples})(), settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=40, help="training steps timed per configuration"
    )
    parser.add_argument(
        "--packs", type=int, nargs="+", default=[1, 4, 20], help="units per stacked model"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (the stage uses 1)"
    )
    parser.add_argument("--profile", default="full")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml")
    scale = getattr(params.causal, args.profile)
    cfg = CGANConfig(
        **params.causal.cgan.model_dump(),
        hidden=scale.hidden,
        epochs=scale.epochs,
        batch_size=scale.batch_size,
    )
    members = 2 * scale.ensemble_size
    print(
        f"profile {args.profile}: unit = {members} CGANs (E = {scale.ensemble_size}), hidden"
        f" {scale.hidden}, batch {scale.batch_size}, {torch.get_num_threads()} thread(s),"
        f" {args.steps} steps each"
    )
    seconds_per_step(1, cfg, members, 2)  # warm-up: first calls pay for lazy initialisation
    per_unit_step = {}
    for k in args.packs:
        s = seconds_per_step(k, cfg, members, args.steps)
        per_unit_step[k] = s / k
        print(
            f"  {k:3d} unit(s) packed: {1e3 * s:8.1f} CPU ms/step, {1e3 * s / k:7.2f} CPU ms per"
            " unit-step"
        )
    for k in args.packs[1:]:
        print(
            f"speed-up of packing {k} units over one unit at a time:"
            f" {per_unit_step[args.packs[0]] / per_unit_step[k]:.1f}x"
        )
    loop = seconds_per_step(1, cfg, members, 6, backend="loop")
    print(
        f"  1 unit, member by member (loop backend): {1e3 * loop:8.1f} CPU ms/step "
        f"(stacked is {loop / per_unit_step[args.packs[0]]:.0f}x faster)"
    )

    settings = UnitSettings(cfg, params.c2st, scale.ensemble_size, 0)
    n_small, n_large = min(500, scale.max_points // 2), min(scale.max_points, 2000)
    t_small, t_large = (
        test_seconds(n_small, settings, params.c2st),
        test_seconds(n_large, settings, params.c2st),
    )
    print(
        f"two-sample tests of one unit: {t_small:.1f} CPU s at n = {n_small}, {t_large:.1f} CPU s"
        f" at n = {n_large}"
    )

    files = {p.stem: p.read_text for p in (ROOT / "data/01_raw/tuebingen").glob("*.txt")}
    if not files:
        print(
            "data/01_raw/tuebingen is empty: run `dvc repro data_tuebingen` for the extrapolation"
        )
        return
    pairs, _ = read_pairs(files)
    frac = params.causal.preprocess.outlier_fraction
    sizes = np.array(
        [min(len(p.a) - int(np.floor(len(p.a) * frac)), scale.max_points) for p in pairs]
    )
    steps = np.array([steps_per_run(int(n), cfg) for n in sizes])
    best = min(per_unit_step, key=per_unit_step.get)
    train_one, train_packed = (
        steps.sum() * per_unit_step[args.packs[0]],
        steps.sum() * per_unit_step[best],
    )
    slope = (t_large - t_small) / (n_large - n_small)
    tests = float(sum(t_small + slope * (n - n_small) for n in sizes))
    print(
        f"full causal run ({len(pairs)} pairs, {sizes.sum()} points, {steps.sum()} unit-steps, "
        f"largest unit {steps.max()} steps):"
    )
    print(
        f"  training, one unit at a time: {train_one / 3600:.1f} core-h; packed {best} per model:"
        f" {train_packed / 3600:.1f} core-h"
    )
    print(
        f"  two-sample tests: {tests / 3600:.1f} core-h; total ≈"
        f" {(train_packed + tests) / 3600:.1f} core-h (≈"
        f" {(train_packed + tests) / 3600 / max(1, scale.workers):.1f} h wall with"
        f" causal.{args.profile}.workers = {scale.workers})"
    )


if __name__ == "__main__":
    main()
