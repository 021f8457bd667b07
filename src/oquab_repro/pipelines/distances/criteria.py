"""Densities on a grid and the overlap criteria compared in Appendix D: KL, JS, likelihood.

The data density p(x, y) ∝ (1 − x²)₊ (1 − y²)₊ is estimated from samples with an Epanechnikov
Parzen window; the model is the uniform density on an a×b rectangle rotated by θ about the
origin. KL and JS need the model to be positive wherever the data is, so the model is mixed
with a small uniform floor ε over the grid: q = (1 − ε) U_rect + ε U_grid. The transport
criteria (EMD, Sinkhorn) live in ``transport.py``.
"""

from __future__ import annotations

import numpy as np
import ot
from scipy.integrate import simpson
from scipy.special import rel_entr
from sklearn.neighbors import KernelDensity


def cell_centers(grid_size: int, extent: float) -> np.ndarray:
    """Centres of ``grid_size`` equal cells covering [−extent, extent]."""
    step = 2 * extent / grid_size
    return -extent + step * (np.arange(grid_size) + 0.5)


def sample_data(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n points from p(x, y) ∝ (1 − x²)₊ (1 − y²)₊ by rejection from the unit square."""
    out = np.empty((0, 2))
    while len(out) < n:
        cand = rng.uniform(-1.0, 1.0, size=(2 * n, 2))
        keep = rng.uniform(size=2 * n) < (1 - cand[:, 0] ** 2) * (1 - cand[:, 1] ** 2)
        out = np.concatenate([out, cand[keep]])
    return out[:n]


def parzen_density(points: np.ndarray, radius: float, axis: np.ndarray) -> np.ndarray:
    """Epanechnikov Parzen estimate of the points on the grid ``axis × axis`` (rows are y)."""
    xx, yy = np.meshgrid(axis, axis)
    kde = KernelDensity(kernel="epanechnikov", bandwidth=radius).fit(points)
    return np.exp(kde.score_samples(np.column_stack([xx.ravel(), yy.ravel()]))).reshape(xx.shape)


def integrate(f: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Simpson's rule over the last two axes (y then x) of a density sampled on ``axis × axis``."""
    return simpson(simpson(f, x=axis, axis=-1), x=axis, axis=-1)


def normalise(f: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Scale densities (batched over leading axes) so each integrates to one."""
    return f / integrate(f, axis)[..., None, None]


def rotated_offsets(
    theta: float, axis: np.ndarray, supersample: int
) -> tuple[np.ndarray, np.ndarray]:
    """|u|, |v| of sub-cell sample points in the frame of a rectangle rotated by ``theta``."""
    step = axis[1] - axis[0]
    sub = (np.arange(supersample) + 0.5) / supersample * step - step / 2
    fine = (axis[:, None] + sub[None, :]).ravel()
    xx, yy = np.meshgrid(fine, fine)
    c, s = np.cos(theta), np.sin(theta)
    return np.abs(c * xx + s * yy), np.abs(-s * xx + c * yy)


def rectangle_coverage(
    u: np.ndarray, v: np.ndarray, sides: np.ndarray, grid_size: int, supersample: int
) -> np.ndarray:
    """Fraction of each grid cell inside each rectangle (``sides`` is k×2 of (a, b))."""
    out = np.empty((len(sides), grid_size, grid_size))
    for i, (a, b) in enumerate(sides):
        inside = (u <= a / 2) & (v <= b / 2)
        out[i] = inside.reshape(grid_size, supersample, grid_size, supersample).mean(axis=(1, 3))
    return out


def side_grid_coverage(
    u: np.ndarray, v: np.ndarray, side: np.ndarray, grid_size: int, supersample: int
) -> np.ndarray:
    """:func:`rectangle_coverage` for every (a, b) in ``side × side`` at once (row a·k + b).

    A sub-sample lies in every rectangle whose half-sides reach its |u| and |v|, so counting the
    sub-samples of each cell by the first side index that contains them, then summing cumulatively
    over both indices, covers all k² rectangles in one pass over the points instead of k².
    """
    k = len(side)
    first_a = np.searchsorted(
        side / 2, u.ravel()
    )  # rectangles with a ≥ side[first_a] contain the point
    first_b = np.searchsorted(side / 2, v.ravel())
    rows, cols = np.divmod(np.arange(u.size), u.shape[1])
    cell = (rows // supersample) * grid_size + cols // supersample
    counts = np.bincount(
        (cell * (k + 1) + first_a) * (k + 1) + first_b, minlength=grid_size**2 * (k + 1) ** 2
    )
    inside = counts.reshape(grid_size**2, k + 1, k + 1).cumsum(axis=1).cumsum(axis=2)[:, :k, :k]
    return (inside.reshape(grid_size, grid_size, k * k).transpose(2, 0, 1) / supersample**2).astype(
        float
    )


def model_density(coverage: np.ndarray, axis: np.ndarray, floor: float) -> np.ndarray:
    """q = (1 − ε) U_rect + ε U_grid, batched over rectangles, each
    integrating to one on the grid."""
    uniform = normalise(np.ones(coverage.shape[-2:]), axis)
    return (1 - floor) * normalise(coverage, axis) + floor * uniform


def kl(p: np.ndarray, q: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """KL(P‖Q) = ∫ p log(p/q), batched over the leading axes of ``q``."""
    return integrate(rel_entr(p, q), axis)


def js(p: np.ndarray, q: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence ½ KL(P‖M) + ½ KL(Q‖M) with M = (P + Q)/2."""
    m = (p + q) / 2
    return 0.5 * integrate(rel_entr(p, m), axis) + 0.5 * integrate(rel_entr(q, m), axis)


def negative_log_likelihood(
    points: np.ndarray, theta: float, sides: np.ndarray, floor: float, extent: float
) -> np.ndarray:
    """−mean log q(x_i) under the exact (floored) rectangle density, for each (a, b)."""
    c, s = np.cos(theta), np.sin(theta)
    u = np.abs(c * points[:, 0] + s * points[:, 1])
    v = np.abs(-s * points[:, 0] + c * points[:, 1])
    a, b = sides[:, 0:1], sides[:, 1:2]
    inside = (u[None, :] <= a / 2) & (v[None, :] <= b / 2)
    q = (1 - floor) * inside / (a * b) + floor / (2 * extent) ** 2
    return -np.log(q).mean(axis=1)


def transport_plan(p_mass: np.ndarray, q_mass: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """The exact optimal transport plan between two histograms on the same grid."""
    return ot.emd(p_mass, q_mass, cost)


def axis_offset_deg(theta_deg: float) -> float:
    """Angle to the nearest image axis: θ mod 90°, folded into [0°, 45°]."""
    r = theta_deg % 90.0
    return min(r, 90.0 - r)
