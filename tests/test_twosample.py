"""The two-sample tests hold their level under P = Q and have power on an easy alternative; the
registry runs each by name, alone or batched, and its C2ST-NN agrees with scikit-learn's MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oquab_repro.lib import twosample as ts

OPTIONS = ts.TestOptions(test_fraction=0.5, nn_hidden=20, nn_epochs=100, nn_lr=1e-3)


@pytest.fixture(autouse=True)
def _one_thread():
    """C2ST-NN's networks are tiny: a second intra-op thread only spin-waits
    (10x slower when loaded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        ("nn", lambda x, y, s: ts.two_sample_test(x, y, method="nn", seed=s, options=OPTIONS), 40),
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


def _pairs(
    m: int, n: int, shift: float, scale: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, n, 2)), rng.standard_normal((m, n, 2)) * scale + shift


def test_registry_runs_each_test_by_name_and_rejects_unknown_ones() -> None:
    assert list(ts.TESTS) == ["knn", "nn", "mmd"]
    x, y = _pairs(1, 50, 0.0)
    with pytest.raises(
        ValueError, match="unknown two-sample test 'energy'; registered: knn, nn, mmd"
    ):
        ts.two_sample_test(x[0], y[0], method="energy", seed=0, options=OPTIONS)
    with pytest.raises(ValueError, match=r"need \(M, n, d\)"):
        ts.two_sample_tests(x[0], y[0], method="knn", seed=0, options=OPTIONS)


@pytest.mark.parametrize("method", ["knn", "mmd"])
def test_a_pair_gives_the_same_result_alone_and_in_a_batch(method: str) -> None:
    x, y = _pairs(4, 60, 0.5)
    batch = ts.two_sample_tests(x, y, method=method, seed=10, options=OPTIONS)
    for m in range(4):
        alone = ts.two_sample_test(x[m], y[m], method=method, seed=10 + m, options=OPTIONS)
        assert alone == batch[m]


def test_mmd_takes_one_bandwidth_per_pair() -> None:
    x, y = _pairs(2, 60, 0.5)
    wide = ts.two_sample_tests(x, y, method="mmd", seed=0, options=OPTIONS, bandwidth=[5.0, 0.1])
    assert wide[0] == ts.mmd_linear(x[0], y[0], 0, bandwidth=5.0)
    assert wide[1] == ts.mmd_linear(x[1], y[1], 1, bandwidth=0.1)


def _sklearn_mlp(n_test: int, seed: int = 0):
    """scikit-learn's MLP set up as C2ST-NN (one hidden ReLU layer, Adam, standardised inputs)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPClassifier(
        (OPTIONS.nn_hidden,),
        max_iter=OPTIONS.nn_epochs,
        learning_rate_init=OPTIONS.nn_lr,
        random_state=seed,
    )
    return make_pipeline(StandardScaler(), mlp)


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (0.6, 1.0), (0.0, 1.6)])
def test_torch_c2st_nn_agrees_with_scikit_learns_mlp(shift: float, scale: float) -> None:
    """The one C2ST-NN (batched torch) measures what scikit-learn's MLPClassifier measures: over 20
    pairs the mean held-out accuracies agree within 0.025 (measured: within 0.01), on P = Q, a mean
    shift and a scale change alike."""
    x, y = _pairs(20, 300, shift, scale, seed=1)
    ours = np.mean(
        [r.statistic for r in ts.two_sample_tests(x, y, method="nn", seed=0, options=OPTIONS)]
    )
    sklearn = np.mean(
        [
            ts.c2st(a, b, _sklearn_mlp, OPTIONS.test_fraction, m).statistic
            for m, (a, b) in enumerate(zip(x, y, strict=True))
        ]
    )
    assert abs(ours - sklearn) < 0.025, f"C2ST-NN {ours:.3f} vs scikit-learn {sklearn:.3f}"
