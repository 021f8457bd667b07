"""Causal stage (§5.4.2): the original protocol, decisions and weighted
accuracy, units that resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from oquab_repro.lib.ensembles import CGANConfig, EnsembleUnit, train_units
from oquab_repro.lib.unit_cache import UnitCache
from oquab_repro.params import C2STParams, CausalParams
from oquab_repro.pipelines.causal import methods, nodes, units

C2ST = C2STParams(test_fraction=0.5, alpha=0.05, nn_hidden=20, nn_epochs=30, nn_lr=0.01)


def _causal_params(**scale) -> dict:
    mini = {
        "max_points": 300,
        "ensemble_size": 3,
        "ensemble_curve": [1, 2, 3],
        "hidden": 32,
        "epochs": 40,
        "batch_size": 32,
        "anm_fit_points": 100,
        "synthetic_pairs": 40,
        "synthetic_points": 100,
        "rcc_trees": 20,
        "ncc_epochs": 2,
        "pack_members": 1000,
        "workers": 1,
        **scale,
    }
    return {
        "preprocess": {"outlier_fraction": 0.05, "outlier_anchors": 20},
        "cgan": {
            "noise_dim": 4,
            "dropout": 0.1,
            "lr": 0.005,
            "beta1": 0.5,
            "beta2": 0.999,
            "real_label": 0.8,
            "fake_label": 0.2,
        },
        "baselines": ["anm", "igci"],
        "synthetic": {"mechanisms": ["polynomial", "nn"], "noise_coeff": 0.4},
        "bqcd": {"quantile_levels": 3, "knots": 5, "min_points": 200},
        "bootstrap": {"samples": 200, "level": 0.9},
        "figure_pairs": [1],
        "mini": mini,
        "full": mini,
    }


def _synthetic_pairs(count: int, n: int, seed: int, first_id: int = 1) -> list[dict]:
    """Additive-noise pairs y = f(x) + ε with a non-linear f; column order is random."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        x = rng.uniform(-2, 2, n)
        y = np.tanh(2 * x) + x**2 / 2 + 0.2 * rng.standard_normal(n)
        a_causes_b = bool(rng.integers(2))
        a, b = (x, y) if a_causes_b else (y, x)
        pairs.append(
            {
                "pair_id": f"{first_id + i:04d}",
                "a": nodes.standardise(a, "a"),
                "b": nodes.standardise(b, "b"),
                "a_causes_b": a_causes_b,
                "weight": 1.0,
                "n_original": n,
            }
        )
    return pairs


def test_cgan_c2st_finds_the_cause_of_additive_noise_pairs(tmp_path):
    pairs = _synthetic_pairs(count=6, n=300, seed=1)
    statistics, samples, info = nodes.cgan_c2st(
        pairs, _causal_params(), C2ST.model_dump(), "mini", 0, "cpu", UnitCache(tmp_path)
    )
    assert info["units_trained"] == 6 and samples["0001"]["fake_b"].shape == (300,)
    table = nodes.predictions(
        pairs, statistics, pd.DataFrame(columns=["pair_id", "method", "score"]), ensemble_size=3
    )
    knn = table[(table.c2st == "knn") & (table.variant == "ensemble")]
    assert knn.correct.mean() >= 4 / 6, knn[
        ["pair_id", "statistic_a_to_b", "statistic_b_to_a", "a_causes_b"]
    ]


