"""Tübingen cause-effect pairs (§5.4.2): the real pairs shipped with ``cdt``,
as the official benchmark.

``cdt`` 0.6.0 ships 99 real pairs as two CSVs: ``Tuebingen_pairs.csv`` (``SampleID, A, B``, each
cell a space-separated column of values) and ``Tuebingen_targets.csv`` (every target is 1: ``cdt``
has put every pair cause-first). They are exactly the official benchmark v1.0's bivariate pairs
0001–0105 without the multivariate 0052–0055, 0071 and 0105, in order, with ids renumbered
``pair1``..``pair99`` and without weights. The committed map ``reference/tuebingen_pairs.csv``
(derived from the official ``pairmeta.txt``, checked by tests/test_tuebingen.py) gives each its
official id, the column its cause occupies in the official file, and its weight, so this stage
writes the official ``pairNNNN.txt`` + ``pairmeta.txt`` for those 99 pairs: the causal stage then
reads the same files, ids, orientations and weights as the original code did.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.lib.tuebingen import MAP_FILE, CausePair, PairMapRow, pair_files, pair_map

log = logging.getLogger(__name__)


def cdt_resources() -> Path:
    """Folder of the data files inside the installed ``cdt`` package
    (found without importing it)."""
    spec = importlib.util.find_spec("cdt")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "package 'cdt' is not installed; `pip install cdt==0.6.0` (see pyproject.toml)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "resources"


def read_cdt_pairs(folder: Path) -> list[CausePair]:
    """Parse ``cdt``'s two CSVs into cause-first pairs (target 1: A → B, -1: B → A)."""
    pairs_csv, targets_csv = folder / "Tuebingen_pairs.csv", folder / "Tuebingen_targets.csv"
    table = pd.read_csv(pairs_csv).set_index("SampleID")
    targets = pd.read_csv(targets_csv).set_index("SampleID")["Target"]
    if set(table.index) != set(targets.index):
        raise ValueError(f"{pairs_csv} and {targets_csv} list different pairs.")
    pairs = []
    for sample_id, row in table.iterrows():
        a, b = (np.array(row[c].split(), dtype=np.float64) for c in ("A", "B"))
        if len(a) != len(b):
            raise ValueError(
                f"{pairs_csv}: {sample_id} has columns of lengths {len(a)} and {len(b)}."
            )
        pair_id = f"{int(str(sample_id).removeprefix('pair')):04d}"
        pairs.append(
            CausePair(pair_id, a, b, bool(targets[sample_id] > 0), 1.0)
        )  # cdt has no weights
    return sorted(pairs, key=lambda p: p.pair_id)


def to_official(pairs: list[CausePair], rows: tuple[PairMapRow, ...]) -> list[CausePair]:
    """``cdt``'s cause-first pairs under their official ids, column order and weights."""
    by_id = {f"pair{int(p.pair_id)}": p for p in pairs}
    if sorted(by_id) != sorted(r.cdt_id for r in rows):
        raise ValueError(
            f"cdt ships pairs {sorted(by_id)[:3]}... ({len(by_id)}) but {MAP_FILE} maps"
            f" {len(rows)}: pin cdt==0.6.0 (pyproject.toml), whose pairs the map was derived for."
        )
    official = []
    for row in rows:
        p = by_id[row.cdt_id]
        if len(p.a) != row.n_points:
            raise ValueError(
                f"cdt's {row.cdt_id} has {len(p.a)} points, {MAP_FILE} says {row.n_points}: pin"
                " cdt==0.6.0."
            )
        a, b = (p.a, p.b) if row.cause_column == 1 else (p.b, p.a)
        official.append(CausePair(row.pair_id, a, b, row.cause_column == 1, row.weight))
    return official


def convert_tuebingen() -> dict[str, str]:
    """The ``cdt`` pairs as the official files (ids, cause columns and weights of
    ``pairmeta.txt``)."""
    pairs = to_official(read_cdt_pairs(cdt_resources()), pair_map())
    log.info(
        "Tübingen: %d bivariate pairs from cdt as official pairs %s..%s, %d written effect-first",
        len(pairs),
        pairs[0].pair_id,
        pairs[-1].pair_id,
        sum(not p.a_causes_b for p in pairs),
    )
    return pair_files(pairs)


def create_tuebingen_pipeline() -> Pipeline:
    return pipeline(
        [
            node(
                convert_tuebingen,
                None,
                "tuebingen_pairs",
                name="convert_tuebingen",
                tags=["tuebingen"],
            )
        ]
    )
