"""The Tübingen cause-effect pairs in their official on-disk format (Mooij et al., 2016).

The official archive holds one ``pairNNNN.txt`` per pair (whitespace-separated columns, one row
per observation) and a ``pairmeta.txt`` whose rows read
``NNNN  cause_first  cause_last  effect_first  effect_last  weight`` (1-based column numbers).
The same reader serves the pairs we convert from ``cdt`` and the downloaded archive, so the causal
stage never depends on where the files came from. Files are exchanged as ``{name: text}``
mappings, which is what Kedro's ``PartitionedDataset`` of text files loads and saves.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

META = "pairmeta"
PAIR_FILE = re.compile(r"pair\d{4}")  # data files; descriptions are pairNNNN_des
MAP_FILE = "tuebingen_pairs.csv"
MAP_COLUMNS = ("cdt_id", "pair_id", "cause_column", "weight", "n_points")


@dataclass(frozen=True)
class PairMeta:
    """One row of ``pairmeta.txt``: 1-based inclusive column ranges of cause and effect."""

    pair_id: str
    cause: tuple[int, int]
    effect: tuple[int, int]
    weight: float

    @property
    def univariate(self) -> bool:
        return self.cause[0] == self.cause[1] and self.effect[0] == self.effect[1]


@dataclass(frozen=True)
class CausePair:
    """A univariate pair as stored on disk: columns ``a`` (first) and
    ``b`` (second) and the truth."""

    pair_id: str
    a: np.ndarray
    b: np.ndarray
    a_causes_b: bool
    weight: float


def format_pair(columns: np.ndarray) -> str:
    """Rows of whitespace-separated values (the official layout), shortest exact float repr."""
    rows = np.atleast_2d(np.asarray(columns, dtype=np.float64)).tolist()
    return "".join(" ".join(repr(v) for v in row) + "\n" for row in rows)


def parse_pair(text: str, source: str) -> np.ndarray:
    """Parse a ``pairNNNN.txt`` into an (n, columns) array; tabs or spaces both occur officially."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        raise ValueError(
            f"{source}: empty pair file; re-create it with `dvc repro data_tuebingen`."
        )
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{source}: rows have different numbers of columns {sorted(widths)}.")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{source}: non-numeric value ({exc}).") from None


def format_pairmeta(metas: list[PairMeta]) -> str:
    return "".join(
        f"{m.pair_id} {m.cause[0]} {m.cause[1]} {m.effect[0]} {m.effect[1]} {m.weight:g}\n"
        for m in metas
    )


def parse_pairmeta(text: str, source: str = f"{META}.txt") -> list[PairMeta]:
    """Parse ``pairmeta.txt``; every row needs the pair id, four column numbers and a weight."""
    metas = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise ValueError(
                f"{source}:{lineno}: expected 6 fields (id, 4 columns, weight), got {len(fields)}."
            )
        try:
            c0, c1, e0, e1 = (int(f) for f in fields[1:5])
            weight = float(fields[5])
        except ValueError:
            raise ValueError(
                f"{source}:{lineno}: columns must be integers and the weight a number."
            ) from None
        metas.append(PairMeta(fields[0].zfill(4), (c0, c1), (e0, e1), weight))
    return metas


def _text(entry: str | Callable[[], str]) -> str:
    return entry() if callable(entry) else entry


def check_agreement(metas: list[PairMeta], files: Mapping[str, object]) -> None:
    """``pairmeta.txt`` and the pair files name the same pairs, each once; else name every culprit.

    A pair file that no ``pairmeta`` line lists would otherwise be dropped without a word (its truth
    and weight are unknown), and a line without its file could only fail halfway through a run.
    """
    listed = [f"pair{m.pair_id}" for m in metas]
    present = {name for name in files if PAIR_FILE.fullmatch(name)}
    twice = sorted({n for n in listed if listed.count(n) > 1})
    unlisted, missing = sorted(present - set(listed)), sorted(set(listed) - present)
    problems = []
    if twice:
        problems.append(f"{META}.txt lists {', '.join(twice)} more than once")
    if unlisted:
        problems.append(f"no {META}.txt line for {', '.join(n + '.txt' for n in unlisted)}")
    if missing:
        problems.append(
            f"{META}.txt lists {', '.join(n + '.txt' for n in missing)} but the file is missing"
        )
    if problems:
        raise ValueError(
            "Tübingen pairs: "
            + "; ".join(problems)
            + ". Every pairNNNN.txt needs exactly one pairmeta.txt line and vice versa: rebuild the"
            " folder with `dvc repro data_tuebingen` (or restore the official archive)."
        )


def read_pairs(files: Mapping[str, str | Callable[[], str]]) -> tuple[list[CausePair], list[str]]:
    """Univariate pairs in ``pairmeta`` order, and the ids of the multivariate ones left out.

    ``files`` maps names without suffix (``pairmeta``, ``pair0001``, ...) to texts or to loaders
    returning texts; other files of the official archive (``pair0001_des``, README) are ignored.
    ``pairmeta.txt`` and the pair files must agree (:func:`check_agreement`).
    """
    if META not in files:
        raise ValueError(f"no {META}.txt among the Tübingen files; run `dvc repro data_tuebingen`.")
    metas = parse_pairmeta(_text(files[META]))
    check_agreement(metas, files)
    pairs, skipped = [], []
    for meta in metas:
        if not meta.univariate:
            skipped.append(meta.pair_id)
            continue
        name = f"pair{meta.pair_id}"
        data = parse_pair(_text(files[name]), f"{name}.txt")
        columns = {meta.cause[0], meta.effect[0]}
        if columns != {1, 2} or data.shape[1] != 2:
            raise ValueError(
                f"{name}.txt: univariate pair must have columns 1 and 2, got {data.shape[1]}"
                " columns."
            )
        pairs.append(
            CausePair(meta.pair_id, data[:, 0], data[:, 1], meta.cause[0] == 1, meta.weight)
        )
    return pairs, skipped


