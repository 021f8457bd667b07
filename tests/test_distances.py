"""Appendix D criteria: exact values on hand-made densities, and recovery of a known rectangle."""

from __future__ import annotations

import numpy as np
import ot
import pandas as pd
import pytest
import yaml

from oquab_repro.params import DistancesParams, ParamsError, read_params_file, validate_params
from oquab_repro.pipelines.distances import criteria as C
from oquab_repro.pipelines.distances import nodes
from oquab_repro.pipelines.distances import search as S
from oquab_repro.pipelines.distances import transport as T

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


@pytest.mark.parametrize("theta", [0.0, 7.0, 33.0, 45.0, 89.0])
def test_side_grid_coverage_is_rectangle_coverage_for_every_pair_of_sides(theta: float) -> None:
    side = np.linspace(0.4, 2.8, 7)
    u, v = C.rotated_offsets(np.deg2rad(theta), AXIS, 4)
    one_by_one = C.rectangle_coverage(
        u, v, np.array([(a, b) for a in side for b in side]), len(AXIS), 4
    )
    assert np.array_equal(C.side_grid_coverage(u, v, side, len(AXIS), 4), one_by_one)


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
    points = T.cell_points(8, 2.0)
    p = np.zeros(64)
    p[[9, 18]] = 0.5
    q = np.roll(p, 1)  # every unit of mass moves one cell to the right
    assert T.emd_exact(p, q, points)[0] == pytest.approx(0.5)
    assert T.emd_sinkhorn(p, q, points, reg=0.01, tol=1e-9)[0] == pytest.approx(0.5, rel=0.05)


def test_pooling_keeps_mass_and_cell_order() -> None:
    fine = np.arange(64.0).reshape(8, 8)
    coarse = T.pool(fine, 4)
    assert coarse.sum() == fine.sum() and coarse[0, 1] == fine[:2, 2:4].sum()
    assert np.allclose(T.cell_points(4, 2.0)[1], [-0.5, -1.5])  # row-major: x varies first
    with pytest.raises(ValueError, match="does not tile"):
        T.pool(fine, 3)


def test_likelihood_of_points_inside_the_rectangle() -> None:
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, size=(500, 2))
    nll = C.negative_log_likelihood(
        pts, 0.0, np.array([[1.0, 1.0], [2.0, 2.0], [0.5, 0.5]]), 1e-6, 2.0
    )
    assert nll[0] == pytest.approx(0.0, abs=1e-4)
    assert nll[1] == pytest.approx(np.log(4), abs=1e-4)
    assert nll[2] > 5  # most points fall outside: only the floor explains them


@pytest.mark.parametrize(
    ("theta", "offset"), [(0, 0), (5, 5), (85, 5), (45, 45), (135, 45), (90, 0)]
)
def test_axis_offset(theta: float, offset: float) -> None:
    assert C.axis_offset_deg(theta) == pytest.approx(offset)


def _distances(repo_root, **changes) -> dict:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())["distances"]
    raw.update(changes)
    return DistancesParams.model_validate(raw).model_dump()


@pytest.fixture()
def small_params(repo_root) -> dict:
    return _distances(
        repo_root,
        grid_size=64,
        supersample=2,
        n_points=1500,
        transport={"coarse_grids": [16, 32], "keep": [8, 3]},
        search={"theta_steps": 6, "side_min": 0.4, "side_max": 2.0, "side_steps": 5},
    )


def _rotated_rectangle_sample(theta_deg: float, a: float, b: float, n: int) -> pd.DataFrame:
    """n points on a lattice filling the rectangle: exactly symmetric about its axes, where a
    random sample of 1500 points tilts its principal axis by a degree or two (27.7° for seed 0)."""
    rows = int(np.sqrt(n * b / a))
    cols = n // rows
    u, v = np.meshgrid((np.arange(cols) + 0.5) / cols - 0.5, (np.arange(rows) + 0.5) / rows - 0.5)
    local = np.column_stack([u.ravel(), v.ravel()]) * [a, b]
    t = np.deg2rad(theta_deg)
    return pd.DataFrame(
        local @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]), columns=["x", "y"]
    )


