"""Two-sample tests (§5.3.2): classifier two-sample tests (C2ST) and the linear-time MMD.

A C2ST trains a binary classifier to tell samples of P (label 0) from samples of Q (label 1)
and uses its held-out accuracy as the statistic. Under H0: P = Q the accuracy of any
classifier on n_te held-out points is approximately N(1/2, 1/(4 n_te)), which gives the
p-value without permutations. Any scikit-learn classifier fits; :func:`knn_classifier`
and :func:`nn_classifier` are the two used throughout the thesis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm
from sklearn.base import ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def nn_classifier(hidden: int, epochs: int, lr: float) -> ClassifierFactory:
    """A one-hidden-layer ReLU network trained with Adam (inputs standardised)."""

    def build(n_test: int, seed: int = 0) -> ClassifierMixin:
        mlp = MLPClassifier(
            hidden_layer_sizes=(hidden,),
            activation="relu",
            solver="adam",
            learning_rate_init=lr,
            max_iter=epochs,
            random_state=seed,
        )
        return make_pipeline(StandardScaler(), mlp)

    return build


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


def mmd_linear(x: np.ndarray, y: np.ndarray, seed: int, bandwidth: float | None = None) -> TestResult:
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
        raise ValueError(f"mmd_linear needs at least 4 points per sample, got {len(x)} and {len(y)}")
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
