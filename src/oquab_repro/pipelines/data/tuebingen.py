"""Tübingen cause-effect pairs (§5.4.2): the real pairs shipped with ``cdt``, in the official format.

``cdt`` 0.6.0 ships 99 real pairs as two CSVs: ``Tuebingen_pairs.csv`` (``SampleID, A, B``, each
cell a space-separated column of values) and ``Tuebingen_targets.csv`` (every target is 1, i.e.
``cdt`` has re-ordered every pair cause-first). Its copy has no per-pair weights and keeps only
univariate pairs (the official archive's multivariate pairs are absent and the ids are ``cdt``'s
own, ``pair1``..``pair99``). We write them as the official ``pairNNNN.txt`` + ``pairmeta.txt`` so
the causal stage reads the same format as the downloaded archive. Because a method with a bias
for column order would score 100 % on cause-first files, a seeded share of the pairs is written
effect-first, which ``pairmeta.txt`` records (the official archive mixes both orders too).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.lib.runtime import seed_everything
from oquab_repro.lib.tuebingen import CausePair, pair_files
from oquab_repro.params import TuebingenParams

log = logging.getLogger(__name__)

UNIFORM_WEIGHT = 1.0  # cdt's copy has no weights: every pair counts once, as in the thesis


def cdt_resources() -> Path:
    """Folder of the data files inside the installed ``cdt`` package (found without importing it)."""
    spec = importlib.util.find_spec("cdt")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package 'cdt' is not installed; `pip install cdt==0.6.0` (see pyproject.toml).")
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
            raise ValueError(f"{pairs_csv}: {sample_id} has columns of lengths {len(a)} and {len(b)}.")
        pair_id = f"{int(str(sample_id).removeprefix('pair')):04d}"
        pairs.append(CausePair(pair_id, a, b, bool(targets[sample_id] > 0), UNIFORM_WEIGHT))
    return sorted(pairs, key=lambda p: p.pair_id)


def convert_tuebingen(params: dict[str, Any], seed: int) -> dict[str, str]:
    """The ``cdt`` pairs as official files, a seeded ``effect_first_fraction`` of them written effect-first."""
    cfg = TuebingenParams.model_validate(params)
    pairs = read_cdt_pairs(cdt_resources())
    rng = seed_everything(seed)
    flip = rng.permutation(len(pairs))[: round(cfg.effect_first_fraction * len(pairs))]
    for i in flip:
        p = pairs[i]
        pairs[i] = CausePair(p.pair_id, p.b, p.a, not p.a_causes_b, p.weight)
    log.info("Tübingen: %d univariate pairs from cdt, %d written effect-first", len(pairs), len(flip))
    return pair_files(pairs)


def create_tuebingen_pipeline() -> Pipeline:
    return pipeline(
        [
            node(
                convert_tuebingen,
                ["params:tuebingen", "params:seed"],
                "tuebingen_pairs",
                name="convert_tuebingen",
                tags=["tuebingen"],
            )
        ]
    )