def test_grid_search_recovers_a_known_rectangle_at_the_thesis_resolution(repo_root) -> None:
    """Data filling a 1.6×0.8 rectangle at 30°, every criterion on the 128² grid (EMD through its
    32² and 64² shortlists, as the stage runs): EMD and ML find exactly it,
    every criterion its angle.
    """
    params = _distances(
        repo_root,
        grid_size=128,
        search={"theta_steps": 18, "side_min": 0.4, "side_max": 2.0, "side_steps": 5},
    )
    assert params["transport"]["coarse_grids"] == [32, 64]
    points = _rotated_rectangle_sample(30, 1.6, 0.8, 1500)
    density = nodes.estimate_density(points, params)
    scores = nodes.fit_rectangles(points, density, params)
    assert (
        len(scores) == 18 * 5 * 5 and scores["emd"].notna().sum() >= params["transport"]["keep"][-1]
    )
    fits, metrics, landscape = nodes.summarise_fits(scores, params)
    for crit in ("emd", "nll"):
        assert (
            metrics[crit]["theta_deg"],
            metrics[crit]["a"],
            metrics[crit]["b"],
        ) == pytest.approx((30, 1.6, 0.8)), crit
    assert set(fits.theta_deg) == {30.0}
    assert metrics["emd_search"]["grid_128"]["winner_rank"] == 1
    assert list(fits.criterion) == params["criteria"]
    values = landscape.drop(columns="theta_deg").to_numpy()
    assert values.min() == 0 and values.max() == 1


def test_seeded_exact_emd_equals_dense_ot_emd2(small_params: dict) -> None:
    """Column generation from a coarse potential, and the surplus/deficit reduction, give POT's
    dense network simplex on both supports, to rounding."""
    cfg = DistancesParams.model_validate(small_params)
    density = nodes.estimate_density(nodes.sample_points(small_params, seed=0), small_params)
    for rect in [(0.0, 1.6, 1.6), (20.0, 1.2, 2.0), (45.0, 0.8, 0.4)]:
        p, q = (
            T.pool(S.mass(h), 32)
            for h in (density, S.coverage(rect[0], np.array([rect[1:]]), cfg)[0])
        )
        pts = T.cell_points(32, cfg.extent)
        src, dst = p.ravel() > 0, q.ravel() > 0
        dense = ot.emd2(
            p.ravel()[src],
            q.ravel()[dst],
            ot.dist(pts[src], pts[dst], metric="euclidean"),
            numItermax=10**8,
        )
        value, _ = T.emd_exact(p, q, pts)
        _, guide = T.emd_exact(T.pool(p, 16), T.pool(q, 16), T.cell_points(16, cfg.extent))
        seeded, potential = T.emd_exact(p, q, pts, guide=guide, guide_cell=2 * cfg.extent / 16)
        assert value == pytest.approx(dense, abs=1e-12) and seeded == pytest.approx(
            dense, abs=1e-12
        ), rect
        assert potential(pts) @ (p - q).ravel() == pytest.approx(dense, abs=1e-12), (
            "the potential certifies W₁"
        )


@pytest.mark.parametrize("rotate", ["data", "model"])
def test_search_finds_the_winner_of_an_exhaustive_exact_emd(repo_root, rotate: str) -> None:
    """On a 32² grid small enough to solve every rectangle exactly with dense ot.emd2, the stage's
    search (grids in the stage's ratios: all on 8², 8 on 16², 3 on 32²) returns the same winner
    with the same value."""
    params = _distances(
        repo_root,
        rotate=rotate,
        grid_size=32,
        transport={"coarse_grids": [8, 16], "keep": [8, 3]},
        search={"theta_steps": 9, "side_min": 0.4, "side_max": 2.8, "side_steps": 7},
    )
    cfg = DistancesParams.model_validate(params)
    points = nodes.sample_points(params, seed=0)
    density = nodes.estimate_density(points, params)
    scores = nodes.fit_rectangles(points, density, params)
    pts = T.cell_points(cfg.grid_size, cfg.extent)
    cost = ot.dist(pts, pts, metric="euclidean")
    exhaustive = []
    for r in scores.itertuples():
        seen, model_theta = S.FRAMES[rotate](r.theta_deg, points.to_numpy(), density, cfg)
        p = S.mass(seen).ravel()
        q = S.mass(S.coverage(model_theta, np.array([[r.a, r.b]]), cfg))[0].ravel()
        exhaustive.append(ot.emd2(p[p > 0], q[q > 0], cost[np.ix_(p > 0, q > 0)], numItermax=10**8))
    exhaustive = np.array(exhaustive)
    assert scores["emd"].idxmin() == int(np.argmin(exhaustive))
    solved = scores["emd"].dropna()
    assert np.allclose(solved, exhaustive[solved.index], rtol=0, atol=1e-12)
    assert scores["emd_8"].notna().all() and scores["emd_16"].notna().sum() >= 8


