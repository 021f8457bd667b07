"""The (θ, a, b) grid search of Appendix D: every criterion for every rectangle.

Overlap criteria (KL, JS, likelihood) score all rectangles of an angle at once on the full grid;
transport criteria (EMD, Sinkhorn) solve every rectangle on the coarsest of their grids and a
shortlist on each finer one (transport.refine). ``FRAMES`` says what turns by θ on the grid.
Worker processes import only this module and the numerical ones below it (no matplotlib), so
they start fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from oquab_repro.params import DistancesParams
from oquab_repro.pipelines.distances import criteria as C
from oquab_repro.pipelines.distances import transport as T

log = logging.getLogger(__name__)


def divergences(cfg: DistancesParams) -> dict[str, Callable[..., np.ndarray]]:
    """Criteria of all rectangles of one angle at once, from the data and the model on the grid."""
    return {
        "kl": lambda density, q, axis, xy, theta, sides: C.kl(density[None], q, axis),
        "js": lambda density, q, axis, xy, theta, sides: C.js(density[None], q, axis),
        "nll": lambda density, q, axis, xy, theta, sides: C.negative_log_likelihood(
            xy, theta, sides, cfg.model_floor, cfg.extent
        ),
    }


def transports(cfg: DistancesParams) -> dict[str, Callable[..., tuple[float, Any]]]:
    """Criteria solved one rectangle at a time on histograms (transport.py)."""
    return {
        "emd": T.emd_exact,
        "sinkhorn": partial(T.emd_sinkhorn, reg=cfg.sinkhorn_reg, tol=cfg.sinkhorn_tol),
    }


def grids(cfg: DistancesParams) -> list[int]:
    """The transport criteria's grids, coarsest first; the last is the density grid itself."""
    return [*cfg.transport.coarse_grids, cfg.grid_size]


def column(crit: str, grid: int, cfg: DistancesParams) -> str:
    """Scores column of a transport criterion on a grid: its own name on the full grid."""
    return crit if grid == cfg.grid_size else f"{crit}_{grid}"


def side_values(cfg: DistancesParams) -> np.ndarray:
    s = cfg.search
    return np.linspace(s.side_min, s.side_max, s.side_steps)


def mass(hist: np.ndarray) -> np.ndarray:
    """Histograms (batched over leading axes) scaled to total mass one."""
    return hist / hist.sum(axis=(-2, -1), keepdims=True)


def rotate(xy: np.ndarray, theta_deg: float) -> np.ndarray:
    """Points rotated counter-clockwise by θ about the origin."""
    t = np.deg2rad(theta_deg)
    return xy @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])


def data_density(xy: np.ndarray, cfg: DistancesParams) -> np.ndarray:
    """Parzen (Epanechnikov) estimate of points on the full grid, normalised by Simpson's rule."""
    axis = C.cell_centers(cfg.grid_size, cfg.extent)
    return C.normalise(C.parzen_density(xy, cfg.parzen_radius, axis), axis)


Frame = Callable[[float, np.ndarray, np.ndarray, DistancesParams], tuple[np.ndarray, float]]

FRAMES: dict[str, Frame] = {
    "model": lambda theta, xy, density, cfg: (density, theta),
    "data": lambda theta, xy, density, cfg: (data_density(rotate(xy, -theta), cfg), 0.0),
}
"""How a candidate angle θ enters the grids: (data density, model rotation). ``model`` is the
thesis' setup (D.1: the data stays, the rectangle turns); ``data`` turns the data by −θ under an
axis-aligned rectangle, the same problem in the continuum, whose result does not depend on how the
data sits on the grid (a turned rectangle's rasterised edges otherwise favour θ = 0, bench)."""


def coverage(theta_deg: float, sides: np.ndarray, cfg: DistancesParams) -> np.ndarray:
    """Share of each cell of the full grid inside each rectangle of ``sides`` (k × 2 of (a, b))."""
    axis = C.cell_centers(cfg.grid_size, cfg.extent)
    u, v = C.rotated_offsets(np.deg2rad(theta_deg), axis, cfg.supersample)
    return C.rectangle_coverage(u, v, sides, cfg.grid_size, cfg.supersample)


