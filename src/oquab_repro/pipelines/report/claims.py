"""The scorecard's logic: spread over seeds, and whether each thesis claim holds beyond it.

A claim (reference/claims.yaml) is a list of comparisons between metrics, each checked by one test
of :data:`TESTS`. Per-seed results come from ``per_seed.csv`` tables (columns ``seed, stage, key,
value``; see :func:`seed_table`). The verdict rule is deliberately simple and stated in the report:
with at least :data:`MIN_SEEDS` seeds a claim *holds* when it holds in every seed, *does not hold*
when it holds in none, and is *mixed* otherwise; with fewer seeds the scorecard reports what this
run shows without concluding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MIN_SEEDS = 3  # fewer seeds than this: spread too uncertain to state a finding
SEED_COLUMNS = ("seed", "stage", "key", "value")


@dataclass(frozen=True)
class Test:
    """One comparison kind: how it holds, and how to print it (``a > b``)."""

    holds: Callable[[Sequence[float], float], bool]
    symbol: str


TESTS: dict[str, Test] = {
    "greater": Test(lambda v, f: v[0] > f * v[1], ">"),
    "at_least": Test(lambda v, f: v[0] >= v[1], "≥"),
    "less": Test(lambda v, f: v[0] < v[1], "<"),
    "at_most": Test(lambda v, f: v[0] <= v[1], "≤"),
    "ordered": Test(lambda v, f: all(a > b for a, b in zip(v, v[1:], strict=False)), ">"),
}


@dataclass(frozen=True)
class Spread:
    """A metric over seeds."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float


def split_ref(ref: str) -> tuple[str, str]:
    """``stage:dotted.key`` → (stage, dotted.key)."""
    stage, _, key = ref.partition(":")
    return stage, key


def seed_table(partitions: Mapping[str, Callable[[], pd.DataFrame]]) -> pd.DataFrame:
    """Every ``<dir>/per_seed.csv`` under data/08_reporting, stacked (empty when there is none).

    The contract for whatever runs seeds (a seed-sweep stage, or a stage running several seeds):
    write ``data/08_reporting/<dir>/per_seed.csv`` with one row per (seed, stage, key) and the
    metric's value, keys as in the stage's metrics.json (dotted). Other CSVs are never loaded.
    """
    frames = []
    for name, load in sorted(partitions.items()):
        if name.rsplit("/", 1)[-1] != "per_seed":
            continue
        frame = load()
        missing = set(SEED_COLUMNS) - set(frame.columns)
        if missing:
            raise ValueError(
                f"data/08_reporting/{name}.csv lacks columns {sorted(missing)}: write"
                f" {list(SEED_COLUMNS)}"
            )
        frames.append(frame[list(SEED_COLUMNS)])
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=float if c == "value" else object) for c in SEED_COLUMNS}
        )
    table = pd.concat(frames, ignore_index=True)
    table["value"] = pd.to_numeric(table["value"], errors="coerce")
    return table.dropna(subset=["value"])


def per_seed(seeds: pd.DataFrame, ref: str) -> dict[Any, float]:
    """seed → value of one metric ref."""
    stage, key = split_ref(ref)
    rows = seeds[(seeds["stage"] == stage) & (seeds["key"] == key)]
    return dict(zip(rows["seed"], rows["value"].astype(float), strict=True))


def spread(seeds: pd.DataFrame, ref: str) -> Spread | None:
    """Mean, sd (ddof 1), min and max over seeds; None with fewer than two seeds."""
    values = np.array(list(per_seed(seeds, ref).values()), dtype=float)
    if len(values) < 2:
        return None
    return Spread(
        len(values),
        float(values.mean()),
        float(values.std(ddof=1)),
        float(values.min()),
        float(values.max()),
    )


def _holds(test: Test, values: Sequence[float | None], factor: float) -> bool | None:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None
    return bool(test.holds(values, factor))


def claim_holds(claim: Mapping[str, Any], value: Callable[[str], float | None]) -> bool | None:
    """Whether every check of a claim holds for one set of values (None if one is missing)."""
    test = TESTS[claim["test"]]
    results = [
        _holds(test, [value(r) for r in check], float(claim.get("factor", 1.0)))
        for check in claim["checks"]
    ]
    return None if None in results else all(results)


def seed_verdict(claim: Mapping[str, Any], seeds: pd.DataFrame) -> tuple[int, int]:
    """(seeds where the claim holds, seeds with every metric of the claim)."""
    refs = [r for check in claim["checks"] for r in check]
    by_ref = {r: per_seed(seeds, r) for r in refs}
    complete = set.intersection(*(set(v) for v in by_ref.values())) if refs else set()
    held = sum(bool(claim_holds(claim, lambda r, s=s: by_ref[r][s])) for s in complete)
    return held, len(complete)


def verdict(holds_here: bool | None, held: int, n_seeds: int) -> tuple[str, str]:
    """(status, words): status is one of holds / fails / mixed / unknown / missing."""
    if n_seeds >= MIN_SEEDS:
        if held == n_seeds:
            return "holds", f"holds in all {n_seeds} seeds"
        if held == 0:
            return "fails", f"does not hold in any of {n_seeds} seeds"
        return "mixed", f"mixed: holds in {held} of {n_seeds} seeds"
    if n_seeds > 1:
        return (
            "unknown",
            f"{n_seeds} seeds, fewer than {MIN_SEEDS}: no verdict (holds in {held} of {n_seeds})",
        )
    if holds_here is None:
        return "missing", "not measured on this profile"
    return (
        "unknown",
        f"1 seed: spread unknown ({'holds' if holds_here else 'does not hold'} in this run)",
    )
