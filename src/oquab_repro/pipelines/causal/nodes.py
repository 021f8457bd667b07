"""Kedro nodes of the causal stage: CGAN-C2ST cause-effect discovery on the Tübingen pairs (§5.4.2).

For a pair (A, B) we fit conditional GANs in both directions, g(a, z) → b and g(b, z) → a, and ask
a two-sample test how far each synthetic dataset, (a, ĝ(a, z)) or (ĝ(b, z), b), is from the real
one: the direction whose CGAN imitates the data better (lower statistic) is declared causal.
CGAN-C2ST uses one CGAN per direction (the ensemble's first member), the Ensemble variant the best
of E. The cdt baselines see exactly the same subsampled, standardised pairs.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from oquab_repro.lib import twosample as ts
from oquab_repro.lib.ensembles import CGANConfig, train_cgan_ensemble
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.lib.tuebingen import read_pairs
from oquab_repro.params import C2STParams, CausalParams, CausalScale

log = logging.getLogger(__name__)

CGAN = "CGAN-C2ST"
BASELINE_NAMES = {"anm": "ANM-HSIC", "igci": "IGCI", "reci": "RECI", "cds": "CDS"}


def _config(causal: dict[str, Any], profile: str) -> tuple[CausalParams, CausalScale]:
    cfg = CausalParams.model_validate(causal)
    return cfg, getattr(cfg, profile)


def _pair_seed(seed: int, pair_id: str) -> int:
    return seed * 100_003 + int(pair_id)


def standardise(values: np.ndarray, name: str) -> np.ndarray:
    std = values.std()
    if not std > 0:
        raise ValueError(f"{name} is constant: a cause-effect pair needs two varying columns.")
    return (values - values.mean()) / std


def prepare_pairs(tuebingen_pairs: dict[str, Any], causal: dict[str, Any], profile: str, seed: int) -> list[dict[str, Any]]:
    """Univariate pairs, subsampled to ``max_points`` and standardised column-wise (all methods use these)."""
    _, scale = _config(causal, profile)
    pairs, skipped = read_pairs(tuebingen_pairs)
    if skipped:
        log.info("Skipping %d multivariate pairs: %s", len(skipped), ", ".join(skipped))
    rng = np.random.default_rng(seed)
    prepared = []
    for p in pairs:
        n = len(p.a)
        keep = np.sort(rng.choice(n, scale.max_points, replace=False)) if n > scale.max_points else np.arange(n)
        prepared.append(
            {
                "pair_id": p.pair_id,
                "a": standardise(p.a[keep], f"pair{p.pair_id} column 1"),
                "b": standardise(p.b[keep], f"pair{p.pair_id} column 2"),
                "a_causes_b": p.a_causes_b,
                "weight": p.weight,
                "n_original": n,
            }
        )
    return prepared


def synthetic_statistics(real: np.ndarray, fakes: np.ndarray, c2st: C2STParams, seed: int) -> dict[str, list[ts.TestResult]]:
    """KNN, NN and MMD statistics of each synthetic dataset ``fakes[g, k]`` against its real pair ``real[g]``.

    ``real`` is (G, n, d), ``fakes`` (G, K, n, d); results are listed g-major. The MMD kernel width is
    the median heuristic of the real pair, shared by its K synthetic datasets (both directions) so
    that their statistics are comparable.
    """
    groups, k = fakes.shape[:2]
    flat_real, flat_fake = np.repeat(real, k, axis=0), fakes.reshape(groups * k, *fakes.shape[2:])
    rng = np.random.default_rng(seed)
    widths = np.repeat([ts.median_bandwidth(r, rng) for r in real], k)
    knn = [ts.c2st(flat_real[j], flat_fake[j], ts.knn_classifier, c2st.test_fraction, seed + j) for j in range(groups * k)]
    nn = ts.c2st_nn_batched(flat_real, flat_fake, c2st.nn_hidden, c2st.nn_epochs, c2st.nn_lr, c2st.test_fraction, seed)
    mmd = [ts.mmd_linear(flat_real[j], flat_fake[j], seed + j, bandwidth=widths[j]) for j in range(groups * k)]
    return {"knn": knn, "nn": nn, "mmd": mmd}


def size_groups(pairs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Pairs grouped by their number of points: a group trains as one stacked model with exact epochs."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for p in pairs:
        groups.setdefault(len(p["a"]), []).append(p)
    return dict(sorted(groups.items(), reverse=True))


def _group_c2st(
    n: int, group: list[dict[str, Any]], gan: CGANConfig, tests: C2STParams, e: int, seed: int, dev: torch.device, figure_pairs: list[int], progress: bool
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """One size group: E CGANs per direction and pair trained as one stacked model, then tested.

    Everything random is seeded from ``seed`` and ``n`` alone, so groups give the same results
    whichever process runs them and in whatever order.
    """
    torch.set_num_threads(1)  # tiny matmuls: intra-op threading costs more than it saves (2.6x slower with 2)
    with threadpool_limits(1):
        group_seed = seed * 100_003 + n
        a = torch.as_tensor(np.stack([p["a"] for p in group]), dtype=torch.float32)[:, None, :, None].expand(-1, e, -1, -1)
        b = torch.as_tensor(np.stack([p["b"] for p in group]), dtype=torch.float32)[:, None, :, None].expand(-1, e, -1, -1)
        # members of pair i: [i, 0:E] learn a → b, [i, E:2E] learn b → a
        cond = torch.cat([a, b], dim=1).reshape(-1, n, 1).to(dev)
        target = torch.cat([b, a], dim=1).reshape(-1, n, 1).to(dev)
        ensemble = train_cgan_ensemble(cond, target, gan, group_seed, progress=progress)
        fake = ensemble.sample(cond, group_seed + 1).cpu().numpy().reshape(len(group), 2 * e, n)
        real = np.stack([np.column_stack([p["a"], p["b"]]) for p in group])  # (G, n, 2)
        joint = np.empty((len(group), 2 * e, n, 2))  # synthetic datasets: (a, ĝ(a, z)) then (ĝ(b, z), b)
        joint[:, :e, :, 0], joint[:, :e, :, 1] = real[:, None, :, 0], fake[:, :e]
        joint[:, e:, :, 0], joint[:, e:, :, 1] = fake[:, e:], real[:, None, :, 1]
        stats = synthetic_statistics(real, joint, tests, group_seed)
    rows = []
    for test, results in stats.items():
        for k, res in enumerate(results):
            i, m = divmod(k, 2 * e)
            direction = "a->b" if m < e else "b->a"
            rows.append({"pair_id": group[i]["pair_id"], "direction": direction, "member": m % e, "test": test, **res.as_dict()})
    samples = {p["pair_id"]: {"a": p["a"], "b": p["b"], "fake_b": fake[i, 0], "fake_a": fake[i, e]} for i, p in enumerate(group) if int(p["pair_id"]) in figure_pairs}
    return rows, samples


def cgan_c2st(
    pairs: list[dict[str, Any]], causal: dict[str, Any], c2st: dict[str, Any], profile: str, seed: int, device: str
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Train E CGANs per direction and pair, and test each one's synthetic data against the real pair.

    Every pair of the same size joins one stacked model: for each pair, E members learn a → b and E
    members b → a, so the whole group costs one training loop. Groups are independent and run in
    ``causal.<profile>.workers`` processes (largest first). Returns one row per (pair, direction,
    member, test), the first members' samples of the ``figure_pairs``, and the wall time.
    """
    cfg, scale = _config(causal, profile)
    tests = C2STParams.model_validate(c2st)
    gan = CGANConfig(**cfg.cgan.model_dump(), hidden=scale.hidden, epochs=scale.epochs, batch_size=scale.batch_size)
    dev = resolve_device(device)
    seed_everything(seed)
    workers = 1 if dev.type != "cpu" else scale.workers  # one GPU: one process
    groups = size_groups(pairs)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    jobs = (delayed(_group_c2st)(n, g, gan, tests, scale.ensemble_size, seed, dev, cfg.figure_pairs, workers == 1) for n, g in groups.items())
    rows, samples = [], {}
    done = Parallel(n_jobs=workers, return_as="generator")(jobs)
    for group_rows, group_samples in tqdm(done, total=len(groups), desc="CGAN-C2ST (pairs grouped by size)", unit="group"):
        rows += group_rows
        samples.update(group_samples)
    torch.set_num_threads(threads)
    return pd.DataFrame(rows), samples, {"cgan_c2st": time.perf_counter() - start}


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


