"""Kedro nodes of the report stage: thesis-vs-ours tables, the claims
scorecard, then HTML and Markdown.

Our numbers are read from each stage's ``metrics.json`` through the refs listed in
``reference/thesis_numbers.yaml`` and ``reference/claims.yaml``; nothing is typed in by hand, and
a number a stage does not produce shows as missing rather than as anything else. Where per-seed
results exist (``per_seed.csv``, see :func:`claims.seed_table`), every number comes with its spread
and a claim is stated as holding only when it holds in every seed.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from oquab_repro.lib.provenance import git_commit
from oquab_repro.pipelines.report import claims as claim_logic
from oquab_repro.pipelines.report.claims import MIN_SEEDS, seed_table, split_ref
from oquab_repro.tracking import flatten

TEMPLATES = Path(__file__).parent / "templates"
__all__ = ["compare_with_thesis", "metric_at", "render_report", "score_claims", "seed_table"]


def metric_at(metrics: Mapping[str, Any], ref: str) -> float | None:
    """Our value for ``<stage>:<dotted.key>``, or None when the stage or
    key does not exist (yet)."""
    stage, key = split_ref(ref)
    node: Any = metrics.get(stage)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _check_row(table: Mapping[str, Any], row: Mapping[str, Any], fields: tuple[str, ...]) -> None:
    for field in fields:
        if len(row.get(field) or []) != len(table["columns"]):
            raise ValueError(
                f"thesis_numbers.yaml: table {table['id']} row '{row['label']}' needs one {field}"
                f" entry per column {table['columns']}"
            )


def _cites(table: Mapping[str, Any], row: Mapping[str, Any]) -> list[str | None]:
    """Where each thesis cell of a row is printed: '<printed row> / <printed column>'."""
    if "thesis_cells" in row:
        return list(row["thesis_cells"])
    printed = table.get("thesis_columns", table["columns"])
    return [
        None if row.get("thesis_row") is None else f"{row['thesis_row']} / {c}" for c in printed
    ]


def _ours_columns(
    ref: str | None, metrics: Mapping[str, Any], seeds: pd.DataFrame
) -> dict[str, Any]:
    value = metric_at(metrics, ref) if ref else None
    spread = claim_logic.spread(seeds, ref) if ref else None
    return {
        "ours": value,
        "metric": ref,
        "n_seeds": spread.n if spread else (1 if value is not None else 0),
        "ours_mean": spread.mean if spread else value,
        "ours_sd": spread.sd if spread else None,
        "ours_min": spread.lo if spread else None,
        "ours_max": spread.hi if spread else None,
    }


def compare_with_thesis(
    reference: dict[str, Any],
    profile: str,
    seed_table: pd.DataFrame | None = None,
    **metrics: dict[str, Any],
) -> pd.DataFrame:
    """One row per table cell: thesis table/row/column, where the thesis prints it, its number, ours
    (this run, and mean/sd/min/max over seeds where per-seed results exist) and the difference."""
    seeds = seed_table if seed_table is not None else claim_logic.seed_table({})
    rows = []
    for table in reference["tables"]:
        for kind, entries in (("ours", table["rows"]), ("baseline", table.get("baselines", []))):
            for row in entries:
                _check_row(table, row, ("thesis", "ours") if kind == "ours" else ("thesis",))
                refs = row.get("ours") or [None] * len(table["columns"])
                for column, thesis, cite, ref in zip(
                    table["columns"], row["thesis"], _cites(table, row), refs, strict=True
                ):
                    rows.append(
                        {
                            "table": str(table["id"]),
                            "row": row["label"],
                            "kind": kind,
                            "column": column,
                            "thesis": math.nan if thesis is None else float(thesis),
                            "thesis_cell": cite if thesis is not None else None,
                            **_ours_columns(ref, metrics, seeds),
                            "profile": profile,
                        }
                    )
    frame = pd.DataFrame(rows)
    for column in ("ours", "ours_mean", "ours_sd", "ours_min", "ours_max"):
        frame[column] = frame[column].astype(float)
    frame["delta"] = frame["ours_mean"] - frame["thesis"]
    return frame


def _thesis_cells(reference: Mapping[str, Any]) -> dict[str, tuple[str, float, str, str]]:
    """metric ref → (row label, thesis value, number format, table id), for cells the thesis
    prints; where two tables print the same quantity, the first one is cited."""
    out: dict[str, tuple[str, float, str, str]] = {}
    for table in reference["tables"]:
        for row in table["rows"]:
            for ref, value in zip(row["ours"], row["thesis"], strict=True):
                if ref and value is not None:
                    out.setdefault(
                        ref,
                        (
                            row["label"],
                            float(value),
                            table.get("format", "{:.3g}"),
                            str(table["id"]),
                        ),
                    )
    return out


def _figures(
    check: list[str], symbol: str, value: Callable[[str], str | None], label: Callable[[str], str]
) -> str | None:
    parts = [value(r) for r in check]
    if any(p is None for p in parts):
        return None
    return f" {symbol} ".join(f"{label(r)} {p}" for r, p in zip(check, parts, strict=True))


@dataclass(frozen=True)
class _Figures:
    """How the scorecard writes a metric: its label, format and value in the thesis and here
    (mean ± sd over seeds when a seed table has it, else this run's value)."""

    thesis: dict[str, tuple[str, float, str, str]]
    seeds: pd.DataFrame
    metrics: Mapping[str, Any]

    def fmt(self, ref: str, value: float) -> str:
        return (self.thesis[ref][2] if ref in self.thesis else "{:.3g}").format(value)

    def label(self, ref: str, labels: Mapping[str, str]) -> str:
        return labels.get(ref) or (self.thesis[ref][0] if ref in self.thesis else split_ref(ref)[1])

    def in_thesis(self, ref: str) -> str | None:
        return self.fmt(ref, self.thesis[ref][1]) if ref in self.thesis else None

    def ours(self, ref: str) -> str | None:
        spread = claim_logic.spread(self.seeds, ref)
        if spread is not None:
            return f"{self.fmt(ref, spread.mean)} ± {self.fmt(ref, spread.sd)}"
        value = metric_at(self.metrics, ref)
        return None if value is None else self.fmt(ref, value)


def _claim_symbol(claim: Mapping[str, Any]) -> str:
    """The comparison a claim makes, as printed (``>``, ``≥ 2 ×``...); an unknown test is named."""
    test = claim_logic.TESTS.get(claim["test"])
    if test is None:
        raise ValueError(
            f"claims.yaml: claim '{claim['id']}' has test '{claim['test']}'; "
            f"use one of {sorted(claim_logic.TESTS)}"
        )
    factor = float(claim.get("factor", 1.0))
    return test.symbol if factor == 1.0 else f"{test.symbol} {factor:g} ×"


def _claim_row(claim: Mapping[str, Any], figures: _Figures, profile: str) -> dict[str, Any]:
    """One scorecard row: the claim, its figures in the thesis and here, the verdict over seeds."""
    symbol = _claim_symbol(claim)
    labels = claim.get("labels", {})
    label = partial(figures.label, labels=labels)
    checks = claim["checks"]
    in_thesis = [_figures(c, symbol, figures.in_thesis, label) for c in checks]
    in_thesis = [
        f and f"{f} (Table {figures.thesis[c[0]][3]})"
        for f, c in zip(in_thesis, checks, strict=True)
    ]
    measured = [_figures(c, symbol, figures.ours, label) for c in checks]
    holds_here = claim_logic.claim_holds(claim, lambda r: metric_at(figures.metrics, r))
    held, n_seeds = claim_logic.seed_verdict(claim, figures.seeds)
    status, words = claim_logic.verdict(holds_here, held, n_seeds)
    thesis_text = (
        "; ".join(in_thesis)
        if all(in_thesis)
        else claim.get("thesis_says", "; ".join(f for f in in_thesis if f))
    )
    return {
        "id": claim["id"],
        "claim": claim["text"],
        "source": claim["source"],
        "thesis": thesis_text,
        "ours": "; ".join(m or "not measured" for m in measured),
        "holds_in_this_run": holds_here,
        "seeds_holding": held,
        "n_seeds": n_seeds,
        "status": status,
        "verdict": words,
        "profile": profile,
    }


def score_claims(
    claims: dict[str, Any],
    reference: dict[str, Any],
    profile: str,
    seed_table: pd.DataFrame | None = None,
    **metrics: dict[str, Any],
) -> pd.DataFrame:
    """The scorecard: per thesis claim, its figures in the thesis and here, and the verdict."""
    seeds = seed_table if seed_table is not None else claim_logic.seed_table({})
    figures = _Figures(_thesis_cells(reference), seeds, metrics)
    return pd.DataFrame([_claim_row(claim, figures, profile) for claim in claims["claims"]])


# ---- rendering ------------------------------------------------------------------------------


def _fmt(value: float | None, pattern: str) -> str | None:
    return None if value is None or math.isnan(value) else pattern.format(value)


def _delta_pattern(pattern: str) -> str:
    return pattern.replace("{:", "{:+", 1)


def _ours_cell(cell: pd.Series, pattern: str) -> dict[str, str]:
    if cell.n_seeds >= 2:
        return {
            "text": pattern.format(cell.ours_mean),
            "sd": pattern.format(cell.ours_sd),
            "title": (
                f"{int(cell.n_seeds)} seeds, min–max"
                f" {pattern.format(cell.ours_min)}–{pattern.format(cell.ours_max)}; this run"
                f" {_fmt(cell.ours, pattern) or '—'}"
            ),
        }
    text = _fmt(cell.ours, pattern)
    return {
        "text": text or "—",
        "title": f"{cell.metric} (1 seed)" if text else "not measured on this profile",
        "missing": not text,
    }


WIDE_UP_TO = 10  # number columns up to which thesis | ours | Δ sit side by side (else stacked)


def _row_view(label: str, group: pd.DataFrame, pattern: str) -> dict[str, Any]:
    """A row's thesis numbers, ours and ours − thesis (each None when the row has none)."""
    blank = [{"text": "", "title": "", "missing": True}] * len(group)
    thesis = [
        {
            "text": _fmt(v, pattern) or "—",
            "title": c or "not printed in the thesis",
            "missing": math.isnan(v),
        }
        for v, c in zip(group.thesis, group.thesis_cell, strict=True)
    ]
    ours = [_ours_cell(cell, pattern) for cell in group.itertuples()]
    delta = [
        {"text": _fmt(v, _delta_pattern(pattern)) or "", "title": "ours − thesis"}
        for v in group.delta
    ]
    parts = {
        "thesis": thesis if group.thesis.notna().any() else None,
        "ours": ours if group.metric.notna().any() else None,
        "Δ": delta if group.delta.notna().any() else None,
    }
    return {
        "label": label,
        "lines": [
            {"kind": k, "cells": v} for k, v in parts.items() if v is not None
        ],  # stacked layout
        "wide": {k: v or blank for k, v in parts.items()},  # side-by-side layout
    }


def _table_views(comparison: pd.DataFrame, reference: dict[str, Any]) -> list[dict[str, Any]]:
    """Per thesis table: rows this profile measures; rows it cannot fill (folded); other methods."""
    views = []
    for table in reference["tables"]:
        cells = comparison[comparison.table == str(table["id"])]
        pattern = table.get("format", "{:.3f}")
        shown, folded, baselines = [], [], []
        for (label, kind), group in cells.groupby(["row", "kind"], sort=False):
            view = _row_view(label, group, pattern)
            if kind == "baseline":
                baselines.append(view)
            elif group.ours.notna().any():
                shown.append(view)
            else:
                folded.append(view)
        groups = ["thesis", "ours", "Δ"] if cells.thesis.notna().any() else ["ours"]
        views.append(
            {
                **{k: table.get(k, "") for k in ("id", "title", "source", "note")},
                "columns": table["columns"],
                "rows": shown,
                "folded": folded,
                "baselines": baselines,
                "seeds": int(cells.n_seeds.max()) if len(cells) else 0,
                "thesis_numbers": int(cells.thesis.notna().sum()),
                "layout": "wide"
                if len(groups) * len(table["columns"]) <= WIDE_UP_TO
                else "stacked",
                "groups": groups,
            }
        )
    return views


def _png_data_uri(load: Callable[[], Any]) -> str:
    buffer = io.BytesIO()
    load().save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_views(
    figures: dict[str, Callable[[], Any]], stages: Mapping[str, Any]
) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for name in sorted(figures):
        stage, _, file = name.partition("/")
        if stage not in stages or not file.startswith("fig_") or "/" in file:
            continue  # only each reported stage's own figures, not per-variant sample grids
        out.setdefault(stage, []).append(
            {"name": name, "uri": _png_data_uri(figures[name]), "path": f"../{name}.png"}
        )
    return out


def render_report(
    comparison: pd.DataFrame,
    scorecard: pd.DataFrame,
    reference: dict[str, Any],
    figures: dict[str, Callable[[], Any]],
    profile: str,
    **metrics: dict[str, Any],
) -> tuple[str, str]:
    """The report as one self-contained HTML page (figures inlined) and as Markdown."""
    commit = git_commit(Path.cwd())
    n_seeds = int(comparison.n_seeds.max()) if len(comparison) else 0
    context = {
        "profile": profile,
        "commit": commit,
        "short_commit": commit[:12],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "claims": scorecard.to_dict("records"),
        "n_seeds": n_seeds,
        "min_seeds": MIN_SEEDS,
        "tables": _table_views(comparison, reference),
        "stages": {
            stage: {
                k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in flatten(values).items()
            }
            for stage, values in sorted(metrics.items())
        },
        "figures": _figure_views(figures, metrics),
    }
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html.j2"]))
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|")  # a Markdown table cell
    return env.get_template("report.html.j2").render(**context), env.get_template(
        "report.md.j2"
    ).render(**context)
