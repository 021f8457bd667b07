"""The two-sample tests hold their level under P = Q and have power on an easy alternative."""

from __future__ import annotations

import numpy as np
import pytest

from oquab_repro.lib import twosample as ts

NN = ts.nn_classifier(hidden=20, epochs=100, lr=1e-3)


def _rejection_rate(test, shift: float, n: int, reps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    rejects = 0
    for r in range(reps):
        x = rng.standard_normal((n, 2))
        y = rng.standard_normal((n, 2)) + shift
        rejects += test(x, y, r).rejects(0.05)
    return rejects / reps


@pytest.mark.parametrize(
    ("name", "test", "reps"),
    [
        ("knn", lambda x, y, s: ts.c2st(x, y, ts.knn_classifier, 0.5, s), 200),
        ("mmd", lambda x, y, s: ts.mmd_linear(x, y, s), 200),
        ("nn", lambda x, y, s: ts.c2st(x, y, NN, 0.5, s), 40),
    ],
)
def test_level_and_power(name: str, test, reps: int) -> None:
    type1 = _rejection_rate(test, shift=0.0, n=200, reps=reps)
    # Binomial(reps, 0.05) stays below this bound with probability > 0.999.
    bound = 0.05 + 3.3 * np.sqrt(0.05 * 0.95 / reps)
    assert type1 <= bound, f"{name}: type-I error {type1:.3f} above {bound:.3f}"
    power = _rejection_rate(test, shift=1.5, n=200, reps=20)
    assert power >= 0.9, f"{name}: power {power:.2f} on a 1.5σ mean shift"


def test_accuracy_p_value_matches_normal_approximation() -> None:
    assert ts.accuracy_p_value(0.5, 100) == pytest.approx(0.5)
    # accuracy two standard errors above chance: sd = sqrt(1/(4n)) = 0.05 for n = 100
    assert ts.accuracy_p_value(0.6, 100) == pytest.approx(0.02275, abs=1e-4)


def test_knn_uses_sqrt_of_test_size() -> None:
    assert ts.knn_classifier(400).n_neighbors == 20


def test_c2st_statistic_is_held_out_accuracy() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((100, 1)), rng.standard_normal((100, 1)) + 10
    res = ts.c2st(x, y, ts.knn_classifier, 0.5, seed=0)
    assert res.statistic == 1.0 and res.n_test == 100 and res.p_value < 1e-10


def test_inputs_too_small() -> None:
    with pytest.raises(ValueError, match="at least 4 points"):
        ts.mmd_linear(np.zeros((3, 1)), np.zeros((3, 1)), 0)
    with pytest.raises(ValueError, match="at least 2 points"):
        ts.c2st(np.zeros((1, 1)), np.zeros((5, 1)), ts.knn_classifier, 0.5, 0)
