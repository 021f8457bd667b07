"""Kedro nodes of the distances stage: sample, estimate, grid-search the rectangle, plot."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ot
import pandas as pd
from joblib import Parallel, delayed
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from tqdm.auto import tqdm

from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import seed_everything
from oquab_repro.params import DistancesParams
from oquab_repro.pipelines.distances import criteria as C
from oquab_repro.pipelines.distances import search as S
from oquab_repro.pipelines.distances import transport as T

log = logging.getLogger(__name__)

CRITERIA = {
    "kl": "KL(P‖Q)",
    "js": "Jensen-Shannon",
    "emd": "EMD (exact)",
    "sinkhorn": "EMD (Sinkhorn)",
    "nll": "Max. likelihood",
}
COLORS = {
    "kl": "tab:red",
    "js": "tab:orange",
    "emd": "tab:green",
    "sinkhorn": "tab:cyan",
    "nll": "tab:purple",
}


def sample_points(params: dict[str, Any], seed: int) -> pd.DataFrame:
    """Samples of the data distribution p(x, y) ∝ (1 − x²)₊(1 − y²)₊."""
    cfg = DistancesParams.model_validate(params)
    rng = seed_everything(seed)
    xy = C.sample_data(cfg.n_points, rng)
    return pd.DataFrame(xy, columns=["x", "y"])


def estimate_density(points: pd.DataFrame, params: dict[str, Any]) -> np.ndarray:
    """Parzen (Epanechnikov) estimate of the data on the fine grid, normalised by Simpson's rule."""
    return S.data_density(points.to_numpy(), DistancesParams.model_validate(params))


def fit_rectangles(
    points: pd.DataFrame, density: np.ndarray, params: dict[str, Any]
) -> pd.DataFrame:
    """Score every (θ, a, b) of the search grid under each criterion (lower is better for all).

    Angles are independent, so they run in parallel processes (one per core); transport criteria
    then solve their shortlists on the finer grids. A transport criterion's column holds its value
    on the full grid (NaN where the rectangle did not make the shortlist), and ``<crit>_<grid>``
    columns its values on the coarser grids.
    """
    cfg = DistancesParams.model_validate(params)
    thetas = np.arange(cfg.search.theta_steps) * 90.0 / cfg.search.theta_steps
    jobs = (delayed(S.score_angle)(t, points.to_numpy(), density, cfg) for t in thetas)
    frames = Parallel(n_jobs=-1, return_as="generator")(jobs)
    scores = pd.concat(
        tqdm(frames, total=len(thetas), desc="rectangle grid search (θ)", unit="angle"),
        ignore_index=True,
    )
    for crit in cfg.criteria:
        if crit in S.transports(cfg):
            scores = S.refine_transport(scores, crit, points.to_numpy(), density, cfg)
    log.info("Scored %d rectangles under %s", len(scores), ", ".join(cfg.criteria))
    return scores


