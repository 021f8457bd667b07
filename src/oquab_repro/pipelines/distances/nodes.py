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

log = logging.getLogger(__name__)

CRITERIA = {
    "kl": "KL(P‖Q)",
    "js": "Jensen-Shannon",
    "emd": "EMD (exact)",
    "sinkhorn": "EMD (Sinkhorn)",
    "nll": "Max. likelihood",
}
COLORS = {"kl": "tab:red", "js": "tab:orange", "emd": "tab:green", "sinkhorn": "tab:cyan", "nll": "tab:purple"}


def sample_points(params: dict[str, Any], seed: int) -> pd.DataFrame:
    """Samples of the data distribution p(x, y) ∝ (1 − x²)₊(1 − y²)₊."""
    cfg = DistancesParams.model_validate(params)
    rng = seed_everything(seed)
    xy = C.sample_data(cfg.n_points, rng)
    return pd.DataFrame(xy, columns=["x", "y"])


def estimate_density(points: pd.DataFrame, params: dict[str, Any]) -> np.ndarray:
    """Parzen (Epanechnikov) estimate of the data on the fine grid, normalised by Simpson's rule."""
    cfg = DistancesParams.model_validate(params)
    axis = C.cell_centers(cfg.grid_size, cfg.extent)
    return C.normalise(C.parzen_density(points.to_numpy(), cfg.parzen_radius, axis), axis)


