"""The report puts every thesis table next to ours, marks what is missing, and renders in a browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from oquab_repro.pipelines.report import nodes

REFERENCE = {
    "tables": [
        {
            "id": "9.9",
            "title": "A test table",
            "source": "Table 9.9",
            "format": "{:.0%}",
            "columns": ["acc", "err"],
            "rows": [
                {"label": "ours exists", "thesis": [0.5, None], "ours": ["stage:a.b", "stage:a.c"]},
                {"label": "stage missing", "thesis": [0.25, 0.75], "ours": ["other:x", "stage:nope"]},
            ],
        }
    ]
}
METRICS = {"stage": {"a": {"b": 0.625, "c": 0.125}}}


def test_metric_lookup() -> None:
    assert nodes.metric_at(METRICS, "stage:a.b") == 0.625
    assert nodes.metric_at(METRICS, "stage:a") is None  # a mapping is not a number
    assert nodes.metric_at(METRICS, "stage:a.z") is None
    assert nodes.metric_at(METRICS, "missing:a.b") is None


def test_comparison_rows() -> None:
    table = nodes.compare_with_thesis(REFERENCE, "mini", **METRICS)
    assert len(table) == 4 and set(table.profile) == {"mini"}
    first = table.iloc[0]
    assert (first.table, first.row, first.column, first.thesis, first.ours) == ("9.9", "ours exists", "acc", 0.5, 0.625)
    assert math.isnan(table.iloc[1].thesis)  # thesis shows it only as a figure
    assert table.iloc[2:].ours.isna().all()  # not produced (yet): missing, never invented


def test_reference_rows_must_match_columns() -> None:
    bad = {"tables": [{**REFERENCE["tables"][0], "rows": [{"label": "r", "thesis": [1.0], "ours": ["s:a", "s:b"]}]}]}
    with pytest.raises(ValueError, match="table 9.9 row 'r'"):
        nodes.compare_with_thesis(bad, "mini")


def test_repository_reference_file_is_well_formed(repo_root: Path) -> None:
    reference = yaml.safe_load((repo_root / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    table = nodes.compare_with_thesis(reference, "mini")
    assert table.table.nunique() == len(reference["tables"])
    refs = [m for m in table.metric if isinstance(m, str)]  # null: a row no stage produces yet
    assert refs and all(re.fullmatch(r"[a-z_]+:[\w.]+", m) for m in refs)


@pytest.fixture()
def rendered(tmp_path: Path) -> tuple[Path, Path]:
    comparison = nodes.compare_with_thesis(REFERENCE, "mini", **METRICS)
    figures = {
        "stage/fig_demo": lambda: Image.new("RGB", (40, 30), "orange"),
        "stage/samples/fig_epoch": lambda: Image.new("RGB", (4, 3), "red"),  # a variant's grid: left out
        "unreported/fig_x": lambda: Image.new("RGB", (4, 3), "blue"),  # a stage without metrics: left out
    }
    html, markdown = nodes.render_report(comparison, REFERENCE, figures, "mini", **METRICS)
    (tmp_path / "report.html").write_text(html)
    (tmp_path / "report.md").write_text(markdown)
    return tmp_path / "report.html", tmp_path / "report.md"


def test_html_and_markdown_content(rendered: tuple[Path, Path]) -> None:
    html, markdown = (p.read_text() for p in rendered)
    assert 'data-table="9.9"' in html and "mini profile" in html
    assert "62%" in html and "not yet reproduced" in html and "not transcribed" in html
    assert "data:image/png;base64," in html, "figures are inlined so the page is self-contained"
    assert "| ours exists | 50% | not transcribed | 62% | 12% |" in markdown
    assert "](../stage/fig_demo.png)" in markdown


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (Debian package: chromium)")
def test_report_renders_in_headless_chromium(rendered: tuple[Path, Path], tmp_path: Path) -> None:
    html, _ = rendered
    base = [_chromium(), *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r'<table class="comparison" data-table="9.9"', dom)
    assert dom.count("<img ") == 1
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,900", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert Image.open(shot).size == (1200, 900)


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine (Debian package: chromium)")
def test_every_thesis_table_renders_in_headless_chromium(repo_root: Path, tmp_path: Path) -> None:
    """The repository's reference file (every table the report promises) rendered, then read back
    from the browser's DOM: one comparison table per thesis table, in the file's order."""
    reference = yaml.safe_load((repo_root / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    html, _ = nodes.render_report(nodes.compare_with_thesis(reference, "mini"), reference, {}, "mini")
    page = tmp_path / "report.html"
    page.write_text(html)
    base = [_chromium(), *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    ids = [t["id"] for t in reference["tables"]]
    assert {"3.1", "3.2", "3.3", "4.1", "4.2", "4.3", "5.1", "C.1", "C.2", "D"} <= set(ids)
    assert re.findall(r'<table class="comparison" data-table="([^"]+)"', dom) == ids
