"""Appendix D at the thesis' 128² grid: how to afford an exact EMD for 15,210 rectangles.

Prints, from this one run on this machine (timings are noisy: compare the ratios):

1. One rectangle at ``grid_size``: POT's dense network simplex on both supports, the same on the
   surplus/deficit cells (p − q)±, column generation on POT's sparse solver seeded with the
   64² potential, and Sinkhorn (``sinkhorn_reg``): time, ratio, |value − dense|.
2. The stage's search (every rectangle on the coarsest grid, shortlists on the finer ones,
   ``transport.keep``) on a subset of rectangles around the optimum, against exhaustive dense
   ``ot.emd2`` at ``grid_size`` on the same subset: same winner? refined values exact? how well
   does each coarse grid rank the rectangles (Spearman)? And the whole stage's search cost
   extrapolated from the per-rectangle times, against an exhaustive exact search.

3. Which frame turns by θ (``distances.rotate``): EMD of the 1.6 × 1.6 square on 64² around the
   best angle, for the sample as drawn and turned by 20°. Turning the data is exactly equivariant;
   turning the model (the thesis' setup) is not: its rasterised edges favour θ = 0.

Usage: ``python benchmarks/bench_distances.py`` (about 15 minutes on 2 idle cores).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import ot
import pandas as pd
from joblib import Parallel, delayed

from oquab_repro.params import read_params_file, validate_params
from oquab_repro.pipelines.distances import nodes
from oquab_repro.pipelines.distances import search as S
from oquab_repro.pipelines.distances import transport as T

ROOT = Path(__file__).resolve().parents[1]
SUBSET_THETAS = [0, 1, 2, 3, 4, 5, 6, 7, 88, 89]  # around the optimum, where rectangles nearly tie
SUBSET_SIDES = [(1.6, 1.6), (1.4, 1.6), (1.6, 1.4), (1.8, 1.8)]


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


_DENSITIES: dict[int, np.ndarray] = {}


def _density(cfg, xy):
    """The data as drawn on the full grid (computed once per sample)."""
    return _DENSITIES.setdefault(id(xy), S.data_density(xy, cfg))


def _histograms(cfg, xy, rect, grid):
    """Data and rectangle histograms on ``grid`` in the stage's frame (``distances.rotate``)."""
    density, model_theta = S.FRAMES[cfg.rotate](rect[0], xy, _density(cfg, xy), cfg)
    q = S.mass(S.coverage(model_theta, np.array([rect[1:]]), cfg))[0]
    return T.pool(S.mass(density), grid), T.pool(q, grid), T.cell_points(grid, cfg.extent)


def _dense_on_supports(p, q, points):
    src, dst = p.ravel() > 0, q.ravel() > 0
    return ot.emd2(
        p.ravel()[src],
        q.ravel()[dst],
        ot.dist(points[src], points[dst], metric="euclidean"),
        numItermax=10**9,
    )


def one_rectangle(cfg, xy, rect) -> None:
    n, mid = cfg.grid_size, cfg.transport.coarse_grids[-1]
    p, q, pts = _histograms(cfg, xy, rect, n)
    exact, t_support = _timed(_dense_on_supports, p, q, pts)
    (diff, _), t_diff = _timed(T.emd_exact, p, q, pts)
    pc, qc, ptc = _histograms(cfg, xy, rect, mid)
    (_, guide), t_mid = _timed(T.emd_exact, pc, qc, ptc)
    (seeded, _), t_seeded = _timed(
        T.emd_exact, p, q, pts, guide=guide, guide_cell=2 * cfg.extent / mid
    )
    (sink, _), t_sink = _timed(
        T.emd_sinkhorn, p, q, pts, reg=cfg.sinkhorn_reg, tol=cfg.sinkhorn_tol
    )
    print(f"\nθ={rect[0]}°, a={rect[1]}, b={rect[2]} on {n}²: W₁ = {exact:.10f}")
    rows = [
        ("dense ot.emd2, both supports", t_support, exact),
        ("dense ot.emd2 on (p − q)±", t_diff, diff),
        (f"sparse column generation from {mid}² (+{t_mid:.2f} s)", t_seeded + t_mid, seeded),
        (f"Sinkhorn reg={cfg.sinkhorn_reg} (not W₁)", t_sink, sink),
    ]
    for name, t, v in rows:
        print(
            f"  {name:48s} {t:7.2f} s  {t_support / t:6.1f}x faster  |W - exact| ="
            f" {abs(v - exact):.1e}"
        )


def _exhaustive(cfg, xy, rects) -> np.ndarray:
    jobs = (delayed(T.emd_exact)(*_histograms(cfg, xy, r, cfg.grid_size)) for r in rects)
    return np.array([v for v, _ in Parallel(n_jobs=-1)(jobs)])


def _search(cfg, xy, rects) -> tuple[dict[int, pd.Series], dict[int, int]]:
    grids = S.grids(cfg)
    first = [T.emd_exact(*_histograms(cfg, xy, r, grids[0]))[0] for r in rects]
    previous = dict(zip(grids[1:], grids[:-1], strict=True))

    def evaluate(ids, grid, guides):
        cell = 2 * cfg.extent / previous[grid]
        jobs = (
            delayed(S.solve_one)(
                "emd", tuple(rects[i]), grid, xy, _density(cfg, xy), cfg, guides.get(i), cell
            )
            for i in ids
        )
        return list(Parallel(n_jobs=-1)(jobs))

    return T.refine(pd.Series(first), grids, cfg.transport.keep, evaluate)


