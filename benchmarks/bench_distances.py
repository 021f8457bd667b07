"""Appendix D grid search: is one batched Sinkhorn call per angle worth it, and what does an angle cost?"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import ot

from oquab_repro.params import read_params_file, validate_params
from oquab_repro.pipelines.distances import criteria as C
from oquab_repro.pipelines.distances import nodes

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    cfg = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml").distances
    points = nodes.sample_points(cfg.model_dump(), seed=0)
    density = nodes.estimate_density(points, cfg.model_dump())
    s = cfg.search
    side = np.linspace(s.side_min, s.side_max, s.side_steps)
    sides = np.array([(a, b) for a in side for b in side])
    axis, p_mass, cost = nodes._emd_setup(points.to_numpy(), cfg)
    q_mass = nodes._coarse_masses(np.deg2rad(20), sides, axis, cfg.supersample)

    looped, t_loop = _timed(C.emd_sinkhorn, p_mass, q_mass, cost, cfg.sinkhorn_reg, cfg.sinkhorn_tol)
    src, dst = p_mass > 0, q_mass.sum(axis=0) > 0  # one batched call must share the union support
    batched, t_batched = _timed(
        lambda: ot.sinkhorn2(p_mass[src], q_mass[:, dst].T, cost[np.ix_(src, dst)], cfg.sinkhorn_reg, stopThr=cfg.sinkhorn_tol)
    )
    _, t_exact = _timed(C.emd_exact, p_mass, q_mass, cost)
    _, t_angle = _timed(nodes._score_angle, 20.0, points.to_numpy(), density, cfg, sides)

    print(f"candidates per angle          : {len(sides)}")
    print(f"Sinkhorn, one call/candidate  : {t_loop:.2f} s per angle (what the stage does)")
    print(f"Sinkhorn, one batched call    : {t_batched:.2f} s per angle")
    print(f"per-candidate over batched    : {t_batched / t_loop:.1f}x faster")
    print(f"max |batched - per-candidate| : {np.abs(np.asarray(batched) - looped).max():.2e}")
    print(f"exact EMD (network simplex)   : {t_exact:.2f} s per angle, {1e3 * t_exact / len(sides):.1f} ms per candidate")
    print(f"all criteria, one angle       : {t_angle:.2f} s; {s.theta_steps} angles on 2 cores ≈ {t_angle * s.theta_steps / 2:.0f} s")


if __name__ == "__main__":
    main()
