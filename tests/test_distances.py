"""Appendix D criteria: exact values on hand-made densities, and recovery of a known rectangle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from oquab_repro.params import DistancesParams
from oquab_repro.pipelines.distances import criteria as C
from oquab_repro.pipelines.distances import nodes

AXIS = C.cell_centers(64, 2.0)


def test_samples_follow_the_product_density() -> None:
    xy = C.sample_data(20000, np.random.default_rng(0))
    assert xy.shape == (20000, 2) and np.abs(xy).max() <= 1
    # each coordinate has density (3/4)(1 - x²): mean 0, variance 1/5
    assert np.allclose(xy.mean(axis=0), 0, atol=0.02)
    assert np.allclose(xy.var(axis=0), 0.2, atol=0.01)


def test_rectangle_area_and_normalisation() -> None:
    u, v = C.rotated_offsets(np.deg2rad(30), AXIS, 4)
    cov = C.rectangle_coverage(u, v, np.array([[1.6, 0.8]]), len(AXIS), 4)
    cell = (AXIS[1] - AXIS[0]) ** 2
    assert cov.sum() * cell == pytest.approx(1.6 * 0.8, rel=0.02)
    q = C.model_density(cov, AXIS, floor=0.01)
    assert C.integrate(q, AXIS)[0] == pytest.approx(1.0, abs=1e-6)


def test_divergences_on_known_densities() -> None:
    u, v = C.rotated_offsets(0.0, AXIS, 2)
    cov = C.rectangle_coverage(u, v, np.array([[1.0, 1.0], [2.0, 2.0]]), len(AXIS), 2)
    q = C.model_density(cov, AXIS, floor=1e-3)
    assert C.kl(q[0], q[:1], AXIS)[0] == pytest.approx(0.0, abs=1e-12)
    js01, js10 = C.js(q[0], q[1:], AXIS)[0], C.js(q[1], q[:1], AXIS)[0]
    assert js01 == pytest.approx(js10) and 0 < js01 < np.log(2)
    # uniform on a unit square vs on the 2×2 square containing it: KL ≈ log(4 / 1)
    assert C.kl(q[0], q[1:], AXIS)[0] == pytest.approx(np.log(4), rel=0.01)


def test_emd_of_a_shift_is_the_shift() -> None:
    axis = C.cell_centers(8, 2.0)
    xx, yy = np.meshgrid(axis, axis)
    cost = C.ot.dist(np.column_stack([xx.ravel(), yy.ravel()]), np.column_stack([xx.ravel(), yy.ravel()]), metric="euclidean")
    p = np.zeros(64)
    p[[9, 18]] = 0.5
    q = np.roll(p, 1)  # every unit of mass moves one cell to the right
    assert C.emd_exact(p, q[None], cost)[0] == pytest.approx(axis[1] - axis[0])
    sink = C.emd_sinkhorn(p, q[None], cost, reg=0.01, tol=1e-9)[0]
    assert sink == pytest.approx(axis[1] - axis[0], rel=0.05)


def test_likelihood_of_points_inside_the_rectangle() -> None:
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, size=(500, 2))
    nll = C.negative_log_likelihood(pts, 0.0, np.array([[1.0, 1.0], [2.0, 2.0], [0.5, 0.5]]), 1e-6, 2.0)
    assert nll[0] == pytest.approx(0.0, abs=1e-4)
    assert nll[1] == pytest.approx(np.log(4), abs=1e-4)
    assert nll[2] > 5  # most points fall outside: only the floor explains them


@pytest.mark.parametrize(("theta", "offset"), [(0, 0), (5, 5), (85, 5), (45, 45), (135, 45), (90, 0)])
def test_axis_offset(theta: float, offset: float) -> None:
    assert C.axis_offset_deg(theta) == pytest.approx(offset)


@pytest.fixture()
def small_params(repo_root) -> dict:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())["distances"]
    raw.update(grid_size=64, emd_grid_size=16, supersample=2, n_points=1500)
    raw["search"] = {"theta_steps": 6, "side_min": 0.4, "side_max": 2.0, "side_steps": 5}
    return DistancesParams.model_validate(raw).model_dump()


def test_grid_search_recovers_a_known_rectangle(small_params: dict) -> None:
    """Data drawn uniformly from a 1.6×0.8 rectangle at 30°: EMD, Sinkhorn and ML find exactly it."""
    rng = np.random.default_rng(0)
    local = rng.uniform(-0.5, 0.5, size=(1500, 2)) * [1.6, 0.8]
    t = np.deg2rad(30)
    xy = local @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    points = pd.DataFrame(xy, columns=["x", "y"])
    density = nodes.estimate_density(points, small_params)
    scores = nodes.fit_rectangles(points, density, small_params)
    assert len(scores) == 6 * 5 * 5
    fits, metrics, landscape = nodes.summarise_fits(scores)
    for crit in ("emd", "sinkhorn", "nll"):
        assert (metrics[crit]["theta_deg"], metrics[crit]["a"], metrics[crit]["b"]) == pytest.approx((30, 1.6, 0.8)), crit
    assert set(fits.criterion) == set(nodes.CRITERIA)
    values = landscape.drop(columns="theta_deg").to_numpy()
    assert values.min() == 0 and values.max() == 1


def test_figures_render(small_params: dict) -> None:
    points = nodes.sample_points(small_params, seed=0)
    density = nodes.estimate_density(points, small_params)
    fits = pd.DataFrame(
        [{"criterion": c, "label": lbl, "theta_deg": 10.0, "a": 1.2, "b": 1.0} for c, lbl in nodes.CRITERIA.items()]
    )
    for fig in (nodes.plot_data(points, density, small_params), nodes.plot_fits(density, fits, small_params),
                nodes.plot_transport(points, fits, small_params)):
        assert fig.axes, "figure has panels"