def baselines(pairs: list[dict[str, Any]], causal: dict[str, Any], profile: str, seed: int) -> tuple[pd.DataFrame, dict[str, float]]:
    """cdt's pairwise methods on the same prepared pairs: score > 0 means A → B."""
    from cdt.causality.pairwise import CDS, IGCI, RECI

    cfg, scale = _config(causal, profile)
    methods = {
        "anm": lambda a, b, s: anm_hsic_score(a, b, scale.anm_fit_points, s),
        "igci": lambda a, b, s: IGCI().predict_proba((a, b)),
        "reci": lambda a, b, s: RECI().predict_proba((a, b)),
        "cds": lambda a, b, s: CDS().predict_proba((a, b)),
    }
    rows, seconds = [], {}
    with threadpool_limits(1):  # small dense algebra: BLAS threads only contend (ANM was 20x slower with 2)
        for name in cfg.baselines:
            start = time.perf_counter()
            for p in tqdm(pairs, desc=BASELINE_NAMES[name], unit="pair"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # GP convergence and log(0) warnings on discretised pairs
                    score = float(methods[name](p["a"], p["b"], _pair_seed(seed, p["pair_id"])))
                if not np.isfinite(score):  # e.g. IGCI's entropy estimate on heavily tied values
                    log.warning("%s gives a non-finite score on pair%s: counted as a tie", BASELINE_NAMES[name], p["pair_id"])
                    score = 0.0
                rows.append({"pair_id": p["pair_id"], "method": name, "score": score})
            seconds[name] = time.perf_counter() - start
    return pd.DataFrame(rows, columns=["pair_id", "method", "score"]), seconds


def _decide(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """+1: A → B (forward statistic lower), −1: B → A, 0: tie (counts as half right)."""
    return np.sign(backward - forward).astype(int)


def predictions(pairs: list[dict[str, Any]], statistics: pd.DataFrame, baseline_scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, method, test, variant): the decision and whether it is right."""
    truth = pd.DataFrame([{k: p[k] for k in ("pair_id", "a_causes_b", "weight", "n_original")} for p in pairs])
    single = statistics[statistics.member == 0].groupby(["pair_id", "test", "direction"]).statistic.min()
    best = statistics.groupby(["pair_id", "test", "direction"]).statistic.min()
    frames = []
    for variant, stat in (("single", single), ("ensemble", best)):
        wide = stat.unstack("direction").reset_index()
        frames.append(
            pd.DataFrame(
                {
                    "pair_id": wide.pair_id,
                    "method": CGAN,
                    "c2st": wide.test,
                    "variant": variant,
                    "statistic_a_to_b": wide["a->b"],
                    "statistic_b_to_a": wide["b->a"],
                    "decision": _decide(wide["a->b"].to_numpy(), wide["b->a"].to_numpy()),
                }
            )
        )
    frames.append(
        pd.DataFrame(
            {
                "pair_id": baseline_scores.pair_id,
                "method": baseline_scores.method.map(BASELINE_NAMES),
                "c2st": "",
                "variant": "",
                "statistic_a_to_b": -baseline_scores.score,
                "statistic_b_to_a": baseline_scores.score,
                "decision": np.sign(baseline_scores.score.to_numpy()).astype(int),
            }
        )
    )
    table = pd.concat(frames, ignore_index=True).merge(truth, on="pair_id", validate="many_to_one")
    truth_sign = np.where(table.a_causes_b, 1, -1)
    table["correct"] = np.where(table.decision == 0, 0.5, (table.decision == truth_sign).astype(float))
    return table


def accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Unweighted (thesis) and weighted accuracy per (method, test, variant), ties counting half."""
    grouped = table.assign(wc=table.correct * table.weight).groupby(["method", "c2st", "variant"], sort=False)
    out = grouped.agg(accuracy=("correct", "mean"), n_pairs=("correct", "size"), ties=("decision", lambda d: int((d == 0).sum())))
    out["weighted_accuracy"] = grouped.wc.sum() / grouped.weight.sum()
    return out.reset_index()


def metric_key(method: str, c2st: str, variant: str) -> str:
    """Dotted key of an accuracy in ``causal_metrics`` (what reference/thesis_numbers.yaml cites)."""
    if method == CGAN:
        return f"{c2st}.{variant}"
    return {v: k for k, v in BASELINE_NAMES.items()}[method]


def thesis_accuracy(reference: dict[str, Any]) -> dict[str, float]:
    """Table 5.1 of the thesis from the shared reference file, by our metric key (fractions)."""
    (table,) = [t for t in reference["tables"] if t["id"] == "5.1"]
    prefix = "causal:accuracy."
    return {
        row["ours"][0].removeprefix(prefix): row["thesis"][0]
        for row in table["rows"]
        if row["ours"][0].startswith(prefix) and row["thesis"][0] is not None
    }


def summarise(
    pairs: list[dict[str, Any]],
    statistics: pd.DataFrame,
    baseline_scores: pd.DataFrame,
    cgan_seconds: dict[str, float],
    baseline_seconds: dict[str, float],
    reference: dict[str, Any],
    causal: dict[str, Any],
    profile: str,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """Per-pair predictions, metrics and the Table 5.1-shaped accuracy table (ours beside the thesis)."""
    cfg, scale = _config(causal, profile)
    table = predictions(pairs, statistics, baseline_scores)
    acc = accuracy(table)
    weights = np.array([p["weight"] for p in pairs])
    weighted = bool(np.ptp(weights) > 0)  # cdt's copy has none: every weight is 1
    keys = [metric_key(*k) for k in zip(acc.method, acc.c2st, acc.variant, strict=True)]
    thesis = thesis_accuracy(reference)
    report = pd.DataFrame(
        {
            "method": acc.method,
            "c2st": acc.c2st.str.upper(),
            "variant": acc.variant,
            "accuracy_ours": (100 * acc.accuracy).round(1),
            "accuracy_thesis": [round(100 * thesis[k], 1) if k in thesis else np.nan for k in keys],
            "weighted_accuracy_ours": (100 * acc.weighted_accuracy).round(1) if weighted else np.nan,
            "ties": acc.ties,
            "n_pairs": acc.n_pairs,
        }
    )

    def nested(values: pd.Series) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for k, v in zip(keys, values, strict=True):
            *parents, leaf = k.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = float(v)
        return tree

    metrics = {
        "accuracy": nested(acc.accuracy),
        "n_pairs": len(pairs),
        "n_subsampled": int(sum(p["n_original"] > scale.max_points for p in pairs)),
        "max_points": scale.max_points,
        "ensemble_size": scale.ensemble_size,
        "weights_available": int(weighted),
        "seconds": {**cgan_seconds, **baseline_seconds},
    }
    if weighted:
        metrics["weighted_accuracy"] = nested(acc.weighted_accuracy)
    names = [CGAN, *BASELINE_NAMES.values(), "knn", "nn", "mmd", "single", "ensemble", ""]
    order = {name.lower(): i for i, name in enumerate(names)}  # rows in the order of Table 5.1
    report = report.sort_values(["method", "c2st", "variant"], key=lambda col: col.str.lower().map(order), kind="stable")
    report = report.reset_index(drop=True)
    log.info("Table 5.1 (ours vs thesis):\n%s", report.to_string(index=False))
    return table, metrics, report


def plot_pairs(samples: dict[str, dict[str, np.ndarray]], statistics: pd.DataFrame, causal: dict[str, Any], pairs: list[dict[str, Any]]) -> Figure:
    """Fig. 5-15: real pairs (grey) against one CGAN's samples in each direction, with its C2ST-KNN accuracy."""
    cfg = CausalParams.model_validate(causal)
    truth = {p["pair_id"]: p["a_causes_b"] for p in pairs}
    ids = [f"{i:04d}" for i in cfg.figure_pairs]
    missing = [i for i in ids if i not in samples]
    if missing:
        raise ValueError(f"params.yaml: causal.figure_pairs lists pairs {missing} that are not among the univariate pairs.")
    knn = statistics[(statistics.test == "knn") & (statistics.member == 0)].set_index(["pair_id", "direction"]).statistic
    fig, axes = new_figure(len(ids), 2, size=2.6)
    for row, pid in zip(axes, ids, strict=True):
        s = samples[pid]
        for ax, direction, (x, y) in zip(row, ("a->b", "b->a"), ((s["a"], s["fake_b"]), (s["fake_a"], s["b"])), strict=True):
            ax.scatter(s["a"], s["b"], s=3, c="0.6", label="real")
            ax.scatter(x, y, s=3, c="tab:red" if direction == "a->b" else "tab:blue", alpha=0.6, label="generated")
            causal_dir = "a->b" if truth[pid] else "b->a"
            mark = " (true)" if direction == causal_dir else ""
            ax.set_title(f"pair{pid} {direction.replace('->', '→')}{mark}\nC2ST-KNN acc {knn[(pid, direction)]:.2f}", fontsize=8)
            ax.set(xlabel="column 1", ylabel="column 2")
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, markerscale=2)
    return fig
