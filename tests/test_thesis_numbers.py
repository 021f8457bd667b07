"""Every thesis number in reference/thesis_numbers.yaml is the one the thesis prints, and every
number the thesis' tables print is there.

The tables are read from the thesis text: from the committed excerpts (tests/data/thesis_tables,
pinned by their SHA-256, so this check runs on any machine) and, where the shared thesis file is
present, the excerpts are checked to be exactly what that file contains.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
import yaml

EXCERPTS = Path(__file__).parent / "data" / "thesis_tables"
THESIS_FILE = "000_a0a591a0cbcec3b8.txt"

# How each table is laid out in the text: header lines (a second line refines the first, whose
# cells span the blank ones after them) and the cells that name a row.
LAYOUT: dict[str, dict] = {
    "3.1": {},
    "3.2": {},
    "3.3": {},
    "4.1": {},
    "4.2": {"header_lines": 2},
    "4.3": {},
    "5.1": {"label_cells": (7,)},  # the row is the C2ST type, printed last
    "C.1": {"label_cells": (0, 1, 2)},  # gf df ep
    "C.2": {"label_cells": (0, 1, 2)},
}
NUMBER = re.compile(r"(\d+(?:\.\d+)?)(%?)")


def _thesis_path(repo_root: Path) -> Path:
    return Path(
        os.environ.get("OQUAB_THESIS_TEXT", repo_root.parent / "shared" / "thesis" / THESIS_FILE)
    )


def _excerpt(table_id: str) -> str:
    return (EXCERPTS / f"table_{table_id}.txt").read_text(encoding="utf-8")


def _columns(header: list[list[str]]) -> list[str]:
    """Column names from one or two header lines ('Classification' spans 'VOC' and 'COCO')."""
    if len(header) == 1:
        return [c.strip() for c in header[0]]
    names, span = [], ""
    for top, bottom in zip(*header, strict=False):
        span = top.strip() or span
        names.append(f"{span} {bottom.strip()}".strip())
    return names


def _number(cell: str) -> float | None:
    match = NUMBER.fullmatch(re.sub(r"</?i>", "", cell).strip())
    if not match:
        return None
    value = float(match.group(1))
    return value / 100 if match.group(2) else value


def parse_table(
    excerpt: str, header_lines: int = 1, label_cells: tuple[int, ...] = (0,)
) -> dict[tuple[str, str], float]:
    """(printed row, printed column) → number, for every numeric cell of a tab-separated table.

    A label printed twice gets ' [2]' on its second occurrence, so a misprinted row stays citable.
    """
    lines = [line.split("\t") for line in excerpt.split("\n\n", 1)[0].split("\n")]
    columns = _columns(lines[:header_lines])
    cells: dict[tuple[str, str], float] = {}
    seen: dict[str, int] = {}
    for line in lines[header_lines:]:
        numbers = {
            columns[j]: v
            for j, c in enumerate(line)
            if j not in label_cells and (v := _number(c)) is not None
        }
        if not numbers:
            continue  # a repeated header or a row of dashes
        label = " ".join(line[j].strip() for j in label_cells)
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} [{seen[label]}]"
        cells |= {(label, column): v for column, v in numbers.items()}
    return cells


def cited_cells(table: dict) -> dict[tuple[str, str], float | None]:
    """(printed row, printed column) → the reference file's thesis value, for every cited cell."""
    columns = table.get("thesis_columns", table["columns"])
    out: dict[tuple[str, str], float | None] = {}
    for row in [*table["rows"], *table.get("baselines", [])]:
        if "thesis_cells" in row:
            keys = [tuple(part.strip() for part in c.split(" / ")) for c in row["thesis_cells"]]
        elif row.get("thesis_row") is None:
            assert all(v is None for v in row["thesis"]), (
                f"table {table['id']} row '{row['label']}' has numbers but no thesis_row"
            )
            continue
        else:
            keys = [(row["thesis_row"], c) for c in columns]
        assert len(keys) == len(row["thesis"]) == len(table["columns"]), (
            f"table {table['id']} row '{row['label']}'"
        )
        for key, value in zip(keys, row["thesis"], strict=True):
            assert key not in out, f"table {table['id']}: cell {key} cited twice"
            out[key] = value
    return out