def summarise_fits(
    scores: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Best rectangle per criterion (table + DVC metrics) and each criterion's profile over θ.

    A transport criterion's profile comes from its coarsest grid, the only one that solved every
    rectangle; ``<crit>_search`` says how many rectangles each grid solved
    and where the winner ranked.
    """
    cfg = DistancesParams.model_validate(params)
    transports = S.transports(cfg)
    rows, metrics = [], {}
    for crit in cfg.criteria:
        best = scores.loc[scores[crit].idxmin()]
        rows.append(
            {
                "criterion": crit,
                "label": CRITERIA[crit],
                "theta_deg": float(best.theta_deg),
                "a": float(best.a),
                "b": float(best.b),
                "area": float(best.a * best.b),
                "axis_offset_deg": C.axis_offset_deg(float(best.theta_deg)),
                "value": float(best[crit]),
            }
        )
        if crit in transports:
            metrics[f"{crit}_search"] = S.search_ranks(scores, crit, cfg)
    fits = pd.DataFrame(rows)
    for r in fits.itertuples():
        metrics[r.criterion] = {
            k: getattr(r, k) for k in ("theta_deg", "a", "b", "area", "axis_offset_deg", "value")
        }
    others = fits.loc[~fits.criterion.isin(transports), "axis_offset_deg"]
    if len(others):  # the thesis' finding (D.3): EMD's θ is the closest to the axes
        metrics["emd_closest_to_axis"] = bool(metrics["emd"]["axis_offset_deg"] <= others.min())
        metrics["emd_strictly_closest_to_axis"] = bool(
            metrics["emd"]["axis_offset_deg"] < others.min()
        )
    if "kl" in metrics:
        metrics["kl_area_over_emd_area"] = metrics["kl"]["area"] / metrics["emd"]["area"]
    coarsest = {
        S.column(c, S.grids(cfg)[0], cfg) if c in transports else c: c for c in cfg.criteria
    }
    profile = scores.groupby("theta_deg")[list(coarsest)].min().rename(columns=coarsest)
    landscape = (
        (profile - profile.min()) / (profile.max() - profile.min()).replace(0, 1)
    ).reset_index()
    return fits, metrics, landscape


def _rectangle(theta_deg: float, a: float, b: float, **style: Any) -> Polygon:
    t = np.deg2rad(theta_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    corners = np.array([[-a, -b], [a, -b], [a, b], [-a, b]]) / 2 @ rot.T
    return Polygon(corners, closed=True, fill=False, **style)


def _heatmap(ax: Any, density: np.ndarray, extent: float) -> None:
    ax.imshow(density, origin="lower", extent=(-extent, extent, -extent, extent), cmap="magma")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")


def plot_data(points: pd.DataFrame, density: np.ndarray, params: dict[str, Any]) -> Figure:
    """Fig. D-6: the samples and their Parzen estimate on the grid."""
    cfg = DistancesParams.model_validate(params)
    fig, axes = new_figure(1, 2, size=3.6)
    axes[0, 0].scatter(points.x, points.y, s=2, alpha=0.5)
    axes[0, 0].set(xlim=(-cfg.extent, cfg.extent), ylim=(-cfg.extent, cfg.extent), aspect="equal")
    axes[0, 0].set_title(f"{len(points)} samples of p(x,y)", fontsize=9)
    _heatmap(axes[0, 1], density, cfg.extent)
    axes[0, 1].set_title(f"Parzen estimate (Epanechnikov, r={cfg.parzen_radius})", fontsize=9)
    return fig


def plot_fits(density: np.ndarray, fits: pd.DataFrame, params: dict[str, Any]) -> Figure:
    """Fig. D-7: the data heat map with the rectangle each criterion fits."""
    cfg = DistancesParams.model_validate(params)
    fig, axes = new_figure(1, len(fits) + 1, size=3.0)
    for ax, fit in zip(axes[0, 1:], fits.itertuples(), strict=True):
        _heatmap(ax, density, cfg.extent)
        ax.add_patch(_rectangle(fit.theta_deg, fit.a, fit.b, color=COLORS[fit.criterion], lw=2))
        ax.set_title(f"{fit.label}\nθ={fit.theta_deg:.1f}° a={fit.a:.2f} b={fit.b:.2f}", fontsize=9)
    overlay = axes[0, 0]
    _heatmap(overlay, density, cfg.extent)
    for fit in fits.itertuples():
        overlay.add_patch(
            _rectangle(
                fit.theta_deg, fit.a, fit.b, color=COLORS[fit.criterion], lw=1.5, label=fit.label
            )
        )
    overlay.legend(fontsize=6, loc="lower left")
    overlay.set_title("all criteria", fontsize=9)
    return fig


def plot_transport(density: np.ndarray, fits: pd.DataFrame, params: dict[str, Any]) -> Figure:
    """Fig. 5-17: the optimal transport plan from the data histogram to the EMD-fitted rectangle,
    on the transport search's coarsest grid (the thesis draws it on 32×32)."""
    cfg = DistancesParams.model_validate(params)
    n = S.grids(cfg)[0]
    centers = T.cell_points(n, cfg.extent)
    best = fits.set_index("criterion").loc["emd"]
    p_mass = T.pool(S.mass(density), n).ravel()
    q_mass = T.pool(
        S.mass(S.coverage(best.theta_deg, np.array([[best.a, best.b]]), cfg))[0], n
    ).ravel()
    cost = ot.dist(centers, centers, metric="euclidean")
    plan = C.transport_plan(p_mass, q_mass, cost)
    fig, axes = new_figure(1, 2, size=4.0)
    ax = axes[0, 0]
    _heatmap(ax, p_mass.reshape(n, n), cfg.extent)
    ax.add_patch(_rectangle(best.theta_deg, best.a, best.b, color=COLORS["emd"], lw=2))
    src, dst = np.nonzero(plan)
    weight = plan[src, dst] / plan.max()
    moving = src != dst
    for i, j, w in zip(src[moving], dst[moving], weight[moving], strict=True):
        ax.annotate(
            "",
            xy=centers[j],
            xytext=centers[i],
            arrowprops={"arrowstyle": "->", "color": "white", "alpha": float(w), "lw": 0.6},
        )
    ax.set_title(
        f"{n}×{n} transport to the EMD rectangle\n(W₁ = {float((plan * cost).sum()):.4f} here, "
        f"{best.value:.4f} on {cfg.grid_size}²)",
        fontsize=9,
    )
    axes[0, 1].imshow(np.log10(plan + 1e-9), cmap="viridis", aspect="auto", interpolation="nearest")
    axes[0, 1].set(title="plan γ (log₁₀ mass)", xlabel="model cell", ylabel="data cell")
    return fig
