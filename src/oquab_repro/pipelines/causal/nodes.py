"""Kedro nodes of the causal stage: CGAN-C2ST cause-effect discovery on the Tübingen pairs (§5.4.2).

For a pair (A, B) we fit conditional GANs in both directions, g(a, z) → b and g(b, z) → a, and ask
a two-sample test how far each synthetic dataset, (a, ĝ(a, z)) or (ĝ(b, z), b), is from the real
one: the direction whose CGAN imitates the data better is declared causal. As in the original code
the discrepancy of a C2ST is |accuracy − 0.5| (of the MMD, |MMD|) and an ensemble keeps, per
direction, its smallest discrepancy. CGAN-C2ST is the ensemble's first member, Ensemble CGAN-C2ST
all E. Every baseline sees exactly the same prepared pairs. Accuracy is weighted by the official
pair weights (the thesis' definition), with the unweighted accuracy and a bootstrap CI beside it.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from matplotlib.figure import Figure
from scipy.spatial.distance import cdist
from scipy.stats import bootstrap
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from oquab_repro.lib import distributed
from oquab_repro.lib.ensembles import CGANConfig
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.lib.tuebingen import id_ranges, official_pair_ids, read_pairs
from oquab_repro.lib.unit_cache import UnitCache
from oquab_repro.params import C2STParams, CausalParams, CausalScale, cap, with_profile
from oquab_repro.pipelines.causal.methods import METHODS
from oquab_repro.pipelines.causal.units import (
    DIRECTIONS,
    TESTS,
    UnitSettings,
    inputs_of,
    run_units,
    unit_seed,
)

log = logging.getLogger(__name__)

CGAN = "CGAN-C2ST"
DISCREPANCY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "knn": lambda s: np.abs(s - 0.5),  # a C2ST accuracy: 0.5 = indistinguishable
    "nn": lambda s: np.abs(s - 0.5),
    "mmd": np.abs,  # an MMD² estimate: 0 = indistinguishable
}


def _config(
    causal: dict[str, Any],
    profile: str,
    ensemble_cap: int | None = None,
    epochs_cap: int | None = None,
) -> tuple[CausalParams, CausalScale]:
    """The section and its profile's scale under ``caps.ensemble_size`` and ``caps.epochs`` (the
    ensemble curve stops at the capped ensemble); without caps, the profile as it is."""
    cfg, scale = with_profile(CausalParams, causal, profile)
    if ensemble_cap is None and epochs_cap is None:
        return cfg, scale
    size = cap(scale.ensemble_size, ensemble_cap)
    curve = [k for k in scale.ensemble_curve if k <= size]
    update = {"ensemble_size": size, "epochs": cap(scale.epochs, epochs_cap)}
    return cfg, scale.model_copy(update={**update, "ensemble_curve": curve or [size]})


def standardise(values: np.ndarray, name: str) -> np.ndarray:
    std = values.std()
    if not std > 0:
        raise ValueError(f"{name} is constant: a cause-effect pair needs two varying columns.")
    return (values - values.mean()) / std


def remove_outliers(
    data: np.ndarray, fraction: float, anchors: int, rng: np.random.Generator
) -> np.ndarray:
    """Rows kept after dropping ⌊fraction·n⌋ points farthest from their nearest of
    ``anchors`` random points.

    As the original code: anchors are random rows, distances Euclidean on the raw values.
    """
    n = len(data)
    nearest = cdist(data, data[rng.choice(n, min(anchors, n), replace=False)]).min(axis=1)
    return np.sort(np.argsort(nearest, kind="stable")[: n - int(np.floor(n * fraction))])


def prepare_pairs(
    tuebingen_pairs: dict[str, Any], causal: dict[str, Any], profile: str, seed: int
) -> list[dict[str, Any]]:
    """Bivariate pairs as every method sees them: outliers out, ≤
    ``max_points`` points, standardised.

    Each pair's draws are seeded by (seed, pair id), so a pair is prepared the same way whatever
    other pairs are present.
    """
    cfg, scale = _config(causal, profile)
    pairs, skipped = read_pairs(tuebingen_pairs)
    if skipped:
        log.info("Skipping %d multivariate pairs: %s", len(skipped), ", ".join(skipped))
    prepared = []
    for p in pairs:
        rng = np.random.default_rng(unit_seed(seed, p.pair_id))
        data = np.column_stack([p.a, p.b])
        keep = remove_outliers(
            data, cfg.preprocess.outlier_fraction, cfg.preprocess.outlier_anchors, rng
        )
        if len(keep) > scale.max_points:
            keep = np.sort(rng.choice(keep, scale.max_points, replace=False))
        prepared.append(
            {
                "pair_id": p.pair_id,
                "a": standardise(p.a[keep], f"pair{p.pair_id} column 1"),
                "b": standardise(p.b[keep], f"pair{p.pair_id} column 2"),
                "a_causes_b": p.a_causes_b,
                "weight": p.weight,
                "n_original": len(p.a),
            }
        )
    return prepared


def unit_settings(
    causal: dict[str, Any],
    c2st: dict[str, Any],
    profile: str,
    seed: int,
    ensemble_cap: int | None = None,
    epochs_cap: int | None = None,
) -> UnitSettings:
    cfg, scale = _config(causal, profile, ensemble_cap, epochs_cap)
    gan = CGANConfig(
        **cfg.cgan.model_dump(),
        hidden=scale.hidden,
        epochs=scale.epochs,
        batch_size=scale.batch_size,
    )
    return UnitSettings(gan, C2STParams.model_validate(c2st), scale.ensemble_size, seed)


def _statistics_rows(pair_id: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for t, test in enumerate(TESTS):
        for d, direction in enumerate(DIRECTIONS):
            for m in range(result["statistic"].shape[2]):
                rows.append(
                    {
                        "pair_id": pair_id,
                        "direction": direction,
                        "member": m,
                        "test": test,
                        **{
                            f: float(result[f][t, d, m]) for f in ("statistic", "p_value", "n_test")
                        },
                    }
                )
    return rows


def shares(pairs: list[dict[str, Any]], workers: int) -> list[list[dict[str, Any]]]:
    """Pairs dealt by size, largest first, round-robin into ``workers`` shares of similar cost."""
    ordered = sorted(pairs, key=lambda p: (-len(p["a"]), p["pair_id"]))
    return [share for w in range(workers) if (share := ordered[w::workers])]


def _train_share(
    pairs: list[dict[str, Any]],
    settings: UnitSettings,
    dev: Any,
    scale: CausalScale,
    save: Callable[[dict[str, Any], dict[str, Any]], None],
) -> dict[str, dict[str, Any]]:
    """This rank's units, dealt into ``workers`` processes (the workers of this machine shared by
    its ranks), each unit saved to the cache as soon as it is done."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    workers = (
        1 if dev.type != "cpu" else max(1, scale.workers // local_ranks)
    )  # one GPU: one process
    work = shares(pairs, workers)
    jobs = (
        delayed(run_units)(share, settings, dev, scale.pack_members, workers == 1, save)
        for share in work
    )
    results: dict[str, dict[str, Any]] = {}
    for done in tqdm(
        Parallel(n_jobs=workers, return_as="generator")(jobs),
        total=len(work),
        desc="CGAN-C2ST shares",
        unit="share",
    ):
        results.update(done)
    return results


