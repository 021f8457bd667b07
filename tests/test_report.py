"""The report puts every thesis table next to ours with the difference, folds what a profile cannot
fill, scores the thesis' claims with their spread over seeds, and renders in a browser."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from oquab_repro.pipelines.report import claims as claim_logic
from oquab_repro.pipelines.report import nodes

REFERENCE = {
    "tables": [
        {
            "id": "9.9",
            "title": "A test table",
            "source": "Table 9.9",
            "note": "keys like <stage>:<key>",
            "format": "{:.0%}",
            "columns": ["acc", "err"],
            "rows": [
                {
                    "label": "ours exists",
                    "thesis_row": "A",
                    "thesis": [0.5, None],
                    "ours": ["stage:a.b", "stage:a.c"],
                },
                {
                    "label": "stage missing",
                    "thesis_row": "B",
                    "thesis": [0.25, 0.75],
                    "ours": ["other:x", "stage:nope"],
                },
            ],
            "baselines": [{"label": "someone else", "thesis_row": "C", "thesis": [0.9, 0.1]}],
        }
    ]
}
METRICS = {"stage": {"a": {"b": 0.625, "c": 0.125}, "flag": True}}
CLAIMS = {
    "claims": [
        {
            "id": "b_beats_c",
            "text": "b beats c | really",
            "source": "§9",
            "test": "greater",
            "checks": [["stage:a.b", "stage:a.c"]],
        },
        {
            "id": "never",
            "text": "c beats b",
            "source": "§9",
            "test": "greater",
            "checks": [["stage:a.c", "stage:a.b"]],
        },
        {
            "id": "unmeasured",
            "text": "x",
            "source": "§9",
            "test": "less",
            "checks": [["other:x", "stage:a.b"]],
        },
    ]
}


def _seeds(rows: list[tuple[int, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(claim_logic.SEED_COLUMNS))


def test_metric_lookup() -> None:
    assert nodes.metric_at(METRICS, "stage:a.b") == 0.625
    assert nodes.metric_at(METRICS, "stage:a") is None  # a mapping is not a number
    assert nodes.metric_at(METRICS, "stage:flag") is None  # nor is a finding flag
    assert nodes.metric_at(METRICS, "stage:a.z") is None
    assert nodes.metric_at(METRICS, "missing:a.b") is None


def test_comparison_rows() -> None:
    table = nodes.compare_with_thesis(REFERENCE, "mini", **METRICS)
    assert len(table) == 6 and set(table.profile) == {"mini"}
    first = table.iloc[0]
    assert (first.table, first.row, first.column, first.thesis, first.ours, first.thesis_cell) == (
        "9.9",
        "ours exists",
        "acc",
        0.5,
        0.625,
        "A / acc",
    )
    assert first.delta == pytest.approx(0.125) and first.n_seeds == 1
    assert math.isnan(table.iloc[1].thesis) and pd.isna(
        table.iloc[1].thesis_cell
    )  # the thesis prints none
    assert table.iloc[2:4].ours.isna().all()  # not produced (yet): missing, never invented
    baseline = table[table.kind == "baseline"]
    assert list(baseline.thesis) == [0.9, 0.1] and baseline.ours.isna().all()


def test_reference_rows_must_match_columns() -> None:
    bad = {
        "tables": [
            {
                **REFERENCE["tables"][0],
                "rows": [{"label": "r", "thesis": [1.0], "ours": ["s:a", "s:b"]}],
            }
        ]
    }
    with pytest.raises(ValueError, match="table 9.9 row 'r'"):
        nodes.compare_with_thesis(bad, "mini")


def test_spread_over_seeds_reaches_the_table() -> None:
    seeds = _seeds([(0, "stage", "a.b", 0.5), (1, "stage", "a.b", 0.7), (2, "stage", "a.b", 0.6)])
    table = nodes.compare_with_thesis(REFERENCE, "mini", seed_table=seeds, **METRICS)
    cell = table.iloc[0]
    assert (cell.n_seeds, cell.ours_mean, cell.ours_min, cell.ours_max) == (
        3,
        pytest.approx(0.6),
        0.5,
        0.7,
    )
    assert (
        cell.ours_sd == pytest.approx(0.1) and cell.ours == 0.625
    )  # this run stays beside the spread
    assert cell.delta == pytest.approx(0.1)  # mean − thesis


def test_seed_tables_are_gathered_from_per_seed_files_only() -> None:
    loaded = []

    def loader(frame: pd.DataFrame):
        return lambda: loaded.append(1) or frame

    parts = {
        "sweep/per_seed": loader(_seeds([(0, "stage", "a.b", 0.5)])),
        "transfer/per_seed": loader(_seeds([(0, "transfer", "map_voc07.nopre", 20.0)])),
        "transfer/ap": loader(pd.DataFrame({"x": [1]})),  # another CSV: never loaded
    }
    table = claim_logic.seed_table(parts)
    assert len(table) == 2 and len(loaded) == 2
    assert claim_logic.seed_table({}).empty
    with pytest.raises(
        ValueError, match=r"data/08_reporting/bad/per_seed.csv lacks columns \['key'\]"
    ):
        claim_logic.seed_table(
            {"bad/per_seed": lambda: pd.DataFrame({"seed": [0], "stage": ["s"], "value": [1.0]})}
        )


@pytest.mark.parametrize(
    ("values", "status", "words"),
    [
        ([(0.6, 0.1), (0.7, 0.2), (0.9, 0.3)], "holds", "holds in all 3 seeds"),
        ([(0.6, 0.1), (0.1, 0.2), (0.9, 0.3)], "mixed", "mixed: holds in 2 of 3 seeds"),
        ([(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)], "fails", "does not hold in any of 3 seeds"),
        (
            [(0.6, 0.1), (0.0, 0.2)],
            "unknown",
            "2 seeds, fewer than 3: no verdict (holds in 1 of 2)",
        ),
        ([], "unknown", "1 seed: spread unknown (holds in this run)"),
    ],
)
def test_a_claim_holds_only_beyond_the_spread(
    values: list[tuple[float, float]], status: str, words: str
) -> None:
    seeds = _seeds(
        [
            r
            for s, (b, c) in enumerate(values)
            for r in ((s, "stage", "a.b", b), (s, "stage", "a.c", c))
        ]
    )
    card = nodes.score_claims(CLAIMS, REFERENCE, "mini", seed_table=seeds, **METRICS).set_index(
        "id"
    )
    assert (card.loc["b_beats_c", "status"], card.loc["b_beats_c", "verdict"]) == (status, words)
    if len(values) >= 2:  # ours: mean ± sd over the seeds
        assert re.fullmatch(
            r"ours exists \d+% ± \d+% > a\.c [\d.]+ ± [\d.]+", card.loc["b_beats_c", "ours"]
        )


def test_scorecard_states_what_one_run_shows_and_what_is_missing() -> None:
    card = nodes.score_claims(CLAIMS, REFERENCE, "mini", **METRICS).set_index("id")
    assert (
        card.loc["b_beats_c", "ours"] == "ours exists 62% > a.c 0.125"
    )  # a.c: no thesis row to name it
    assert card.loc["b_beats_c", "thesis"] == ""  # the thesis prints only one side
    assert card.loc["unmeasured", "thesis"] == "stage missing 25% < ours exists 50% (Table 9.9)"
    assert card.loc["never", "verdict"] == "1 seed: spread unknown (does not hold in this run)"
    assert (card.loc["unmeasured", "status"], card.loc["unmeasured", "ours"]) == (
        "missing",
        "not measured",
    )
    with pytest.raises(ValueError, match="claim 'odd' has test 'bigger'"):
        nodes.score_claims(
            {"claims": [{**CLAIMS["claims"][0], "id": "odd", "test": "bigger"}]}, REFERENCE, "mini"
        )


def test_claim_tests() -> None:
    t = claim_logic.TESTS
    assert t["greater"].holds([3, 2], 1.0) and not t["greater"].holds([3, 2], 1.6)
    assert (
        t["at_least"].holds([2, 2], 1.0)
        and not t["less"].holds([2, 2], 1.0)
        and t["at_most"].holds([2, 2], 1.0)
    )
    assert t["ordered"].holds([3, 2, 1], 1.0) and not t["ordered"].holds([3, 1, 2], 1.0)


def test_repository_reference_and_claims_are_well_formed(repo_root: Path) -> None:
    reference = yaml.safe_load(
        (repo_root / "src/oquab_repro/reference/thesis_numbers.yaml").read_text()
    )
    claims = yaml.safe_load((repo_root / "src/oquab_repro/reference/claims.yaml").read_text())
    table = nodes.compare_with_thesis(reference, "mini")
    assert table.table.nunique() == len(reference["tables"])
    refs = [m for m in table.metric if isinstance(m, str)] + [
        r for c in claims["claims"] for ch in c["checks"] for r in ch
    ]
    assert refs and all(re.fullmatch(r"[a-z_]+:[\w.]+", m) for m in refs)
    assert not table[table.thesis.notna() & table.thesis_cell.isna()].size, (
        "every thesis number cites its cell"
    )
    card = nodes.score_claims(claims, reference, "mini")
    assert len(card) == len(claims["claims"]) == len(set(card.id))


def test_repository_claims_point_at_metrics_the_stages_write(repo_root: Path) -> None:
    """Each claim's refs exist in the committed mini metrics (a renamed key would silently turn a
    claim into 'not measured')."""
    files = sorted((repo_root / "data/08_reporting").glob("*/metrics.json"))
    if not files:
        pytest.skip("no committed metrics.json under data/08_reporting")
    metrics = {f.parent.name: json.loads(f.read_text()) for f in files}
    claims = yaml.safe_load((repo_root / "src/oquab_repro/reference/claims.yaml").read_text())
    missing = [
        r
        for c in claims["claims"]
        for ch in c["checks"]
        for r in ch
        if nodes.metric_at(metrics, r) is None
    ]
    assert not missing, f"claims.yaml refs no stage writes: {missing}"


def test_rows_a_profile_cannot_fill_fold_away() -> None:
    views = nodes._table_views(nodes.compare_with_thesis(REFERENCE, "mini", **METRICS), REFERENCE)
    (view,) = views
    assert [r["label"] for r in view["rows"]] == ["ours exists"]
    assert [r["label"] for r in view["folded"]] == ["stage missing"]
    assert [r["label"] for r in view["baselines"]] == ["someone else"]
    assert [line["kind"] for line in view["rows"][0]["lines"]] == ["thesis", "ours", "Δ"]


@pytest.fixture()
def rendered(tmp_path: Path) -> tuple[Path, Path]:
    comparison = nodes.compare_with_thesis(REFERENCE, "mini", **METRICS)
    scorecard = nodes.score_claims(CLAIMS, REFERENCE, "mini", **METRICS)
    figures = {
        "stage/fig_demo": lambda: Image.new("RGB", (40, 30), "orange"),
        "stage/samples/fig_epoch": lambda: Image.new(
            "RGB", (4, 3), "red"
        ),  # a variant's grid: left out
        "unreported/fig_x": lambda: Image.new(
            "RGB", (4, 3), "blue"
        ),  # a stage without metrics: left out
    }
    html, markdown = nodes.render_report(
        comparison, scorecard, REFERENCE, figures, "mini", **METRICS
    )
    (tmp_path / "report.html").write_text(html)
    (tmp_path / "report.md").write_text(markdown)
    return tmp_path / "report.html", tmp_path / "report.md"


def test_html_and_markdown_content(rendered: tuple[Path, Path]) -> None:
    html, markdown = (p.read_text() for p in rendered)
    assert 'data-table="9.9"' in html and "mini profile" in html
    assert "62%" in html and "+12%" in html and "not transcribed" not in html
    assert html.index('id="scorecard"') < html.index('data-table="9.9"'), (
        "the scorecard opens the report"
    )
    assert 'data-claim="b_beats_c"' in html and "1 seed: spread unknown" in html
    assert re.search(
        r"<details><summary>1 row this profile does not measure.*?data-folded=\"9.9\"", html, re.S
    )
    assert "data:image/png;base64," in html, "figures are inlined so the page is self-contained"
    assert "| ours exists | 50% | — | 62% | 12% | +12% |  |" in markdown
    assert "](../stage/fig_demo.png)" in markdown
    assert "| b beats c \\| really (§9) |" in markdown  # a pipe in a cell is escaped
    assert (
        "keys like &lt;stage&gt;:&lt;key&gt;" in html and "keys like <stage>:<key>" in markdown
    )  # escaped in HTML only


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium on this machine (Debian package: chromium)"
)
def test_report_renders_in_headless_chromium(rendered: tuple[Path, Path], tmp_path: Path) -> None:
    html, _ = rendered
    base = [_chromium(), *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--dump-dom", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert re.search(r'<table class="comparison wide" data-table="9.9"', dom)
    assert dom.count("<img ") == 1
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1200,900", html.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert Image.open(shot).size == (1200, 900)


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium on this machine (Debian package: chromium)"
)
def test_every_thesis_table_and_claim_renders_in_headless_chromium(
    repo_root: Path, tmp_path: Path
) -> None:
    """The repository's reference and claims files (every table and claim the report promises)
    rendered, then read back from the browser's DOM, in the files' order."""
    reference = yaml.safe_load(
        (repo_root / "src/oquab_repro/reference/thesis_numbers.yaml").read_text()
    )
    claims = yaml.safe_load((repo_root / "src/oquab_repro/reference/claims.yaml").read_text())
    comparison = nodes.compare_with_thesis(reference, "mini")
    html, _ = nodes.render_report(
        comparison, nodes.score_claims(claims, reference, "mini"), reference, {}, "mini"
    )
    page = tmp_path / "report.html"
    page.write_text(html)
    base = [_chromium(), *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    ids = [t["id"] for t in reference["tables"]]
    assert {"3.1", "3.2", "3.3", "4.1", "4.2", "4.3", "5.1", "C.1", "C.2", "D"} <= set(ids)
    # no metrics at all: every row folds away, and each table still shows its folded rows
    assert re.findall(r'<table class="folded[^"]*" data-folded="([^"]+)"', dom) == ids
    assert re.findall(r'<tr data-claim="([^"]+)"', dom) == [c["id"] for c in claims["claims"]]
    assert "not transcribed" not in dom


def test_spread_is_rendered_beside_each_number() -> None:
    seeds = _seeds(
        [
            (s, "stage", k, v)
            for s, (b, c) in enumerate([(0.5, 0.1), (0.7, 0.2), (0.6, 0.3)])
            for k, v in (("a.b", b), ("a.c", c))
        ]
    )
    comparison = nodes.compare_with_thesis(REFERENCE, "mini", seed_table=seeds, **METRICS)
    scorecard = nodes.score_claims(CLAIMS, REFERENCE, "mini", seed_table=seeds, **METRICS)
    html, markdown = nodes.render_report(comparison, scorecard, REFERENCE, {}, "mini", **METRICS)
    assert (
        '60%<span class="sd">±10%</span>' in html
        and "3 seeds, min–max 50%–70%; this run 62%" in html
    )
    assert "| ours exists | 50% | — | 60% ± 10% | 20% ± 10% |" in markdown
    assert "holds in all 3 seeds" in html and "mean ± sd over 3 seeds" in markdown