def test_units_resume_from_the_cache_and_recompute_what_changed(tmp_path):
    pairs = _synthetic_pairs(count=3, n=64, seed=2)
    params, cache = _causal_params(epochs=2), UnitCache(tmp_path)
    first, _, info = nodes.cgan_c2st(pairs, params, C2ST.model_dump(), "mini", 0, "cpu", cache)
    assert (info["units_trained"], info["units_cached"]) == (3, 0)
    (unit_file,) = [f for f in tmp_path.rglob("*.pt") if f.stem == "0002"]
    unit_file.unlink()  # an interrupted run: pair 0002 never finished
    again, _, info = nodes.cgan_c2st(pairs, params, C2ST.model_dump(), "mini", 0, "cpu", cache)
    assert (info["units_trained"], info["units_cached"]) == (1, 2)
    pd.testing.assert_frame_equal(first, again)
    pairs[0]["a"] = pairs[0]["a"][::-1].copy()  # other data for pair 0001: its result is stale
    _, _, info = nodes.cgan_c2st(pairs, params, C2ST.model_dump(), "mini", 0, "cpu", cache)
    assert (info["units_trained"], info["units_cached"]) == (1, 2)
    _, _, info = nodes.cgan_c2st(
        pairs, _causal_params(epochs=3), C2ST.model_dump(), "mini", 0, "cpu", cache
    )
    assert info["units_trained"] == 3  # another setting: nothing reused


def test_unit_results_do_not_depend_on_packing_or_workers(tmp_path):
    pairs = _synthetic_pairs(count=2, n=120, seed=2) + _synthetic_pairs(
        count=2, n=90, seed=3, first_id=3
    )
    settings = nodes.unit_settings(_causal_params(epochs=2), C2ST.model_dump(), "mini", seed=0)
    together = units.run_units(pairs, settings, torch.device("cpu"), pack_members=1000)
    apart = {}
    for half in (
        pairs[1::2],
        pairs[::2],
    ):  # another split, another order, one pair per stacked model
        apart.update(units.run_units(half, settings, torch.device("cpu"), pack_members=6))
    for pid, result in together.items():
        np.testing.assert_allclose(apart[pid]["fake_b"], result["fake_b"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(
            apart[pid]["statistic"][0], result["statistic"][0]
        )  # KNN accuracies
    two, _, _ = nodes.cgan_c2st(
        pairs,
        _causal_params(epochs=2, workers=2),
        C2ST.model_dump(),
        "mini",
        0,
        "cpu",
        UnitCache(tmp_path / "w2"),
    )
    one, _, _ = nodes.cgan_c2st(
        pairs,
        _causal_params(epochs=2, pack_members=6),
        C2ST.model_dump(),
        "mini",
        0,
        "cpu",
        UnitCache(tmp_path / "w1"),
    )
    pd.testing.assert_frame_equal(one[one.test == "knn"], two[two.test == "knn"])


def _float64_units(sizes: tuple[int, ...], seed: int) -> list[EnsembleUnit]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(sizes):
        a = torch.randn(n, generator=gen, dtype=torch.float64)
        b = torch.tanh(a) + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
        out.append(
            EnsembleUnit(
                torch.stack([a, a, b, b])[..., None],
                torch.stack([b, b, a, a])[..., None],
                seed=10 + i,
            )
        )
    return out


def test_stacked_training_matches_member_by_member_training():
    cfg = CGANConfig(
        noise_dim=3,
        hidden=16,
        dropout=0.2,
        lr=0.005,
        beta1=0.5,
        beta2=0.999,
        real_label=0.8,
        fake_label=0.2,
        epochs=3,
        batch_size=8,
    )
    sizes = (40, 64, 40)  # units of different sizes leave the stacked model at different steps
    loop = train_units(_float64_units(sizes, 0), cfg, backend="loop")
    stacked = train_units(_float64_units(sizes, 0), cfg, backend="bmm")
    alone = [train_units([u], cfg)[0] for u in _float64_units(sizes, 0)]
    for lo, st, al in zip(loop, stacked, alone, strict=True):
        torch.testing.assert_close(st.samples, lo.samples, rtol=0, atol=1e-9)
        torch.testing.assert_close(al.samples, st.samples, rtol=0, atol=0)
    other = train_units(
        _float64_units(sizes, 1), cfg
    )  # other data and draws: the comparison is not vacuous
    assert not torch.allclose(other[0].samples, stacked[0].samples)


def test_generator_and_discriminator_updates_alternate():
    """Even steps move only the discriminator, odd steps only the generator
    (the original's schedule)."""
    cfg = CGANConfig(
        noise_dim=2,
        hidden=8,
        dropout=0.0,
        lr=0.01,
        beta1=0.5,
        beta2=0.999,
        real_label=0.8,
        fake_label=0.2,
        epochs=1,
        batch_size=8,
    )
    (unit,) = _float64_units((16,), 0)  # two steps per epoch: one D step, one G step
    g_one = train_units([unit], cfg)[0].generator_params
    (unit,) = _float64_units((16,), 0)
    g_half = train_units([unit], CGANConfig(**{**cfg.__dict__, "epochs": 1, "batch_size": 16}))[
        0
    ].generator_params  # one step: D only
    init_g, _ = units.ensembles.init_members(_float64_units((16,), 0)[0], cfg)
    from torch.func import stack_module_state

    start, _ = stack_module_state([g.double() for g in init_g])
    assert all(torch.equal(g_half[k], start[k]) for k in start)  # a lone D step leaves g untouched
    assert not all(torch.equal(g_one[k], start[k]) for k in start)


def _statistics(rows: list[tuple[str, str, int, float]], test: str = "knn") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "pair_id": p,
                "direction": d,
                "member": m,
                "test": test,
                "statistic": s,
                "p_value": 0.5,
                "n_test": 10,
            }
            for p, d, m, s in rows
        ]
    )


