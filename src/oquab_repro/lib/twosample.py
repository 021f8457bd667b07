"""Two-sample tests (§5.3.2): classifier two-sample tests (C2ST) and the linear-time MMD.

A C2ST trains a binary classifier to tell samples of P (label 0) from samples of Q (label 1)
and uses its held-out accuracy as the statistic. Under H0: P = Q the accuracy of any
classifier on n_te held-out points is approximately N(1/2, 1/(4 n_te)), which gives the
p-value without permutations. :func:`c2st` runs any scikit-learn classifier.

Every stage picks its tests by name from one registry, :data:`TESTS`, the way POT's
``method=`` works: :func:`two_sample_test` runs one pair of samples, :func:`two_sample_tests`
M pairs at once (ensembles, grids). Adding a test is one entry there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from sklearn.base import ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

ClassifierFactory = Callable[[int, int], ClassifierMixin]
"""Builds a fresh classifier from (number of held-out points, seed)."""


@dataclass(frozen=True)
class TestResult:
    """A two-sample test outcome: larger ``statistic`` means P and Q look more different."""

    statistic: float
    p_value: float
    n_test: int

    def rejects(self, alpha: float) -> bool:
        return self.p_value < alpha

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def accuracy_p_value(accuracy: float, n_test: int) -> float:
    """One-sided p-value of a held-out accuracy under H0, from N(1/2, 1/(4 n_test))."""
    return float(norm.sf(accuracy, loc=0.5, scale=math.sqrt(1.0 / (4.0 * n_test))))


def knn_classifier(n_test: int, seed: int = 0) -> ClassifierMixin:
    """K-nearest neighbours with K = √n_te, as in the thesis."""
    return KNeighborsClassifier(n_neighbors=max(1, math.isqrt(n_test)))


def c2st(
    x: np.ndarray,
    y: np.ndarray,
    classifier: ClassifierFactory,
    test_fraction: float,
    seed: int,
) -> TestResult:
    """Classifier two-sample test of samples ``x`` ~ P against ``y`` ~ Q (rows are points)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"c2st needs at least 2 points per sample, got {len(x)} and {len(y)}")
    features = np.concatenate([x, y])
    labels = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    x_tr, x_te, y_tr, y_te = train_test_split(
        features, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    model = classifier(len(y_te), seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_tr, y_tr)
    accuracy = float(np.mean(model.predict(x_te) == y_te))
    return TestResult(accuracy, accuracy_p_value(accuracy, len(y_te)), len(y_te))


def median_bandwidth(z: np.ndarray, rng: np.random.Generator, max_points: int = 1000) -> float:
    """Median pairwise distance of (a subsample of) the pooled points: the usual RBF width."""
    if len(z) > max_points:
        z = z[rng.choice(len(z), max_points, replace=False)]
    sq = np.sum(z**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    med = float(np.sqrt(np.median(d2[np.triu_indices(len(z), k=1)])))
    return med if med > 0 else 1.0


def mmd_linear(
    x: np.ndarray, y: np.ndarray, seed: int, bandwidth: float | None = None
) -> TestResult:
    """Linear-time MMD² with an RBF kernel (Gretton et al., 2012, §6) and its Gaussian p-value.

    Points are paired as (x_{2i}, x_{2i+1}), (y_{2i}, y_{2i+1}); the statistic is the mean of
    h = k(x,x') + k(y,y') − k(x,y') − k(x',y), whose standard error gives the p-value.
    """
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    m = (min(len(x), len(y)) // 2) * 2
    if m < 4:
        raise ValueError(
            f"mmd_linear needs at least 4 points per sample, got {len(x)} and {len(y)}"
        )
    x = x[rng.permutation(len(x))[:m]]
    y = y[rng.permutation(len(y))[:m]]
    width = bandwidth or median_bandwidth(np.concatenate([x, y]), rng)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-np.sum((a - b) ** 2, axis=1) / (2 * width**2))

    x1, x2, y1, y2 = x[0::2], x[1::2], y[0::2], y[1::2]
    h = k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)
    stat = float(h.mean())
    se = float(h.std(ddof=1) / math.sqrt(len(h)))
    p_value = float(norm.sf(stat / se)) if se > 0 else (0.0 if stat > 0 else 1.0)
    return TestResult(stat, p_value, len(h))


def _standardised_splits(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[torch.Tensor, ...]:
    """Per pair m, the stratified train / held-out split of the pooled sample (seed + m), inputs
    standardised on the training part: features (M, n, d) and labels (M, n), train then test."""
    labels = np.concatenate([np.zeros(x.shape[1]), np.ones(y.shape[1])]).astype(np.float32)
    splits = [
        train_test_split(
            np.concatenate([x[m], y[m]]),
            labels,
            test_size=test_fraction,
            random_state=seed + m,
            stratify=labels,
        )
        for m in range(len(x))
    ]
    f_tr, f_te, l_tr, l_te = (
        torch.from_numpy(np.stack(part)) for part in zip(*splits, strict=True)
    )
    mean, std = f_tr.mean(1, keepdim=True), f_tr.std(1, keepdim=True).clamp_min(1e-8)
    return (f_tr - mean) / std, (f_te - mean) / std, l_tr, l_te


class _StackedMLP:
    """M one-hidden-layer ReLU networks as stacked weights (batched matmuls), PyTorch's default
    Linear initialisation drawn from ``gen``."""

    def __init__(self, members: int, dim: int, hidden: int, gen: torch.Generator):
        def uniform(*shape: int, fan_in: int) -> torch.Tensor:
            bound = 1 / math.sqrt(fan_in)
            return ((torch.rand(members, *shape, generator=gen) * 2 - 1) * bound).requires_grad_()

        self.w1, self.b1 = uniform(dim, hidden, fan_in=dim), uniform(1, hidden, fan_in=dim)
        self.w2, self.b2 = uniform(hidden, 1, fan_in=hidden), uniform(1, 1, fan_in=hidden)

    def parameters(self) -> list[torch.Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(
            self.b2, torch.relu(torch.baddbmm(self.b1, f, self.w1)), self.w2
        ).squeeze(-1)


def c2st_nn_batched(
    x: np.ndarray,
    y: np.ndarray,
    hidden: int,
    epochs: int,
    lr: float,
    test_fraction: float,
    seed: int,
) -> list[TestResult]:
    """C2ST-NN of M sample pairs at once: ``x[m]`` ~ P_m against ``y[m]`` ~ Q_m,
    shapes (M, n, d), (M, k, d).

    The project's one C2ST-NN (registered as ``nn``): the test :func:`c2st` runs with
    scikit-learn's ``MLPClassifier`` (stratified held-out split, inputs standardised on the
    training part, one hidden ReLU layer, Adam on minibatches of min(200, n_train) for ``epochs``
    passes; tests/test_twosample.py checks the two agree), but the M networks are trained as one
    stacked model with batched matmuls: thousands of C2STs (ensembles of generative models) then
    cost about as much as a few. Unlike scikit-learn it runs the full ``epochs`` without early
    stopping. Tiny networks: run it with one intra-op thread (``torch.set_num_threads(1)``).
    """
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"c2st_nn_batched needs (M, n, d) and (M, k, d) arrays, got {x.shape} and {y.shape}"
        )
    f_tr, f_te, l_tr, l_te = _standardised_splits(x, y, test_fraction, seed)
    gen = torch.Generator().manual_seed(seed)
    net = _StackedMLP(x.shape[0], x.shape[2], hidden, gen)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n_train = f_tr.shape[1]
    batch = min(200, n_train)
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=gen)
        for start in range(0, n_train, batch):
            idx = order[start : start + batch]
            loss = F.binary_cross_entropy_with_logits(
                net(f_tr[:, idx]), l_tr[:, idx], reduction="none"
            )
            opt.zero_grad(set_to_none=True)
            loss.mean(1).sum().backward()  # members are independent: gradients do not mix
            opt.step()
    with torch.no_grad():
        correct = ((net(f_te) > 0).float() == l_te).sum(1).numpy()
    n_test = l_te.shape[1]
    accuracy = (
        correct / n_test
    )  # exact fractions, as scikit-learn's accuracy (float32 means are not)
    return [TestResult(float(a), accuracy_p_value(float(a), n_test), n_test) for a in accuracy]


# ---------------------------------------------------------------------------------------------
# The registry: every stage runs its tests through these two functions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestOptions:
    """What the tests need besides the samples: params.yaml's ``c2st`` section (``alpha`` aside)."""

    test_fraction: float
    nn_hidden: int
    nn_epochs: int
    nn_lr: float

    @classmethod
    def from_params(cls, c2st: Mapping[str, Any]) -> TestOptions:
        return cls(**{f.name: c2st[f.name] for f in fields(cls)})


BatchedTest = Callable[..., list[TestResult]]
"""``(x, y, seed, options, **extra)`` with x (M, n, d), y (M, k, d) → one result per pair."""


@dataclass(frozen=True)
class TwoSampleTest:
    """A registered test: its display name and how it runs M sample pairs."""

    label: str
    run: BatchedTest


def _knn(x: np.ndarray, y: np.ndarray, seed: int, options: TestOptions) -> list[TestResult]:
    pairs = enumerate(zip(x, y, strict=True))
    return [c2st(a, b, knn_classifier, options.test_fraction, seed + m) for m, (a, b) in pairs]


def _nn(x: np.ndarray, y: np.ndarray, seed: int, options: TestOptions) -> list[TestResult]:
    o = options
    return c2st_nn_batched(x, y, o.nn_hidden, o.nn_epochs, o.nn_lr, o.test_fraction, seed)


def _mmd(
    x: np.ndarray, y: np.ndarray, seed: int, options: TestOptions, bandwidth: Any = None
) -> list[TestResult]:
    """``bandwidth``: one RBF width per pair (e.g. shared by several samples of one real set)."""
    widths = [None] * len(x) if bandwidth is None else list(np.broadcast_to(bandwidth, len(x)))
    return [mmd_linear(x[m], y[m], seed + m, bandwidth=widths[m]) for m in range(len(x))]


TESTS: dict[str, TwoSampleTest] = {
    "knn": TwoSampleTest("C2ST-KNN", _knn),
    "nn": TwoSampleTest("C2ST-NN", _nn),
    "mmd": TwoSampleTest("MMD (linear)", _mmd),
}
"""The thesis' tests by name (§5.3.2): the names params, metrics keys and tables use."""


def _lookup(method: str) -> TwoSampleTest:
    if method not in TESTS:
        raise ValueError(f"unknown two-sample test '{method}'; registered: {', '.join(TESTS)}")
    return TESTS[method]


def two_sample_tests(
    x: np.ndarray, y: np.ndarray, *, method: str, seed: int, options: TestOptions, **extra: Any
) -> list[TestResult]:
    """Test M pairs at once: ``x[m]`` ~ P_m against ``y[m]`` ~ Q_m, arrays (M, n, d) and (M, k, d).

    Pair m draws its split (and MMD pairing) from ``seed + m``, so a pair gives the same result
    alone (M = 1, seed + m) as in the batch, except C2ST-NN, whose M networks share one
    initialisation generator seeded with ``seed``.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 3 or y.ndim != 3 or len(x) != len(y) or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"{method}: need (M, n, d) and (M, k, d) arrays, got {x.shape} and {y.shape}"
        )
    return _lookup(method).run(x, y, seed, options, **extra)


def two_sample_test(
    x: np.ndarray, y: np.ndarray, *, method: str, seed: int, options: TestOptions, **extra: Any
) -> TestResult:
    """Test samples ``x`` ~ P against ``y`` ~ Q (rows are points; 1-D arrays are one feature)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    (result,) = two_sample_tests(
        x[None], y[None], method=method, seed=seed, options=options, **extra
    )
    return result