def test_turning_the_data_turns_every_fit_by_as_much(repo_root) -> None:
    """With rotate=data the search is equivariant: the sample turned by 20° gives every criterion's
    fit turned by 20° (turning the model instead lets its rasterised edges pull EMD to θ = 0)."""
    params = _distances(
        repo_root,
        grid_size=64,
        transport={"coarse_grids": [16, 32], "keep": [8, 3]},
        search={"theta_steps": 18, "side_min": 1.2, "side_max": 2.0, "side_steps": 3},
    )
    assert params["rotate"] == "data"
    fits = {}
    for turn in (0, 20):
        points = pd.DataFrame(
            S.rotate(nodes.sample_points(params, seed=0).to_numpy(), turn), columns=["x", "y"]
        )
        scores = nodes.fit_rectangles(points, nodes.estimate_density(points, params), params)
        fits[turn] = nodes.summarise_fits(scores, params)[0].set_index("criterion")
    assert np.allclose((fits[0].theta_deg + 20) % 90, fits[20].theta_deg % 90)
    assert np.allclose(fits[0][["a", "b"]], fits[20][["a", "b"]])
    assert np.allclose(fits[0].value, fits[20].value, rtol=1e-6)


def test_shortlist_doubles_while_the_winner_sits_at_its_edge() -> None:
    coarse = pd.Series(np.arange(40.0))  # the coarse grid ranks rectangle 0 best ...
    fine = -np.arange(40.0)  # ... the fine grid ranks it worst

    def evaluate(ids, grid, guides):
        return [(fine[i], None) for i in ids]

    values, sizes = T.refine(coarse, [8, 16], [4], evaluate)
    assert sizes == {8: 40, 16: 40} and values[16].idxmin() == 39
    values, sizes = T.refine(
        coarse, [8, 16], [4], lambda ids, g, _: [(float(i != 1), None) for i in ids]
    )
    assert sizes[16] == 4 and values[16].idxmin() == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transport": {"coarse_grids": [24, 64], "keep": [24, 6]}}, "divide it"),
        ({"transport": {"coarse_grids": [64, 32], "keep": [24, 6]}}, "must increase"),
        ({"transport": {"coarse_grids": [32, 64], "keep": [24]}}, "one count per coarse grid"),
        ({"criteria": ["kl", "js", "nll"]}, "must include emd"),
        ({"criteria": ["emd", "emd"]}, "twice"),
    ],
)
def test_invalid_search_settings_name_the_key(repo_root, change: dict, message: str) -> None:
    raw = read_params_file(repo_root / "params.yaml")
    raw["distances"].update(change)
    with pytest.raises(ParamsError, match=rf"distances\.(transport|criteria).*{message}"):
        validate_params(raw, repo_root / "params.yaml")


def test_figures_render(small_params: dict) -> None:
    points = nodes.sample_points(small_params, seed=0)
    density = nodes.estimate_density(points, small_params)
    fits = pd.DataFrame(
        [
            {"criterion": c, "label": lbl, "theta_deg": 10.0, "a": 1.2, "b": 1.0, "value": 0.1}
            for c, lbl in nodes.CRITERIA.items()
        ]
    )
    for fig in (
        nodes.plot_data(points, density, small_params),
        nodes.plot_fits(density, fits, small_params),
        nodes.plot_transport(density, fits, small_params),
    ):
        assert fig.axes, "figure has panels"