def _emd_setup(points: np.ndarray, cfg: DistancesParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coarse grid axis, data histogram and Euclidean ground cost for the transport criteria."""
    axis = C.cell_centers(cfg.emd_grid_size, cfg.extent)
    mass = C.parzen_density(points, cfg.parzen_radius, axis).ravel()
    xx, yy = np.meshgrid(axis, axis)
    centers = np.column_stack([xx.ravel(), yy.ravel()])
    return axis, mass / mass.sum(), ot.dist(centers, centers, metric="euclidean")


def _coarse_masses(theta: float, sides: np.ndarray, axis: np.ndarray, supersample: int) -> np.ndarray:
    u, v = C.rotated_offsets(theta, axis, supersample)
    cov = C.rectangle_coverage(u, v, sides, len(axis), supersample).reshape(len(sides), -1)
    return cov / cov.sum(axis=1, keepdims=True)


def _score_angle(
    theta_deg: float, xy: np.ndarray, density: np.ndarray, cfg: DistancesParams, sides: np.ndarray
) -> pd.DataFrame:
    """All criteria for every (a, b) at one rotation angle."""
    theta = np.deg2rad(theta_deg)
    axis = C.cell_centers(cfg.grid_size, cfg.extent)
    u, v = C.rotated_offsets(theta, axis, cfg.supersample)
    q = C.model_density(
        C.rectangle_coverage(u, v, sides, cfg.grid_size, cfg.supersample), axis, cfg.model_floor
    )
    emd_axis, p_mass, cost = _emd_setup(xy, cfg)
    q_mass = _coarse_masses(theta, sides, emd_axis, cfg.supersample)
    return pd.DataFrame(
        {
            "theta_deg": theta_deg,
            "a": sides[:, 0],
            "b": sides[:, 1],
            "kl": C.kl(density[None], q, axis),
            "js": C.js(density[None], q, axis),
            "emd": C.emd_exact(p_mass, q_mass, cost),
            "sinkhorn": C.emd_sinkhorn(p_mass, q_mass, cost, cfg.sinkhorn_reg, cfg.sinkhorn_tol),
            "nll": C.negative_log_likelihood(xy, theta, sides, cfg.model_floor, cfg.extent),
        }
    )


def fit_rectangles(points: pd.DataFrame, density: np.ndarray, params: dict[str, Any]) -> pd.DataFrame:
    """Score every (θ, a, b) of the search grid under each criterion (lower is better for all).

    Angles are independent, so they run in parallel processes (one per core).
    """
    cfg = DistancesParams.model_validate(params)
    s = cfg.search
    side = np.linspace(s.side_min, s.side_max, s.side_steps)
    sides = np.array([(a, b) for a in side for b in side])
    thetas = np.arange(s.theta_steps) * 90.0 / s.theta_steps
    jobs = (delayed(_score_angle)(t, points.to_numpy(), density, cfg, sides) for t in thetas)
    frames = Parallel(n_jobs=-1, return_as="generator")(jobs)
    scores = pd.concat(
        tqdm(frames, total=len(thetas), desc="rectangle grid search (θ)", unit="angle"), ignore_index=True
    )
    log.info("Scored %d rectangles under %d criteria", len(scores), len(CRITERIA))
    return scores


def summarise_fits(scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Best rectangle per criterion (table + DVC metrics) and each criterion's profile over θ."""
    rows = []
    for crit, label in CRITERIA.items():
        best = scores.loc[scores[crit].idxmin()]
        rows.append(
            {
                "criterion": crit,
                "label": label,
                "theta_deg": float(best.theta_deg),
                "a": float(best.a),
                "b": float(best.b),
                "area": float(best.a * best.b),
                "axis_offset_deg": C.axis_offset_deg(float(best.theta_deg)),
                "value": float(best[crit]),
            }
        )
    fits = pd.DataFrame(rows)
    metrics: dict[str, Any] = {
        r.criterion: {k: getattr(r, k) for k in ("theta_deg", "a", "b", "area", "axis_offset_deg", "value")}
        for r in fits.itertuples()
    }
    others = fits.loc[~fits.criterion.isin(["emd", "sinkhorn"]), "axis_offset_deg"]
    metrics["emd_closest_to_axis"] = bool(metrics["emd"]["axis_offset_deg"] <= others.min())
    metrics["kl_area_over_emd_area"] = metrics["kl"]["area"] / metrics["emd"]["area"]
    profile = scores.groupby("theta_deg")[list(CRITERIA)].min()
    landscape = ((profile - profile.min()) / (profile.max() - profile.min()).replace(0, 1)).reset_index()
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
        overlay.add_patch(_rectangle(fit.theta_deg, fit.a, fit.b, color=COLORS[fit.criterion], lw=1.5, label=fit.label))
    overlay.legend(fontsize=6, loc="lower left")
    overlay.set_title("all criteria", fontsize=9)
    return fig


def plot_transport(points: pd.DataFrame, fits: pd.DataFrame, params: dict[str, Any]) -> Figure:
    """Fig. 5-17: the optimal transport plan from the data histogram to the EMD-fitted rectangle."""
    cfg = DistancesParams.model_validate(params)
    axis, p_mass, cost = _emd_setup(points.to_numpy(), cfg)
    best = fits.set_index("criterion").loc["emd"]
    q_mass = _coarse_masses(np.deg2rad(best.theta_deg), np.array([[best.a, best.b]]), axis, cfg.supersample)[0]
    plan = C.transport_plan(p_mass, q_mass, cost)
    xx, yy = np.meshgrid(axis, axis)
    centers = np.column_stack([xx.ravel(), yy.ravel()])
    n = cfg.emd_grid_size
    fig, axes = new_figure(1, 2, size=4.0)
    ax = axes[0, 0]
    _heatmap(ax, p_mass.reshape(n, n), cfg.extent)
    ax.add_patch(_rectangle(best.theta_deg, best.a, best.b, color=COLORS["emd"], lw=2))
    src, dst = np.nonzero(plan)
    weight = plan[src, dst] / plan.max()
    moving = src != dst
    for i, j, w in zip(src[moving], dst[moving], weight[moving], strict=True):
        ax.annotate("", xy=centers[j], xytext=centers[i], arrowprops={"arrowstyle": "->", "color": "white", "alpha": float(w), "lw": 0.6})
    ax.set_title(f"{n}×{n} transport to the EMD rectangle\n(W₁ = {float((plan * cost).sum()):.4f})", fontsize=9)
    axes[0, 1].imshow(np.log10(plan + 1e-9), cmap="viridis", aspect="auto", interpolation="nearest")
    axes[0, 1].set(title="plan γ (log₁₀ mass)", xlabel="model cell", ylabel="data cell")
    return fig
