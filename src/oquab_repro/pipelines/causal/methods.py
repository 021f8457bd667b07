"""Pairwise cause-effect baselines of Table 5.1 and a recent peer, as a
registry of scorer factories.

Every factory takes the validated causal parameters, the profile's scale and a seed and returns a
scorer ``(a, b, seed) → score`` with score > 0 meaning A → B, < 0 B → A and 0 a tie. Learned methods
(RCC, NCC) train inside their factory, once per run, on synthetic cause-effect pairs drawn with
``cdt.data.CausalPairGenerator`` (cause from a Gaussian mixture, a random mechanism, additive
noise), as their papers train on synthetic pairs; they never see a Tübingen pair before testing.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import roots_legendre
from scipy.stats import norm, rankdata

from oquab_repro.params import CausalParams, CausalScale

Scorer = Callable[[np.ndarray, np.ndarray, int], float]
Factory = Callable[[CausalParams, CausalScale, int], Scorer]


@dataclass(frozen=True)
class Method:
    """A baseline: the name Table 5.1 prints and the factory of its scorer."""

    label: str
    factory: Factory


def anm_hsic_score(a: np.ndarray, b: np.ndarray, fit_points: int, seed: int) -> float:
    """ANM-HSIC (Hoyer et al., 2009) with cdt's HSIC statistic; > 0 means A → B.

    cdt 0.6.0's own ``ANM`` fits a noise-free GP (so residuals are ~1e-10) and subtracts an (n,)
    prediction from an (n, 1) target, broadcasting to an (n, n) matrix: both directions then get the
    same score and every pair is a tie. We keep its HSIC and fix the regression: a GP with an RBF
    plus white-noise kernel, fitted on at most ``fit_points`` points (GP fitting is O(n³)).
    """
    from cdt.causality.pairwise.ANM import normalized_hsic
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    rng = np.random.default_rng(seed)

    def dependence(x: np.ndarray, y: np.ndarray) -> float:
        fit = rng.choice(len(x), fit_points, replace=False) if len(x) > fit_points else slice(None)
        gp = GaussianProcessRegressor(ConstantKernel() * RBF() + WhiteKernel(), random_state=seed)
        gp.fit(x[fit, None], y[fit])
        return float(normalized_hsic(y - gp.predict(x[:, None]), x))

    return dependence(b, a) - dependence(a, b)


def _anm(cfg: CausalParams, scale: CausalScale, seed: int) -> Scorer:
    return lambda a, b, s: anm_hsic_score(a, b, scale.anm_fit_points, s)


def _cdt_pairwise(name: str) -> Factory:
    """cdt's untrained pairwise models (IGCI, RECI, CDS): their own ``predict_proba``."""

    def factory(cfg: CausalParams, scale: CausalScale, seed: int) -> Scorer:
        from cdt.causality import pairwise

        model = getattr(pairwise, name)()
        return lambda a, b, s: float(np.ravel(model.predict_proba((a, b)))[0])

    return factory


@contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators for cdt code that draws
    from them, then restore them."""
    import torch

    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


_SYNTHETIC: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}


def synthetic_pairs(
    cfg: CausalParams, scale: CausalScale, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled synthetic pairs (``A``, ``B`` arrays; label +1: A → B), an
    equal share per mechanism.

    Drawn once per process and settings: RCC and NCC train on the same set.

    ``cdt``'s generator draws from Python's, NumPy's and torch's global generators, so they are
    seeded here (and restored after) for a reproducible set.
    """
    from cdt.data import CausalPairGenerator

    key = (
        f"{cfg.synthetic.model_dump_json()}|{scale.synthetic_pairs}|{scale.synthetic_points}|{seed}"
    )
    if key in _SYNTHETIC:
        return _SYNTHETIC[key]
    per_mechanism = max(1, scale.synthetic_pairs // len(cfg.synthetic.mechanisms))
    frames, labels = [], []
    with global_seed(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GMM convergence warnings of cdt's cause generator
        for mechanism in cfg.synthetic.mechanisms:
            gen = CausalPairGenerator(mechanism, noise_coeff=cfg.synthetic.noise_coeff)
            data, label = gen.generate(per_mechanism, npoints=scale.synthetic_points, rescale=True)
            frames.append(data)
            labels.append(label["label"].to_numpy())
    _SYNTHETIC[key] = pd.concat(frames, ignore_index=True), np.concatenate(labels).astype(float)
    return _SYNTHETIC[key]


def _rcc(cfg: CausalParams, scale: CausalScale, seed: int) -> Scorer:
    """RCC (Lopez-Paz et al., ICML 2015): cdt's random-feature embedding and random forest."""
    from cdt.causality.pairwise import RCC

    data, labels = synthetic_pairs(cfg, scale, seed)
    with global_seed(seed):  # cdt's random features and forest draw from NumPy's global state
        model = RCC(nb_estimators=scale.rcc_trees, njobs=1, verbose=False)
        model.fit(data, labels[:, None])
    return lambda a, b, s: float(np.ravel(model.predict_proba((a, b)))[0])


def _ncc(cfg: CausalParams, scale: CausalScale, seed: int) -> Scorer:
    """NCC (Lopez-Paz et al., CVPR 2017) with cdt's network, trained as in the paper.

    The training set holds every synthetic pair in both orders (label flipped), and a pair is
    scored by the antisymmetric ``(NCC(a, b) − NCC(b, a)) / 2`` (the paper's symmetrised
    probability, centred): this also cancels cdt's ``predict_proba`` offset, which thresholds the
    logit at 0.5 instead of 0.
    """
    import torch
    from cdt.causality.pairwise import NCC

    data, labels = synthetic_pairs(cfg, scale, seed)
    flipped = pd.DataFrame({"A": data["B"], "B": data["A"]})
    both, both_labels = (
        pd.concat([data, flipped], ignore_index=True),
        np.concatenate([labels, -labels]),
    )
    model = NCC()
    with global_seed(seed):  # initialisation and batch order
        model.fit(both, both_labels[:, None], epochs=scale.ncc_epochs, verbose=False, device="cpu")

    def score(a: np.ndarray, b: np.ndarray, s: int) -> float:
        with torch.no_grad():
            ab, ba = (
                float(np.ravel(model.predict_proba(p, device="cpu"))[0]) for p in ((a, b), (b, a))
            )
        return (ab - ba) / 2

    return score


def normal_scores(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Φ⁻¹ of the pseudo-observations rank/(n+1), ties broken at random (discrete variables)."""
    jitter = rng.permutation(len(x))
    ranks = np.empty(len(x))
    ranks[jitter] = rankdata(x[jitter], method="ordinal")
    return norm.ppf(ranks / (len(x) + 1))


def pinball(y: np.ndarray, q: np.ndarray | float, tau: float) -> float:
    """Quantile (pinball) score of predictions ``q`` at level ``tau``: a code length in bQCD."""
    return float(np.mean(((y <= q) - tau) * (q - y)))


def bqcd_score(
    a: np.ndarray, b: np.ndarray, levels: int, knots: int, min_points: int, seed: int
) -> float:
    """bQCD (Tagasovska, Chavez-Demoulin & Vatter, ICML 2020); > 0 means A → B.

    Both variables go to normal scores; at Gauss–Legendre quantile levels τ (one level, the median,
    below ``min_points`` points, as in the authors' code) each is predicted by its marginal quantile
    and by a nonparametric quantile regression on the other (here cubic regression splines with
    ``knots`` knots and scikit-learn's ``QuantileRegressor``; the paper shows the choice of quantile
    regressor matters little). With quantile scores S as code lengths,
    ``S(A→B) = (S(A) + S(B|A)) / (S(A) + S(B))`` and the smaller of S(A→B), S(B→A) wins.
    """
    from sklearn.linear_model import QuantileRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import SplineTransformer

    rng = np.random.default_rng(seed)
    x, y = normal_scores(a, rng), normal_scores(b, rng)
    nodes, weights = roots_legendre(levels if len(a) >= min_points else 1)
    taus, weights = (nodes + 1) / 2, weights / weights.sum()

    def conditional(target: np.ndarray, given: np.ndarray, tau: float) -> float:
        model = make_pipeline(
            SplineTransformer(n_knots=knots, degree=3),
            QuantileRegressor(quantile=tau, alpha=0.0, solver="highs"),
        )
        model.fit(given[:, None], target)
        return pinball(target, model.predict(given[:, None]), tau)

    marg_x = sum(w * pinball(x, np.quantile(x, t), t) for t, w in zip(taus, weights, strict=True))
    marg_y = sum(w * pinball(y, np.quantile(y, t), t) for t, w in zip(taus, weights, strict=True))
    cond_y = sum(w * conditional(y, x, t) for t, w in zip(taus, weights, strict=True))
    cond_x = sum(w * conditional(x, y, t) for t, w in zip(taus, weights, strict=True))
    a_to_b = (marg_x + cond_y) / (marg_x + marg_y)
    b_to_a = (marg_y + cond_x) / (marg_x + marg_y)
    return float(b_to_a - a_to_b)


def _bqcd(cfg: CausalParams, scale: CausalScale, seed: int) -> Scorer:
    q = cfg.bqcd
    return lambda a, b, s: bqcd_score(a, b, q.quantile_levels, q.knots, q.min_points, s)


METHODS: dict[str, Method] = {
    "anm": Method("ANM-HSIC", _anm),
    "igci": Method("IGCI", _cdt_pairwise("IGCI")),
    "reci": Method("RECI", _cdt_pairwise("RECI")),
    "cds": Method("CDS", _cdt_pairwise("CDS")),
    "rcc": Method("RCC", _rcc),
    "ncc": Method("NCC", _ncc),
    "bqcd": Method("bQCD", _bqcd),
}
