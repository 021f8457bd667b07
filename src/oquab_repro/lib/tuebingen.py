"""The Tübingen cause-effect pairs in their official on-disk format (Mooij et al., 2016).

The official archive holds one ``pairNNNN.txt`` per pair (whitespace-separated columns, one row
per observation) and a ``pairmeta.txt`` whose rows read
``NNNN  cause_first  cause_last  effect_first  effect_last  weight`` (1-based column numbers).
The same reader serves the pairs we convert from ``cdt`` and the downloaded archive, so the causal
stage never depends on where the files came from. Files are exchanged as ``{name: text}``
mappings, which is what Kedro's ``PartitionedDataset`` of text files loads and saves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

META = "pairmeta"


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
    """A univariate pair as stored on disk: columns ``a`` (first) and ``b`` (second) and the truth."""

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
        raise ValueError(f"{source}: empty pair file; re-create it with `dvc repro data_tuebingen`.")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{source}: rows have different numbers of columns {sorted(widths)}.")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{source}: non-numeric value ({exc}).") from None


def format_pairmeta(metas: list[PairMeta]) -> str:
    return "".join(
        f"{m.pair_id} {m.cause[0]} {m.cause[1]} {m.effect[0]} {m.effect[1]} {m.weight:g}\n" for m in metas
    )


def parse_pairmeta(text: str, source: str = f"{META}.txt") -> list[PairMeta]:
    """Parse ``pairmeta.txt``; every row needs the pair id, four column numbers and a weight."""
    metas = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise ValueError(f"{source}:{lineno}: expected 6 fields (id, 4 columns, weight), got {len(fields)}.")
        try:
            c0, c1, e0, e1 = (int(f) for f in fields[1:5])
            weight = float(fields[5])
        except ValueError:
            raise ValueError(f"{source}:{lineno}: columns must be integers and the weight a number.") from None
        metas.append(PairMeta(fields[0].zfill(4), (c0, c1), (e0, e1), weight))
    return metas


def _text(entry: str | Callable[[], str]) -> str:
    return entry() if callable(entry) else entry


def read_pairs(files: Mapping[str, str | Callable[[], str]]) -> tuple[list[CausePair], list[str]]:
    """Univariate pairs in ``pairmeta`` order, and the ids of the multivariate ones left out.

    ``files`` maps names without suffix (``pairmeta``, ``pair0001``, ...) to texts or to loaders
    returning texts; other files of the official archive (``pair0001_des``, README) are ignored.
    """
    if META not in files:
        raise ValueError(f"no {META}.txt among the Tübingen files; run `dvc repro data_tuebingen`.")
    pairs, skipped = [], []
    for meta in parse_pairmeta(_text(files[META])):
        if not meta.univariate:
            skipped.append(meta.pair_id)
            continue
        name = f"pair{meta.pair_id}"
        if name not in files:
            raise ValueError(f"{META}.txt lists {name} but {name}.txt is missing.")
        data = parse_pair(_text(files[name]), f"{name}.txt")
        columns = {meta.cause[0], meta.effect[0]}
        if columns != {1, 2} or data.shape[1] != 2:
            raise ValueError(f"{name}.txt: univariate pair must have columns 1 and 2, got {data.shape[1]} columns.")
        pairs.append(CausePair(meta.pair_id, data[:, 0], data[:, 1], meta.cause[0] == 1, meta.weight))
    return pairs, skipped


def pair_files(pairs: list[CausePair]) -> dict[str, str]:
    """The official layout of ``pairs``: one text per pair plus ``pairmeta``."""
    files = {f"pair{p.pair_id}": format_pair(np.column_stack([p.a, p.b])) for p in pairs}
    metas = [PairMeta(p.pair_id, (1, 1) if p.a_causes_b else (2, 2), (2, 2) if p.a_causes_b else (1, 1), p.weight) for p in pairs]
    files[META] = format_pairmeta(metas)
    return files