def cgan_c2st(
    pairs: list[dict[str, Any]],
    causal: dict[str, Any],
    c2st: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    unit_cache: UnitCache,
    ensemble_cap: int | None = None,
    epochs_cap: int | None = None,
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """E CGANs per direction and pair, each tested against the real pair; resumable unit by unit.

    Units (pairs) already in ``unit_cache`` under the same settings, code and data are read back;
    the others are shared among the torch.distributed ranks (balanced by points) and, on each
    rank, dealt into ``causal.<profile>.workers`` shares of similar cost, each trained in its own
    process (packed by size into stacked models), each unit saved as soon as it is done; every
    rank then holds every result (rank 0 writes the outputs). Returns one row per (pair,
    direction, member, test), member 0's samples of every pair, and wall time and unit counts.
    """
    cfg, scale = _config(causal, profile, ensemble_cap, epochs_cap)
    settings = unit_settings(causal, c2st, profile, seed, ensemble_cap, epochs_cap)
    key, dev = settings.key(), resolve_device(device)
    seed_everything(seed)
    results = distributed.broadcast(  # rank 0's cache decides, so every rank shares the same units
        {p["pair_id"]: unit_cache.load(key, p["pair_id"], inputs_of(p)) for p in pairs}
        if distributed.is_main()
        else None
    )
    pending = [p for p in pairs if results[p["pair_id"]] is None]
    log.info(
        "CGAN-C2ST: %d of %d units cached in %s/%s, %d to train",
        len(pairs) - len(pending),
        len(pairs),
        unit_cache.folder,
        key,
        len(pending),
    )

    def save(pair: dict[str, Any], result: dict[str, Any]) -> None:
        unit_cache.save(key, pair["pair_id"], inputs_of(pair), result)

    start = time.perf_counter()
    mine = distributed.shard(pending, costs=[len(p["a"]) for p in pending])
    results.update(_train_share(mine, settings, dev, scale, save))
    trained = {}
    for part in distributed.gather({p["pair_id"]: results[p["pair_id"]] for p in mine}):
        trained.update(part)
    results.update(trained)
    if distributed.is_main() and distributed.world().size > 1:
        for p in pending:  # units of ranks on other machines, whose caches rank 0 cannot see
            if unit_cache.load(key, p["pair_id"], inputs_of(p)) is None:
                save(p, results[p["pair_id"]])
    rows = [row for p in pairs for row in _statistics_rows(p["pair_id"], results[p["pair_id"]])]
    samples = {
        p["pair_id"]: {
            "a": p["a"],
            "b": p["b"],
            "fake_b": results[p["pair_id"]]["fake_b"],
            "fake_a": results[p["pair_id"]]["fake_a"],
        }
        for p in pairs
    }
    info = {
        "cgan_c2st": time.perf_counter() - start,
        "units_trained": len(pending),
        "units_cached": len(pairs) - len(pending),
    }
    return pd.DataFrame(rows), samples, info


def _baseline(
    pairs: list[dict[str, Any]], cfg: CausalParams, scale: CausalScale, seed: int, name: str
) -> tuple[list[dict[str, Any]], float]:
    """One method's score on every pair (its own seeds: no state shared with other methods) and
    its wall time, training included."""
    start, rows = time.perf_counter(), []
    score_pair = METHODS[name].factory(cfg, scale, seed)
    for p in tqdm(pairs, desc=METHODS[name].label, unit="pair"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GP convergence and log(0) warnings on discrete pairs
            score = float(score_pair(p["a"], p["b"], unit_seed(seed, p["pair_id"])))
        if not np.isfinite(score):  # e.g. IGCI's entropy estimate on heavily tied values
            log.warning(
                "%s gives a non-finite score on pair%s: counted as a tie",
                METHODS[name].label,
                p["pair_id"],
            )
            score = 0.0
        rows.append({"pair_id": p["pair_id"], "method": name, "score": score})
    return rows, time.perf_counter() - start


def baselines(
    pairs: list[dict[str, Any]], causal: dict[str, Any], profile: str, seed: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The ``causal.baselines`` of :data:`METHODS` on the same prepared
    pairs: score > 0 means A → B.

    A learned method's training (on synthetic pairs) counts in its wall time. The methods are
    shared among the torch.distributed ranks (every rank gets every score).
    """
    cfg, scale = _config(causal, profile)
    # small dense algebra: BLAS threads only contend (ANM was 20x slower with 2)
    with threadpool_limits(1):
        done = distributed.map_units(partial(_baseline, pairs, cfg, scale, seed), cfg.baselines)
    rows = [row for method_rows, _ in done for row in method_rows]
    seconds = {name: sec for name, (_, sec) in zip(cfg.baselines, done, strict=True)}
    return pd.DataFrame(rows, columns=["pair_id", "method", "score"]), seconds


def _decide(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """+1: A → B (forward discrepancy lower), −1: B → A, 0: tie (counts as half right)."""
    return np.sign(backward - forward).astype(int)


def ensemble_discrepancy(statistics: pd.DataFrame, members: int) -> pd.Series:
    """Per (pair, test, direction), the smallest discrepancy among the first ``members`` CGANs."""
    first = statistics[statistics.member < members]
    disc = np.concatenate(
        [DISCREPANCY[t](g.statistic.to_numpy()) for t, g in first.groupby("test", sort=False)]
    )
    ordered = pd.concat([g for _, g in first.groupby("test", sort=False)])
    return (
        ordered.assign(discrepancy=disc).groupby(["pair_id", "test", "direction"]).discrepancy.min()
    )


def cgan_decisions(statistics: pd.DataFrame, variants: dict[str, int]) -> pd.DataFrame:
    """One row per (pair, test, variant): the two directions' discrepancies and the decision."""
    frames = []
    for variant, members in variants.items():
        wide = ensemble_discrepancy(statistics, members).unstack("direction").reset_index()
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
    return pd.concat(frames, ignore_index=True)


def predictions(
    pairs: list[dict[str, Any]],
    statistics: pd.DataFrame,
    baseline_scores: pd.DataFrame,
    ensemble_size: int,
    curve: list[int] = (),
) -> pd.DataFrame:
    """One row per (pair, method, test, variant): the decision and whether it is right.

    Variants: ``single`` (member 0), ``ensemble`` (all E) and ``e<k>`` (the first k members) for
    each size of the ensemble curve.
    """
    truth = pd.DataFrame(
        [{k: p[k] for k in ("pair_id", "a_causes_b", "weight", "n_original")} for p in pairs]
    )
    variants = {"single": 1, "ensemble": ensemble_size, **{f"e{k}": k for k in curve}}
    baseline = pd.DataFrame(
        {
            "pair_id": baseline_scores.pair_id,
            "method": baseline_scores.method.map(lambda m: METHODS[m].label),
            "c2st": "",
            "variant": "",
            "statistic_a_to_b": -baseline_scores.score,
            "statistic_b_to_a": baseline_scores.score,
            "decision": np.sign(baseline_scores.score.to_numpy()).astype(int),
        }
    )
    table = pd.concat([cgan_decisions(statistics, variants), baseline], ignore_index=True).merge(
        truth, on="pair_id", validate="many_to_one"
    )
    truth_sign = np.where(table.a_causes_b, 1, -1)
    table["correct"] = np.where(
        table.decision == 0, 0.5, (table.decision == truth_sign).astype(float)
    )
    return table


def weighted_mean(correct: np.ndarray, weight: np.ndarray, axis: int = -1) -> np.ndarray:
    return (correct * weight).sum(axis=axis) / weight.sum(axis=axis)


def accuracy(
    table: pd.DataFrame, samples: int = 2000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Weighted (thesis) and unweighted accuracy per (method, test, variant), ties counting half.

    The CI is a percentile bootstrap of the weighted accuracy over pairs (pairs resampled with
    their weights), from ``samples`` resamples at confidence ``level``. ``accuracy_original_ties``
    applies the original code's tie rule instead (a tie answers A → B, column 1 causes): on the
    official orientation, where ~73 % of the weight is cause-first, that rule rewards ties.
    """
    rows = []
    for (method, c2st, variant), g in table.groupby(["method", "c2st", "variant"], sort=False):
        correct, weight = g.correct.to_numpy(), g.weight.to_numpy()
        tie_first = np.where(g.decision == 0, g.a_causes_b.astype(float), correct)
        ci = bootstrap(
            (correct, weight),
            weighted_mean,
            paired=True,
            vectorized=True,
            n_resamples=samples,
            confidence_level=level,
            method="percentile",
            random_state=seed,
        ).confidence_interval
        rows.append(
            {
                "method": method,
                "c2st": c2st,
                "variant": variant,
                "weighted_accuracy": weighted_mean(correct, weight),
                "ci_low": ci.low,
                "ci_high": ci.high,
                "accuracy": correct.mean(),
                "accuracy_original_ties": weighted_mean(tie_first, weight),
                "n_pairs": len(g),
                "ties": int((g.decision == 0).sum()),
            }
        )
    return pd.DataFrame(rows)


def metric_key(method: str, c2st: str, variant: str) -> str:
    """Dotted key of an accuracy in ``causal_metrics`` (what
    reference/thesis_numbers.yaml cites)."""
    if method == CGAN:
        return f"{c2st}.{variant}"
    return {m.label: k for k, m in METHODS.items()}[method]


def thesis_accuracy(reference: dict[str, Any]) -> dict[str, float]:
    """Table 5.1 of the thesis from the shared reference file, by our metric key (fractions)."""
    (table,) = [t for t in reference["tables"] if t["id"] == "5.1"]
    prefix = "causal:accuracy."
    return {
        row["ours"][0].removeprefix(prefix): row["thesis"][0]
        for row in table["rows"]
        if row["ours"][0].startswith(prefix) and row["thesis"][0] is not None
    }


def _nested(items: dict[str, float]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for k, v in items.items():
        *parents, leaf = k.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = float(v)
    return tree


def _table_order(acc: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order of Table 5.1: CGAN-C2ST by test and variant, then the baselines."""
    names = [CGAN, *(m.label for m in METHODS.values()), *TESTS, "single", "ensemble", ""]
    order = {name.lower(): i for i, name in enumerate(names)}
    return acc.sort_values(
        ["method", "c2st", "variant"], key=lambda col: col.str.lower().map(order), kind="stable"
    ).reset_index(drop=True)


CURVE_COLUMNS = (
    *("c2st", "members", "weighted_accuracy", "ci_low", "ci_high"),
    *("accuracy", "accuracy_original_ties", "ties"),
)


def _ensemble_curve(acc: pd.DataFrame, scale: CausalScale) -> pd.DataFrame:
    """CGAN-C2ST accuracy against the ensemble size E (``single`` is E = 1, ``ensemble`` the
    largest E, ``e<k>`` the sizes between), one row per (test, E)."""
    aliases = {"single": 1, "ensemble": scale.ensemble_size}
    by_e = acc[acc.method == CGAN].assign(
        members=lambda d: d.variant.map(lambda v: aliases.get(v) or int(v[1:]))
    )
    by_e = by_e[by_e.members.isin(scale.ensemble_curve)].sort_values(["c2st", "members"])
    return by_e[list(CURVE_COLUMNS)].reset_index(drop=True)


def _report_table(main: pd.DataFrame, thesis: dict[str, float]) -> pd.DataFrame:
    """Table 5.1 in percent: ours (weighted, its CI, unweighted) beside the thesis' accuracy."""
    pct = lambda column: (100 * main[column]).round(1)  # noqa: E731
    return pd.DataFrame(
        {
            "method": main.method,
            "c2st": main.c2st.str.upper(),
            "variant": main.variant,
            "key": main.key,
            "weighted_accuracy_ours": pct("weighted_accuracy"),
            "ci_low": pct("ci_low"),
            "ci_high": pct("ci_high"),
            "accuracy_thesis": [
                round(100 * thesis[k], 1) if k in thesis else np.nan for k in main.key
            ],
            "unweighted_accuracy_ours": pct("accuracy"),
            "accuracy_original_ties": pct("accuracy_original_ties"),
            "ties": main.ties,
            "n_pairs": main.n_pairs,
        }
    )


def _accuracy_metrics(main: pd.DataFrame, curve: pd.DataFrame) -> dict[str, Any]:
    """The accuracies of Table 5.1 and of the ensemble curve, nested by metric key."""
    col = lambda c: _nested(dict(zip(main.key, main[c], strict=True)))  # noqa: E731
    by_size = {
        f"{name}_by_ensemble_size": _nested(
            {f"{r.c2st}.e{r.members}": getattr(r, column) for r in curve.itertuples()}
        )
        for name, column in (
            ("accuracy", "weighted_accuracy"),
            ("accuracy_original_ties", "accuracy_original_ties"),
            ("ties", "ties"),
        )
    }
    return {
        "accuracy": col("weighted_accuracy"),
        "unweighted_accuracy": col("accuracy"),
        "accuracy_ci_low": col("ci_low"),
        "accuracy_ci_high": col("ci_high"),
        "accuracy_original_ties": col("accuracy_original_ties"),
        "ties": col("ties"),
        # the minimum over more members hits the accuracy grid's floor (|k/n_te − 0.5| ≤ 1/(2 n_te))
        # in both directions more often: ties grow with E, and the original tie rule answers them
        # "column 1 causes"
        **by_size,
    }


def _pair_metrics(
    pairs: list[dict[str, Any]], cfg: CausalParams, scale: CausalScale
) -> dict[str, Any]:
    """What the pairs were: count, weight, points, how many were
    subsampled, the cause-first prior."""
    kept = 1 - cfg.preprocess.outlier_fraction
    return {
        "orientation_prior": weighted_mean(
            np.array([float(p["a_causes_b"]) for p in pairs]),
            np.array([p["weight"] for p in pairs]),
        ),
        "n_pairs": len(pairs),
        "total_weight": float(sum(p["weight"] for p in pairs)),
        "n_points": int(sum(len(p["a"]) for p in pairs)),
        "n_subsampled": int(sum(p["n_original"] * kept > scale.max_points for p in pairs)),
        "max_points": scale.max_points,
    }


def summarise(
    pairs: list[dict[str, Any]],
    statistics: pd.DataFrame,
    baseline_scores: pd.DataFrame,
    cgan_info: dict[str, float],
    baseline_seconds: dict[str, float],
    reference: dict[str, Any],
    causal: dict[str, Any],
    profile: str,
    seed: int,
    ensemble_cap: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Per-pair predictions, metrics, Table 5.1 (ours beside the thesis), accuracy against E and
    wall times (a timings file for MLflow, kept out of the DVC metrics); ``ensemble_cap``:
    ``caps.ensemble_size``."""
    cfg, scale = _config(causal, profile, ensemble_cap)
    curve = [k for k in scale.ensemble_curve if k not in (1, scale.ensemble_size)]
    table = predictions(pairs, statistics, baseline_scores, scale.ensemble_size, curve)
    acc = accuracy(table, cfg.bootstrap.samples, cfg.bootstrap.level, seed)
    acc["key"] = [metric_key(*k) for k in zip(acc.method, acc.c2st, acc.variant, strict=True)]
    curve_table = _ensemble_curve(acc, scale)
    main = _table_order(acc[~acc.variant.str.match(r"e\d+$")])
    report = _report_table(main, thesis_accuracy(reference))
    metrics = {
        **_accuracy_metrics(main, curve_table),
        **_pair_metrics(pairs, cfg, scale),
        "ensemble_size": scale.ensemble_size,
        "units_trained": int(cgan_info["units_trained"]),
        "units_cached": int(cgan_info["units_cached"]),
    }
    timings = {"cgan_c2st_seconds": cgan_info["cgan_c2st"]}
    timings |= {f"{name}_seconds": sec for name, sec in baseline_seconds.items()}
    log.info("Table 5.1 (weighted accuracy, ours vs thesis):\n%s", report.to_string(index=False))
    return table, metrics, report, curve_table, timings


def plot_pairs(
    samples: dict[str, dict[str, np.ndarray]],
    statistics: pd.DataFrame,
    causal: dict[str, Any],
    pairs: list[dict[str, Any]],
) -> Figure:
    """Fig. 5-15: real pairs (grey) against one CGAN's samples in each direction,
    with its C2ST-KNN accuracy."""
    cfg = CausalParams.model_validate(causal)
    truth = {p["pair_id"]: p["a_causes_b"] for p in pairs}
    ids = [f"{i:04d}" for i in cfg.figure_pairs]
    missing = [i for i in ids if i not in samples]
    if missing:
        valid = id_ranges(official_pair_ids())
        raise ValueError(
            f"params.yaml: causal.figure_pairs lists pairs {missing} that are not among the"
            f" prepared pairs; valid ids: {valid}."
        )
    knn = (
        statistics[(statistics.test == "knn") & (statistics.member == 0)]
        .set_index(["pair_id", "direction"])
        .statistic
    )
    fig, axes = new_figure(len(ids), 2, size=2.6)
    for row, pid in zip(axes, ids, strict=True):
        s = samples[pid]
        for ax, direction, (x, y) in zip(
            row, DIRECTIONS, ((s["a"], s["fake_b"]), (s["fake_a"], s["b"])), strict=True
        ):
            ax.scatter(s["a"], s["b"], s=3, c="0.6", label="real")
            ax.scatter(
                x,
                y,
                s=3,
                c="tab:red" if direction == "a->b" else "tab:blue",
                alpha=0.6,
                label="generated",
            )
            causal_dir = "a->b" if truth[pid] else "b->a"
            mark = " (true)" if direction == causal_dir else ""
            ax.set_title(
                f"pair{pid} {direction.replace('->', '→')}{mark}\nC2ST-KNN acc"
                f" {knn[(pid, direction)]:.2f}",
                fontsize=8,
            )
            ax.set(xlabel="column 1", ylabel="column 2")
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, markerscale=2)
    return fig


def plot_directions(table: pd.DataFrame, pairs: list[dict[str, Any]]) -> Figure:
    """Each pair's discrepancy in its causal direction (x) against its
    anti-causal one (y), per test.

    Rows: the single CGAN and the ensemble. Above the diagonal a decision is right, below wrong, on
    it a tie. A C2ST accuracy on n_te held-out points has a spread of about 1/(2√n_te) under the
    null (0.05 at n = 100, 0.007 at 5,000), so points within that distance of the diagonal are
    decided by the tests' noise rather than by the CGANs: the figure shows how many are.
    """
    points = {p["pair_id"]: len(p["a"]) for p in pairs}
    cgan = table[(table.method == CGAN) & table.variant.isin(["single", "ensemble"])]
    fig, axes = new_figure(2, len(TESTS), size=3.0)
    for row, variant in zip(axes, ("single", "ensemble"), strict=True):
        for ax, test in zip(row, TESTS, strict=True):
            g = cgan[(cgan.variant == variant) & (cgan.c2st == test)]
            causal = np.where(g.a_causes_b, g.statistic_a_to_b, g.statistic_b_to_a)
            anti = np.where(g.a_causes_b, g.statistic_b_to_a, g.statistic_a_to_b)
            dots = ax.scatter(
                causal,
                anti,
                s=10 + 60 * g.weight.to_numpy(),
                c=np.log10(g.pair_id.map(points)),
                cmap="viridis",
                alpha=0.75,
                linewidths=0,
            )
            top = max(float(np.max(causal, initial=0)), float(np.max(anti, initial=0))) or 1.0
            ax.plot([0, top], [0, top], c="0.4", lw=0.8, ls="--")
            right, wrong = int((anti > causal).sum()), int((anti < causal).sum())
            ax.set_title(
                f"{test.upper()} {variant}: {right} right, {wrong} wrong, {len(g) - right - wrong}"
                " ties",
                fontsize=8,
            )
            ax.set(xlabel="causal direction", ylabel="anti-causal direction")
            ax.tick_params(labelsize=6)
    fig.colorbar(dots, ax=axes, label="log10 points per pair", shrink=0.6)
    fig.suptitle(
        "CGAN-C2ST discrepancy per direction (|accuracy − 0.5|, |MMD|); marker area ∝ pair weight",
        fontsize=9,
    )
    return fig