@pytest.fixture(scope="module")
def reference(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())


def test_excerpts_are_the_pinned_ones() -> None:
    """An excerpt edited to agree with a wrong transcription fails here."""
    sums = dict(
        reversed(line.split("  ")) for line in (EXCERPTS / "SHA256SUMS").read_text().splitlines()
    )
    assert set(sums) == {f"table_{t}.txt" for t in LAYOUT}
    for name, digest in sums.items():
        assert hashlib.sha256((EXCERPTS / name).read_bytes()).hexdigest() == digest, name


def test_excerpts_are_verbatim_from_the_thesis_text(repo_root: Path, reference: dict) -> None:
    path = _thesis_path(repo_root)
    if not path.is_file():
        pytest.skip(
            f"thesis text not at {path} (set OQUAB_THESIS_TEXT): the pinned excerpts are checked"
            " instead"
        )
    text = path.read_text(encoding="utf-8")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == reference["source"]["sha256"]
    for table_id in LAYOUT:
        caption = f"\n\nTable {table_id}:"
        assert text.count(caption) == 1, f"Table {table_id} caption not found once in {path}"
        excerpt = _excerpt(table_id)  # the table's lines, a blank line, its caption
        assert caption in f"\n{excerpt}" and f"\n{excerpt}" in text, (
            f"Table {table_id} differs from {path}"
        )


@pytest.mark.parametrize("table_id", list(LAYOUT))
def test_every_printed_number_is_transcribed_and_every_transcription_is_printed(
    reference: dict, table_id: str
) -> None:
    printed = parse_table(_excerpt(table_id), **LAYOUT[table_id])
    (table,) = [t for t in reference["tables"] if t["id"] == table_id]
    cited = cited_cells(table)
    assert printed, f"no number parsed from Table {table_id}"
    for key, value in cited.items():
        assert value == printed.get(key), (
            f"Table {table_id} cell {key}: reference {value}, thesis {printed.get(key)}"
        )
    missing = sorted(set(printed) - set(cited))
    assert not missing, f"Table {table_id}: printed but not in the reference file: {missing}"


def test_tables_without_printed_numbers_hold_none(reference: dict) -> None:
    for table in reference["tables"]:
        if table["id"] not in LAYOUT:
            assert table.get("figure_only"), (
                f"table {table['id']}: not parsed from the thesis, so it must be figure_only"
            )
            assert all(v is None for row in table["rows"] for v in row["thesis"]), table["id"]


def test_parser_reads_the_known_cells() -> None:
    """A few cells read by eye in the thesis text, so a parser bug cannot hide behind the
    round trip (e.g. Table 3.3's PRE-1512 is 68.4; 70.2 is PRE-1512U's)."""
    t33 = parse_table(_excerpt("3.3"))
    assert t33[("PRE-1512", "mAP")] == 68.4 and t33[("PRE-1512U", "mAP")] == 70.2
    assert parse_table(_excerpt("3.2"))[("PRE-1000C", "bird")] == 87.7  # printed in italics
    assert (
        parse_table(_excerpt("4.2"), header_lines=2)[("K.CENTER PRED.", "Location Prediction VOC")]
        == 50.9
    )
    t51 = parse_table(_excerpt("5.1"), label_cells=(7,))
    assert t51[("KNN", "NCC")] == 0.79 and t51[("MMD", "Ensemble")] == 0.65
    c2 = parse_table(_excerpt("C.2"), label_cells=(0, 1, 2))
    assert c2[("64 96 200", "KNN")] == 0.779 and c2[("64 96 200 [2]", "MMD")] == 1.061
