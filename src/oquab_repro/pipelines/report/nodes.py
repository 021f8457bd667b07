"""Kedro nodes of the report stage: thesis-vs-ours tables, then HTML and Markdown renderings.

Our numbers are read from each stage's ``metrics.json`` through the paths listed in
``reference/thesis_numbers.yaml``; nothing is typed in by hand, and a number a stage does not
produce yet shows as missing rather than as anything else.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from oquab_repro.lib.provenance import git_commit
from oquab_repro.tracking import flatten

TEMPLATES = Path(__file__).parent / "templates"


def metric_at(metrics: dict[str, Any], ref: str) -> float | None:
    """Our value for ``<stage>:<dotted.key>``, or None when the stage or key does not exist (yet)."""
    stage, _, key = ref.partition(":")
    node: Any = metrics.get(stage)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def compare_with_thesis(reference: dict[str, Any], profile: str, **metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per reproduced cell: thesis table/row/column, the thesis' number and ours."""
    rows = []
    for table in reference["tables"]:
        for row in table["rows"]:
            if len(row["thesis"]) != len(table["columns"]) or len(row["ours"]) != len(table["columns"]):
                raise ValueError(
                    f"thesis_numbers.yaml: table {table['id']} row '{row['label']}' needs one thesis value "
                    f"and one metric path per column {table['columns']}"
                )
            for column, thesis, ref in zip(table["columns"], row["thesis"], row["ours"], strict=True):
                rows.append(
                    {
                        "table": str(table["id"]),
                        "row": row["label"],
                        "column": column,
                        "thesis": math.nan if thesis is None else float(thesis),
                        "ours": metric_at(metrics, ref) if ref else None,
                        "metric": ref,
                        "profile": profile,
                    }
                )
    frame = pd.DataFrame(rows)
    frame["ours"] = frame["ours"].astype(float)
    return frame


def _fmt(value: float, pattern: str, missing: str) -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def _table_views(comparison: pd.DataFrame, reference: dict[str, Any]) -> list[dict[str, Any]]:
    views = []
    for table in reference["tables"]:
        cells = comparison[comparison.table == str(table["id"])]
        pattern = table.get("format", "{:.3f}")
        body = []
        for label, group in cells.groupby("row", sort=False):
            body.append(
                {
                    "label": label,
                    "thesis": [_fmt(v, pattern, "not transcribed") for v in group.thesis],
                    "ours": [_fmt(v, pattern, "not yet reproduced") for v in group.ours],
                }
            )
        views.append({**{k: table.get(k, "") for k in ("id", "title", "source", "note")}, "columns": table["columns"], "rows": body})
    return views


def _png_data_uri(load: Callable[[], Any]) -> str:
    buffer = io.BytesIO()
    load().save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_report(
    comparison: pd.DataFrame,
    reference: dict[str, Any],
    figures: dict[str, Callable[[], Any]],
    profile: str,
    **metrics: dict[str, Any],
) -> tuple[str, str]:
    """The report as one self-contained HTML page (figures inlined) and as Markdown."""
    commit = git_commit(Path.cwd())
    context = {
        "profile": profile,
        "commit": commit,
        "short_commit": commit[:12],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tables": _table_views(comparison, reference),
        "stages": {
            stage: {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in flatten(values).items()}
            for stage, values in sorted(metrics.items())
        },
        "figures": {},
    }
    for name in sorted(figures):
        stage, _, file = name.partition("/")
        if stage not in metrics or not file.startswith("fig_") or "/" in file:
            continue  # only each reported stage's own figures, not per-variant sample grids
        context["figures"].setdefault(stage, []).append(
            {"name": name, "uri": _png_data_uri(figures[name]), "path": f"../{name}.png"}
        )
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    return env.get_template("report.html.j2").render(**context), env.get_template("report.md.j2").render(**context)
