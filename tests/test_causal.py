"""Causal stage (§5.4.2): direction decisions, accuracy bookkeeping, vectorised = looped ensembles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from oquab_repro.lib.ensembles import CGANConfig, train_cgan_ensemble
from oquab_repro.params import C2STParams
from oquab_repro.pipelines.causal import nodes

C2ST = C2STParams(test_fraction=0.5, alpha=0.05, nn_hidden=20, nn_epochs=30, nn_lr=0.01)


def _causal_params(**scale) -> dict:
    mini = {"max_points": 300, "ensemble_size": 3, "hidden": 32, "epochs": 40, "batch_size": 32, "anm_fit_points": 100, "workers": 1, **scale}
    return {
        "cgan": {"noise_dim": 4, "dropout": 0.1, "lr": 0.005, "beta1": 0.5, "beta2": 0.999, "real_label": 0.8, "fake_label": 0.2},
        "baselines": ["anm", "igci"],
        "figure_pairs": [1],
        "mini": mini,
        "full": mini,
    }


def _synthetic_pairs(count: int, n: int, seed: int) -> list[dict]:
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
                "pair_id": f"{i + 1:04d}",
                "a": nodes.standardise(a, "a"),
                "b": nodes.standardise(b, "b"),
                "a_causes_b": a_causes_b,
                "weight": 1.0,
                "n_original": n,
            }
        )
    return pairs


def test_cgan_c2st_finds_the_cause_of_additive_noise_pairs():
    pairs = _synthetic_pairs(count=6, n=300, seed=1)
    statistics, samples, _ = nodes.cgan_c2st(pairs, _causal_params(), C2ST.model_dump(), "mini", seed=0, device="cpu")
    assert set(samples) == {"0001"} and samples["0001"]["fake_b"].shape == (300,)
    table = nodes.predictions(pairs, statistics, pd.DataFrame(columns=["pair_id", "method", "score"]))
    knn = table[(table.c2st == "knn") & (table.variant == "ensemble")]
    assert knn.correct.mean() >= 4 / 6, knn[["pair_id", "statistic_a_to_b", "statistic_b_to_a", "a_causes_b"]]


def test_results_do_not_depend_on_the_number_of_worker_processes():
    pairs = _synthetic_pairs(count=2, n=120, seed=2) + _synthetic_pairs(count=2, n=90, seed=3)
    runs = [nodes.cgan_c2st(pairs, _causal_params(epochs=2, workers=w), C2ST.model_dump(), "mini", seed=0, device="cpu") for w in (1, 2)]
    (one, samples_one, _), (two, samples_two, _) = runs
    pd.testing.assert_frame_equal(one, two)
    np.testing.assert_array_equal(samples_one["0001"]["fake_b"], samples_two["0001"]["fake_b"])


def test_vectorised_and_looped_ensembles_agree():
    cfg = CGANConfig(noise_dim=3, hidden=16, dropout=0.2, lr=0.005, beta1=0.5, beta2=0.999, real_label=0.8, fake_label=0.2, epochs=3, batch_size=16)
    pairs = _synthetic_pairs(count=2, n=64, seed=2)
    cond = torch.tensor(np.stack([p["a"] for p in pairs] * 2))[..., None]  # float64: agreement to rounding
    target = torch.tensor(np.stack([p["b"] for p in pairs] * 2))[..., None]
    fakes = {b: train_cgan_ensemble(cond, target, cfg, seed=5, backend=b).sample(cond, seed=6) for b in ("loop", "vmap", "bmm")}
    torch.testing.assert_close(fakes["vmap"], fakes["loop"], rtol=0, atol=1e-9)
    torch.testing.assert_close(fakes["bmm"], fakes["loop"], rtol=0, atol=1e-9)
    real = np.stack([np.column_stack([p["a"], p["b"]]) for p in pairs] * 2)
    stats = {}
    for backend, fake in fakes.items():
        joint = np.concatenate([real[..., :1], fake.numpy()], axis=-1)[:, None]
        stats[backend] = {t: [r.statistic for r in rs] for t, rs in nodes.synthetic_statistics(real, joint, C2ST, 0).items()}
    for backend in ("vmap", "bmm"):
        for test in ("knn", "nn"):  # accuracies: identical
            assert stats[backend][test] == stats["loop"][test], (backend, test)
        np.testing.assert_allclose(stats[backend]["mmd"], stats["loop"]["mmd"], rtol=1e-9)
    # different seeds give different members: the comparison above is not vacuous
    other = train_cgan_ensemble(cond, target, cfg, seed=7, backend="bmm").sample(cond, seed=6)
    assert not torch.allclose(other, fakes["bmm"])


def _statistics(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"pair_id": p, "direction": d, "member": m, "test": "knn", "statistic": s, "p_value": 0.5, "n_test": 10} for p, d, m, s in rows]
    )


def test_accuracy_on_a_hand_made_table():
    pairs = [
        {"pair_id": "0001", "a_causes_b": True, "weight": 1.0, "n_original": 10},
        {"pair_id": "0002", "a_causes_b": False, "weight": 3.0, "n_original": 10},
        {"pair_id": "0003", "a_causes_b": True, "weight": 1.0, "n_original": 10},
    ]
    statistics = _statistics(
        [
            # pair 1: member 0 says a→b (right); the best members also say a→b (0.50 < 0.55)
            ("0001", "a->b", 0, 0.60), ("0001", "a->b", 1, 0.50), ("0001", "b->a", 0, 0.70), ("0001", "b->a", 1, 0.55),
            # pair 2 (truth b→a): member 0 says a→b (wrong), the ensemble's best says b→a (0.52 < 0.58)
            ("0002", "a->b", 0, 0.58), ("0002", "a->b", 1, 0.80), ("0002", "b->a", 0, 0.90), ("0002", "b->a", 1, 0.52),
            # pair 3: member 0 ties (half right), the ensemble says b→a (wrong)
            ("0003", "a->b", 0, 0.65), ("0003", "a->b", 1, 0.66), ("0003", "b->a", 0, 0.65), ("0003", "b->a", 1, 0.60),
        ]
    )
    scores = pd.DataFrame({"pair_id": ["0001", "0002", "0003"], "method": "igci", "score": [0.3, 0.2, -0.1]})
    table = nodes.predictions(pairs, statistics, scores)
    acc = nodes.accuracy(table).set_index(["method", "c2st", "variant"])
    assert acc.loc[("CGAN-C2ST", "knn", "single"), "accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert acc.loc[("CGAN-C2ST", "knn", "single"), "ties"] == 1
    assert acc.loc[("CGAN-C2ST", "knn", "ensemble"), "accuracy"] == pytest.approx(2 / 3)
    assert acc.loc[("CGAN-C2ST", "knn", "ensemble"), "weighted_accuracy"] == pytest.approx((1 + 3) / 5)
    assert acc.loc[("IGCI", "", ""), "accuracy"] == pytest.approx(1 / 3)  # +0.3 right, +0.2 wrong, −0.1 wrong
    assert acc.loc[("IGCI", "", ""), "weighted_accuracy"] == pytest.approx(1 / 5)


def test_prepare_pairs_subsamples_and_standardises():
    from oquab_repro.lib.tuebingen import CausePair, pair_files

    rng = np.random.default_rng(0)
    files = pair_files([CausePair("0007", rng.normal(5, 3, 1000), rng.normal(size=1000), False, 1.0)])
    (pair,) = nodes.prepare_pairs(files, _causal_params(max_points=300), "mini", seed=0)
    assert len(pair["a"]) == 300 and pair["n_original"] == 1000 and not pair["a_causes_b"]
    assert abs(pair["a"].mean()) < 1e-12 and pair["a"].std() == pytest.approx(1)
    constant = pair_files([CausePair("0008", np.ones(50), rng.normal(size=50), True, 1.0)])
    with pytest.raises(ValueError, match="pair0008 column 1 is constant"):
        nodes.prepare_pairs(constant, _causal_params(), "mini", seed=0)