def test_decisions_use_distance_to_chance_and_weighted_accuracy():
    pairs = [
        {"pair_id": "0001", "a_causes_b": True, "weight": 1.0, "n_original": 10},
        {"pair_id": "0002", "a_causes_b": False, "weight": 3.0, "n_original": 10},
        {"pair_id": "0003", "a_causes_b": True, "weight": 1.0, "n_original": 10},
    ]
    statistics = _statistics(
        [
            # pair 1: member 0 |0.60−.5| < |0.70−.5|: a→b (right); best members 0.50 vs
            # 0.45 (|·−.5| 0 < .05): a→b
            ("0001", "a->b", 0, 0.60),
            ("0001", "a->b", 1, 0.50),
            ("0001", "b->a", 0, 0.70),
            ("0001", "b->a", 1, 0.45),
            # pair 2 (truth b→a): member 0 says a→b (wrong); accuracy 0.40 is
            # as far from chance as 0.60
            ("0002", "a->b", 0, 0.58),
            ("0002", "a->b", 1, 0.40),
            ("0002", "b->a", 0, 0.90),
            ("0002", "b->a", 1, 0.52),
            # pair 3: member 0 ties (half right: |0.35−.5| = |0.65−.5|), the
            # ensemble says b→a (wrong)
            ("0003", "a->b", 0, 0.35),
            ("0003", "a->b", 1, 0.66),
            ("0003", "b->a", 0, 0.65),
            ("0003", "b->a", 1, 0.51),
        ]
    )
    scores = pd.DataFrame(
        {"pair_id": ["0001", "0002", "0003"], "method": "igci", "score": [0.3, 0.2, -0.1]}
    )
    table = nodes.predictions(pairs, statistics, scores, ensemble_size=2)
    acc = nodes.accuracy(table, samples=200).set_index(["method", "c2st", "variant"])
    single, ensemble, igci = (
        acc.loc[("CGAN-C2ST", "knn", "single")],
        acc.loc[("CGAN-C2ST", "knn", "ensemble")],
        acc.loc[("IGCI", "", "")],
    )
    assert single.accuracy == pytest.approx((1 + 0 + 0.5) / 3) and single.ties == 1
    assert single.weighted_accuracy == pytest.approx((1 + 0 + 0.5) / 5)
    assert single.accuracy_original_ties == pytest.approx(
        (1 + 0 + 1) / 5
    )  # the tie on pair 3 (a→b true) counts as a→b
    assert ensemble.accuracy == pytest.approx(
        2 / 3
    ) and ensemble.weighted_accuracy == pytest.approx((1 + 3) / 5)
    assert igci.accuracy == pytest.approx(1 / 3) and igci.weighted_accuracy == pytest.approx(1 / 5)
    for row in (single, ensemble, igci):
        assert row.ci_low <= row.weighted_accuracy <= row.ci_high