def pair_files(pairs: list[CausePair]) -> dict[str, str]:
    """The official layout of ``pairs``: one text per pair plus ``pairmeta``."""
    files = {f"pair{p.pair_id}": format_pair(np.column_stack([p.a, p.b])) for p in pairs}
    metas = [
        PairMeta(
            p.pair_id,
            (1, 1) if p.a_causes_b else (2, 2),
            (2, 2) if p.a_causes_b else (1, 1),
            p.weight,
        )
        for p in pairs
    ]
    files[META] = format_pairmeta(metas)
    return files


@dataclass(frozen=True)
class PairMapRow:
    """Where one of ``cdt``'s pairs sits in the official benchmark v1.0.

    ``cdt_id`` is ``cdt``'s sample id (``pair1``..``pair99``, cause-first), ``pair_id`` the official
    id, ``cause_column`` the cause's column (1 or 2) in the official ``pairNNNN.txt``, ``weight``
    column 6 of the official ``pairmeta.txt`` and ``n_points`` the number of observations.
    """

    cdt_id: str
    pair_id: str
    cause_column: int
    weight: float
    n_points: int


def parse_pair_map(text: str, source: str = MAP_FILE) -> list[PairMapRow]:
    """Parse the committed map; a wrong header or a malformed row names the file and line."""
    reader = csv.reader(text.splitlines())
    header = tuple(next(reader, ()))
    if header != MAP_COLUMNS:
        raise ValueError(
            f"{source}: header must be {','.join(MAP_COLUMNS)}, got {','.join(header)}."
        )
    rows = []
    for lineno, fields in enumerate(reader, start=2):
        try:
            cdt_id, pair_id, cause, weight, n = fields
            rows.append(PairMapRow(cdt_id, pair_id, int(cause), float(weight), int(n)))
        except ValueError:
            raise ValueError(
                f"{source}:{lineno}: expected {len(MAP_COLUMNS)} fields "
                f"({','.join(MAP_COLUMNS)}), got {fields}."
            ) from None
    return rows


@cache
def pair_map() -> tuple[PairMapRow, ...]:
    """The committed map from ``cdt``'s 99 pairs to the official ids, orientation and weights.

    Derived once from the official ``pairmeta.txt`` (:func:`derive_pair_map`, checked by
    tests/test_tuebingen.py against the official archive wherever it is available).
    """
    text = resources.files("oquab_repro.reference").joinpath(MAP_FILE).read_text()
    return tuple(parse_pair_map(text))


def official_pair_ids() -> list[int]:
    """Official ids of the 99 bivariate pairs the project uses (what
    ``causal.figure_pairs`` may name)."""
    return [int(row.pair_id) for row in pair_map()]


def id_ranges(ids: list[int]) -> str:
    """``1–51, 56–70, 72–104``: a readable list of (sorted) ids for error messages."""
    spans: list[list[int]] = []
    for i in sorted(ids):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in spans)


def derive_pair_map(
    official: Mapping[str, str | Callable[[], str]], cdt_pairs: list[CausePair], max_id: int = 105
) -> list[PairMapRow]:
    """Match ``cdt``'s cause-first pairs to the official bivariate pairs up to ``max_id``, in order.

    Raises if the counts differ or if any pair's values differ from the official file once put
    cause-first: the map then records a fact, not an assumption.
    """
    metas = [
        m
        for m in parse_pairmeta(_text(official[META]))
        if m.univariate and int(m.pair_id) <= max_id
    ]
    if len(metas) != len(cdt_pairs):
        raise ValueError(
            f"{len(cdt_pairs)} cdt pairs but {len(metas)} official bivariate pairs up to {max_id}."
        )
    rows = []
    for meta, pair in zip(metas, cdt_pairs, strict=True):
        data = parse_pair(_text(official[f"pair{meta.pair_id}"]), f"pair{meta.pair_id}.txt")
        cause, effect = data[:, meta.cause[0] - 1], data[:, meta.effect[0] - 1]
        if len(cause) != len(pair.a) or not (
            np.allclose(cause, pair.a) and np.allclose(effect, pair.b)
        ):
            raise ValueError(
                f"cdt's {pair.pair_id} differs from the official pair{meta.pair_id}.txt put"
                " cause-first."
            )
        rows.append(
            PairMapRow(
                f"pair{int(pair.pair_id)}", meta.pair_id, meta.cause[0], meta.weight, len(cause)
            )
        )
    return rows


def format_pair_map(rows: list[PairMapRow]) -> str:
    lines = [",".join(MAP_COLUMNS)]
    lines += [f"{r.cdt_id},{r.pair_id},{r.cause_column},{r.weight:g},{r.n_points}" for r in rows]
    return "\n".join(lines) + "\n"
