"""Kedro nodes of the two-sample calibration stage.

Before ranking GANs or causal directions with a test, check it behaves: under P = Q it should
reject about α of the time, and against a Gaussian-vs-Student-t alternative (the example of
Lopez-Paz & Oquab, 2017) its power should grow with the sample size.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from oquab_repro.lib import twosample as ts
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import seed_everything
from oquab_repro.params import C2STParams, TwoSampleParams

TESTS = tuple(ts.TESTS)  # every registered test is calibrated
CONDITIONS = {"null": "type1", "alternative": "power"}


def simulate_trials(c2st: dict[str, Any], params: dict[str, Any], seed: int) -> pd.DataFrame:
    """Every (sample size, repetition, condition, test) trial: statistic, p-value, rejection."""
    cfg, tw = C2STParams.model_validate(c2st), TwoSampleParams.model_validate(params)
    options = ts.TestOptions.from_params(c2st)
    rng = seed_everything(seed)
    torch.set_num_threads(1)  # C2ST-NN's tiny networks: a second thread only spin-waits
    rows = []
    trials = [(n, r) for n in tw.sample_sizes for r in range(tw.repetitions)]
    for n, rep in tqdm(trials, desc="two-sample calibration", unit="trial"):
        x = rng.standard_normal((n, tw.dim))
        samples = {
            "null": rng.standard_normal((n, tw.dim)),
            "alternative": rng.standard_t(tw.student_dof, (n, tw.dim)),
        }
        for condition, y in samples.items():
            for test in TESTS:
                seed_test = int(rng.integers(2**31))
                res = ts.two_sample_test(x, y, method=test, seed=seed_test, options=options)
                rows.append(
                    {
                        "n": n,
                        "rep": rep,
                        "condition": condition,
                        "test": test,
                        **res.as_dict(),
                        "reject": res.rejects(cfg.alpha),
                    }
                )
    return pd.DataFrame(rows)


def summarise_calibration(
    trials: pd.DataFrame, c2st: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, Figure]:
    """Rejection rates per test and sample size: metrics at the largest n, curves, figure."""
    alpha = C2STParams.model_validate(c2st).alpha
    rates = trials.groupby(["condition", "test", "n"])["reject"].mean().unstack("test")[list(TESTS)]
    largest = trials.n.max()
    metrics = {
        CONDITIONS[c]: {t: float(rates.loc[(c, largest), t]) for t in TESTS} for c in CONDITIONS
    }
    metrics["alpha"] = alpha
    metrics["n"] = int(largest)
    type1 = rates.loc["null"].reset_index()
    power = rates.loc["alternative"].reset_index()
    fig, axes = new_figure(1, 2, size=3.4)
    for ax, (table, title) in zip(
        axes[0],
        [(type1, "type-I error (P = Q)"), (power, "power (N(0,1) vs Student-t)")],
        strict=True,
    ):
        for test in TESTS:
            ax.plot(table.n, table[test], marker="o", label=ts.TESTS[test].label)
        ax.axhline(alpha, color="grey", ls="--", lw=1, label=f"α = {alpha}")
        ax.set(
            xscale="log",
            ylim=(-0.02, 1.02),
            xlabel="samples per distribution",
            ylabel="rejection rate",
            title=title,
        )
    axes[0, 1].legend(fontsize=7)
    return metrics, type1, power, fig