def test_ensemble_curve_counts_ties_and_scores_them_both_ways():
    """Larger ensembles reach |accuracy − 0.5| = 0 in both directions: the curve reports
    the ties and both tie rules."""
    import yaml

    from oquab_repro.pipelines.causal.pipeline import create_pipeline

    pairs = [
        {
            "pair_id": "0001",
            "a": np.zeros(4),
            "b": np.zeros(4),
            "a_causes_b": True,
            "weight": 1.0,
            "n_original": 4,
        },
        {
            "pair_id": "0002",
            "a": np.zeros(4),
            "b": np.zeros(4),
            "a_causes_b": False,
            "weight": 3.0,
            "n_original": 4,
        },
    ]
    statistics = _statistics(
        [
            # pair 1 (a→b): right with 1 and 2 members; with 3, both directions have a
            # member at exactly 0.5: a tie
            ("0001", "a->b", 0, 0.60),
            ("0001", "a->b", 1, 0.55),
            ("0001", "a->b", 2, 0.50),
            ("0001", "b->a", 0, 0.70),
            ("0001", "b->a", 1, 0.65),
            ("0001", "b->a", 2, 0.50),
            # pair 2 (b→a): right with 1 and 2 members, a tie with 3 (which the
            # original rule answers a→b: wrong)
            ("0002", "a->b", 0, 0.60),
            ("0002", "a->b", 1, 0.52),
            ("0002", "a->b", 2, 0.50),
            ("0002", "b->a", 0, 0.58),
            ("0002", "b->a", 1, 0.50),
            ("0002", "b->a", 2, 0.55),
        ]
    )
    reference = yaml.safe_load(
        (Path(nodes.__file__).parents[2] / "reference" / "thesis_numbers.yaml").read_text()
    )
    info = {"cgan_c2st": 1.0, "units_trained": 2, "units_cached": 0}
    no_baselines = pd.DataFrame(columns=["pair_id", "method", "score"])
    table, metrics, _, curve, timings = nodes.summarise(
        pairs, statistics, no_baselines, info, {}, reference, _causal_params(), "mini", 0
    )
    assert timings == {"cgan_c2st_seconds": 1.0}  # wall times out of the DVC metrics
    assert not any("seconds" in key for key in metrics)
    curve = curve.set_index("members")
    assert curve.ties.tolist() == [0, 0, 2]
    assert curve.weighted_accuracy.tolist() == pytest.approx([1.0, 1.0, 0.5])  # ties count half
    assert curve.accuracy_original_ties.tolist() == pytest.approx(
        [1.0, 1.0, 0.25]
    )  # ties answer a→b
    assert metrics["ties_by_ensemble_size"]["knn"] == {"e1": 0, "e2": 0, "e3": 2}
    assert metrics["accuracy_by_ensemble_size"]["knn"]["e3"] == pytest.approx(0.5)
    assert metrics["accuracy_original_ties_by_ensemble_size"]["knn"]["e3"] == pytest.approx(0.25)
    fig = nodes.plot_directions(table, pairs)
    titles = [ax.get_title() for ax in fig.axes]
    assert (
        "KNN single: 2 right, 0 wrong, 0 ties" in titles
        and "KNN ensemble: 0 right, 0 wrong, 2 ties" in titles
    )
    assert "causal_fig_directions" in create_pipeline().outputs()


def test_mmd_decides_by_its_absolute_value():
    pairs = [{"pair_id": "0001", "a_causes_b": False, "weight": 1.0, "n_original": 10}]
    statistics = _statistics([("0001", "a->b", 0, -0.3), ("0001", "b->a", 0, 0.1)], test="mmd")
    table = nodes.predictions(
        pairs, statistics, pd.DataFrame(columns=["pair_id", "method", "score"]), ensemble_size=1
    )
    assert table.set_index("variant").loc["single", "correct"] == 1.0