def subset_search(cfg, xy) -> None:
    rects = [(t, a, b) for t in SUBSET_THETAS for a, b in SUBSET_SIDES]
    exact, t_exhaustive = _timed(_exhaustive, cfg, xy, rects)
    (values, sizes), t_search = _timed(_search, cfg, xy, rects)
    grids = S.grids(cfg)
    final = values[grids[-1]]
    print(f"\nsubset: {len(rects)} rectangles (θ ∈ {SUBSET_THETAS}, (a, b) ∈ {SUBSET_SIDES})")
    print(
        f"  exhaustive dense ot.emd2 at {cfg.grid_size}²: {t_exhaustive:.1f} s; the search:"
        f" {t_search:.1f} s ({t_exhaustive / t_search:.1f}x faster), solving {list(sizes.values())}"
        f" rectangles on {grids}"
    )
    print(
        f"  exhaustive winner {rects[int(np.argmin(exact))]}, search winner"
        f" {rects[int(final.idxmin())]}"
    )
    done = final.dropna()
    print(
        "  refined values vs exhaustive: max |diff| ="
        f" {np.abs(done.to_numpy() - exact[done.index]).max():.1e}"
    )
    order = np.argsort(exact)
    print("  exact rank → value, and rank on each coarse grid:")
    for rank, i in enumerate(order[:8], 1):
        ranks = [
            int((values[g].dropna() < values[g][i]).sum()) + 1 if pd.notna(values[g][i]) else None
            for g in grids[:-1]
        ]
        print(
            f"    {rank:2d}. θ={rects[i][0]:2d}° ({rects[i][1]}, {rects[i][2]}) W₁={exact[i]:.6f} "
            f" coarse ranks {ranks}"
        )
    for g in grids[:-1]:
        both = values[g].dropna()
        rho = pd.Series(exact[both.index]).corr(pd.Series(both.to_numpy()), method="spearman")
        shift = both.to_numpy() - exact[both.index]
        print(
            f"  {g}² vs {cfg.grid_size}²: Spearman {rho:.3f} over {len(both)}, shift W_{g} −"
            f" W_{cfg.grid_size} from {shift.min():+.1e} to {shift.max():+.1e} (spread"
            f" {np.ptp(shift):.1e})"
        )


def stage_cost(cfg, xy) -> None:
    """The stage's EMD search (one angle's rectangles on the coarsest grid as the stage batches
    them, then one shortlisted rectangle per finer grid) against an exhaustive exact search."""
    grids = S.grids(cfg)
    emd_only = cfg.model_copy(update={"criteria": ["emd"]})
    n_sides = cfg.search.side_steps**2
    _, t_angle = _timed(S.score_angle, 3.0, xy, _density(cfg, xy), emd_only)
    t = {grids[0]: t_angle / n_sides}
    guide = None
    rect = (3, 1.6, 1.6)
    for prev, grid in zip(grids[:-1], grids[1:], strict=True):
        (_, guide), t[grid] = _timed(
            S.solve_one, "emd", rect, grid, xy, _density(cfg, xy), cfg, guide, 2 * cfg.extent / prev
        )
    _, t_dense = _timed(T.emd_exact, *_histograms(cfg, xy, rect, cfg.grid_size))
    n = cfg.search.theta_steps * n_sides
    keep = [n, *cfg.transport.keep]
    search = sum(k * t[g] for k, g in zip(keep, grids, strict=True))
    print(
        f"\nwhole stage: {n} rectangles; EMD per rectangle "
        + ", ".join(f"{g}²: {t[g]:.3f} s" for g in grids)
        + f" (the first batched per angle, the others seeded); dense at {cfg.grid_size}²:"
        f" {t_dense:.1f} s"
    )
    print(
        f"  search ≈ {search:.0f} core-s (solving {keep} on {grids}) vs exhaustive exact "
        f"≈ {n * t_dense / 3600:.0f} core-h: {n * t_dense / search:.0f}x faster"
    )


def frames(cfg, xy) -> None:
    """EMD around the best angle for the sample as drawn and turned by 20°, in both frames."""
    deltas = range(-4, 7)
    print(
        "\nframe: EMD of the 1.6 × 1.6 square on 64², θ = base + δ for δ in"
        f" {deltas.start}..{deltas.stop - 1}°"
    )
    for frame in S.FRAMES:
        fcfg = cfg.model_copy(update={"rotate": frame})
        for base in (0, 20):
            turned = S.rotate(xy, base)
            density = S.data_density(turned, fcfg)
            jobs = (
                delayed(S.solve_one)("emd", (base + d, 1.6, 1.6), 64, turned, density, fcfg)
                for d in deltas
            )
            values = [v for v, _ in Parallel(n_jobs=-1)(jobs)]
            best = deltas[int(np.argmin(values))]
            print(
                f"  rotate={frame:5s} data turned {base:2d}°: best δ = {best:+d}°  W₁ "
                + " ".join(f"{v:.5f}" for v in values)
            )


def main() -> None:
    cfg = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml").distances
    xy = nodes.sample_points(cfg.model_dump(), seed=0).to_numpy()
    print(
        f"rotate={cfg.rotate}, grid {cfg.grid_size}², coarse grids {cfg.transport.coarse_grids}, "
        f"keep {cfg.transport.keep}"
    )
    for rect in ((0, 1.6, 1.6), (30, 1.0, 2.4)):
        one_rectangle(cfg, xy, rect)
    subset_search(cfg, xy)
    stage_cost(cfg, xy)
    frames(cfg, xy)


if __name__ == "__main__":
    main()