def score_angle(
    theta_deg: float, xy: np.ndarray, density: np.ndarray, cfg: DistancesParams
) -> pd.DataFrame:
    """Every criterion for every (a, b) at one angle; transport criteria on their coarsest grid."""
    axis = C.cell_centers(cfg.grid_size, cfg.extent)
    side = side_values(cfg)
    sides = np.array([(a, b) for a in side for b in side])
    density, model_theta = FRAMES[cfg.rotate](theta_deg, xy, density, cfg)
    u, v = C.rotated_offsets(np.deg2rad(model_theta), axis, cfg.supersample)
    cover = C.side_grid_coverage(u, v, side, cfg.grid_size, cfg.supersample)
    q = C.model_density(cover, axis, cfg.model_floor)
    out: dict[str, Any] = {"theta_deg": theta_deg, "a": sides[:, 0], "b": sides[:, 1]}
    overlap, transport = divergences(cfg), transports(cfg)
    grid = grids(cfg)[0]
    points = T.cell_points(grid, cfg.extent)
    p_mass, q_mass = T.pool(mass(density), grid), T.pool(mass(cover), grid)
    for crit in cfg.criteria:
        if crit in transport:
            out[column(crit, grid, cfg)] = [transport[crit](p_mass, qi, points)[0] for qi in q_mass]
        else:
            out[crit] = overlap[crit](density, q, axis, xy, np.deg2rad(theta_deg), sides)
    return pd.DataFrame(out)


def solve_one(
    crit: str,
    rect: tuple[float, float, float],
    grid: int,
    xy: np.ndarray,
    density: np.ndarray,
    cfg: DistancesParams,
    guide: T.Potential | None = None,
    guide_cell: float = 0.0,
) -> tuple[float, T.Potential | None]:
    """One transport criterion for one rectangle (θ, a, b) on ``grid``, seeded by ``guide``."""
    theta_deg, a, b = rect
    density, model_theta = FRAMES[cfg.rotate](theta_deg, xy, density, cfg)
    q_mass = T.pool(mass(coverage(model_theta, np.array([[a, b]]), cfg))[0], grid)
    p_mass = T.pool(mass(density), grid)
    solve = transports(cfg)[crit]
    return solve(
        p_mass, q_mass, T.cell_points(grid, cfg.extent), guide=guide, guide_cell=guide_cell
    )


def refine_transport(
    scores: pd.DataFrame, crit: str, xy: np.ndarray, density: np.ndarray, cfg: DistancesParams
) -> pd.DataFrame:
    """Solve the shortlisted rectangles of a transport criterion on each finer grid."""
    levels = grids(cfg)
    previous = dict(zip(levels[1:], levels[:-1], strict=True))
    rects = scores[["theta_deg", "a", "b"]].to_numpy()

    def evaluate(ids: list[int], grid: int, guides: dict[int, Any]) -> list[tuple[float, Any]]:
        cell = 2 * cfg.extent / previous[grid]
        jobs = (
            delayed(solve_one)(crit, tuple(rects[i]), grid, xy, density, cfg, guides.get(i), cell)
            for i in ids
        )
        return list(
            Parallel(n_jobs=-1)(tqdm(jobs, total=len(ids), desc=f"{crit} on {grid}²", unit="rect"))
        )

    values, sizes = T.refine(
        scores[column(crit, levels[0], cfg)], levels, cfg.transport.keep, evaluate
    )
    scores = scores.copy()
    for grid in levels[1:]:
        scores[column(crit, grid, cfg)] = values[grid]
    log.info(
        "%s: %s rectangles solved on the %s grids",
        crit,
        list(sizes.values()),
        [f"{g}²" for g in sizes],
    )
    return scores


def search_ranks(scores: pd.DataFrame, crit: str, cfg: DistancesParams) -> dict[str, Any]:
    """How many rectangles each grid solved and where the final winner
    ranked among them (1 = best)."""
    winner = scores[crit].idxmin()
    out = {}
    for grid in grids(cfg):
        col = scores[column(crit, grid, cfg)].dropna()
        out[f"grid_{grid}"] = {
            "candidates": len(col),
            "winner_rank": int((col < col[winner]).sum()) + 1,
        }
    return out