def test_bootstrap_ci_narrows_with_more_pairs():
    rng = np.random.default_rng(0)

    def width(n: int) -> float:
        table = pd.DataFrame(
            {
                "method": "X",
                "c2st": "",
                "variant": "",
                "correct": rng.integers(0, 2, n).astype(float),
                "weight": rng.uniform(0.1, 1, n),
                "decision": 1,
                "a_causes_b": True,
            }
        )
        row = nodes.accuracy(table, samples=500).iloc[0]
        return row.ci_high - row.ci_low

    assert width(400) < width(25) / 2


def test_outliers_are_the_points_far_from_every_anchor():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 2 * np.pi, 50)
    isolated = 30 * np.column_stack([np.cos(angles), np.sin(angles)]) * rng.uniform(1, 3, (50, 1))
    data = np.vstack([rng.normal(size=(950, 2)), isolated])
    keep = nodes.remove_outliers(data, 0.05, 20, np.random.default_rng(1))
    assert len(keep) == 950
    assert (keep >= 950).sum() <= 3  # an isolated point survives only if it was drawn as an anchor


def test_prepare_pairs_removes_outliers_subsamples_and_standardises():
    from oquab_repro.lib.tuebingen import CausePair, pair_files

    rng = np.random.default_rng(0)
    files = pair_files(
        [CausePair("0007", rng.normal(5, 3, 1000), rng.normal(size=1000), False, 0.5)]
    )
    (pair,) = nodes.prepare_pairs(files, _causal_params(max_points=300), "mini", seed=0)
    assert (
        len(pair["a"]) == 300
        and pair["n_original"] == 1000
        and not pair["a_causes_b"]
        and pair["weight"] == 0.5
    )
    assert abs(pair["a"].mean()) < 1e-12 and pair["a"].std() == pytest.approx(1)
    (small,) = nodes.prepare_pairs(files, _causal_params(max_points=5000), "mini", seed=0)
    assert len(small["a"]) == 950  # 5 % outliers out, no subsampling
    constant = pair_files([CausePair("0008", np.ones(50), rng.normal(size=50), True, 1.0)])
    with pytest.raises(ValueError, match="pair0008 column 1 is constant"):
        nodes.prepare_pairs(constant, _causal_params(), "mini", seed=0)


def test_bqcd_orients_heteroscedastic_pairs():
    rng = np.random.default_rng(0)
    right = 0
    for i in range(6):
        x = rng.uniform(0, 3, 400)
        y = np.sin(2 * x) + (0.1 + 0.4 * x) * rng.standard_normal(400)  # location-scale mechanism
        right += methods.bqcd_score(x, y, 3, 5, 200, i) > 0
    assert right >= 5


def test_learned_baselines_train_on_synthetic_pairs_and_score_antisymmetrically():
    cfg = CausalParams.model_validate(_causal_params())
    data, labels = methods.synthetic_pairs(cfg, cfg.mini, seed=0)
    assert len(data) == 40 and set(labels) == {-1.0, 1.0} and len(data.A[0]) == 100
    again, _ = methods.synthetic_pairs(cfg, cfg.mini, seed=0)
    np.testing.assert_array_equal(again.A[3], data.A[3])  # seeded despite cdt's global NumPy state
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=200), rng.normal(size=200)
    ncc = methods.METHODS["ncc"].factory(cfg, cfg.mini, 0)
    assert ncc(a, b, 0) == pytest.approx(-ncc(b, a, 0))
    rcc = methods.METHODS["rcc"].factory(cfg, cfg.mini, 0)
    assert rcc(a, b, 0) in (-1.0, 1.0)


def test_labels_must_be_ordered_and_figure_pairs_must_exist():
    params = _causal_params()
    params["cgan"] = {**params["cgan"], "real_label": 0.3, "fake_label": 0.7}
    with pytest.raises(
        ValueError,
        match=r"causal\.cgan\.fake_label \(0\.7\) must be below causal\.cgan\.real_label \(0\.3\)",
    ):
        CausalParams.model_validate(params)
    params = {**_causal_params(), "figure_pairs": [16, 52]}  # 52 is multivariate
    with pytest.raises(
        ValueError,
        match=r"causal\.figure_pairs names pairs \[52\].*valid official ids: 1–51, 56–70, 72–104",
    ):
        CausalParams.model_validate(params)
