"""Tübingen pairs: the official-format writer and reader agree, and the cdt conversion is faithful.

The map from cdt's 99 pairs to the official ids, orientations and weights is committed data
(``reference/tuebingen_pairs.csv``): it is checked against cdt's data everywhere, and against the
official benchmark v1.0 wherever that is available (``TUEBINGEN_OFFICIAL``, by default
``../shared/data/tuebingen`` beside the repository).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from kedro_datasets.partitions import PartitionedDataset

from oquab_repro.lib.tuebingen import (
    CausePair,
    derive_pair_map,
    official_pair_ids,
    pair_files,
    pair_map,
    parse_pair_map,
    parse_pairmeta,
    read_pairs,
)
from oquab_repro.pipelines.data.tuebingen import (
    cdt_resources,
    convert_tuebingen,
    read_cdt_pairs,
    to_official,
)

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = Path(os.environ.get("TUEBINGEN_OFFICIAL", ROOT.parent / "shared" / "data" / "tuebingen"))


def _dataset(path) -> PartitionedDataset:
    # the same configuration as `tuebingen_pairs` in conf/base/catalog.yml
    return PartitionedDataset(path=str(path), dataset="text.TextDataset", filename_suffix=".txt")


def test_round_trip_through_partitioned_dataset(tmp_path):
    rng = np.random.default_rng(0)
    pairs = [
        CausePair("0001", rng.normal(size=50), rng.normal(size=50), True, 0.5),
        CausePair(
            "0002", np.round(rng.normal(size=7), 3), rng.integers(0, 9, 7).astype(float), False, 1.0
        ),
    ]
    _dataset(tmp_path).save(pair_files(pairs))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pair0001.txt",
        "pair0002.txt",
        "pairmeta.txt",
    ]
    (tmp_path / "pair0001_des.txt").write_text(
        "description files of the official archive are ignored\n"
    )
    loaded, skipped = read_pairs(_dataset(tmp_path).load())
    assert skipped == []
    for want, got in zip(pairs, loaded, strict=True):
        assert (
            got.pair_id == want.pair_id
            and got.a_causes_b == want.a_causes_b
            and got.weight == want.weight
        )
        np.testing.assert_array_equal(got.a, want.a)
        np.testing.assert_array_equal(got.b, want.b)


def test_reader_skips_multivariate_pairs_and_reads_tabs():
    files = {
        "pairmeta": "0001 2 2 1 1 0.25\n0052 5 8 1 4 0\n",
        "pair0001": "1\t10\n2\t20\n3\t30\n",
        "pair0052": "1 2 3 4 5 6 7 8\n",
    }
    pairs, skipped = read_pairs(files)
    assert skipped == ["0052"]
    assert len(pairs) == 1 and not pairs[0].a_causes_b and pairs[0].weight == 0.25
    np.testing.assert_array_equal(pairs[0].b, [10, 20, 30])


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"pair0001": "1 2\n"}, "no pairmeta.txt"),
        ({"pairmeta": "0001 1 1 2 2\n"}, "expected 6 fields"),
        (
            {"pairmeta": "0001 1 1 2 2 1\n0002 1 1 2 2 1\n"},
            r"pairmeta.txt lists pair0001.txt, pair0002.txt but the file is missing",
        ),
        (
            {"pairmeta": "0001 1 1 2 2 1\n", "pair0001": "1 2\n", "pair0002": "1 2\n"},
            r"no pairmeta.txt line for pair0002.txt",
        ),
        (
            {"pairmeta": "0001 1 1 2 2 1\n0001 1 1 2 2 1\n", "pair0001": "1 2\n"},
            "lists pair0001 more than once",
        ),
        (
            {"pairmeta": "0001 1 1 2 2 1\n", "pair0001": "1 2\n3\n"},
            "pair0001.txt: rows have different",
        ),
    ],
)
def test_reader_names_the_bad_file(files, message):
    with pytest.raises(ValueError, match=message):
        read_pairs(files)


def test_the_committed_map_is_consistent_with_cdt():
    """The map's own facts, and cdt's data through it (runs everywhere, CI included)."""
    rows = pair_map()
    assert [r.cdt_id for r in rows] == [f"pair{i}" for i in range(1, 100)]
    multivariate = {52, 53, 54, 55, 71, 105}
    assert official_pair_ids() == [i for i in range(1, 106) if i not in multivariate]  # in order
    assert {r.cause_column for r in rows} == {1, 2} and all(0 < r.weight <= 1 for r in rows)
    cdt = {f"pair{int(p.pair_id)}": p for p in read_cdt_pairs(cdt_resources())}
    assert [len(cdt[r.cdt_id].a) for r in rows] == [r.n_points for r in rows]
    # pairs of one source share their weight: the weights of a group sum to ~1
    # (pairs 1-4: DWD stations)
    assert sum(r.weight for r in rows[:4]) == pytest.approx(0.665, abs=1e-9)
    with pytest.raises(ValueError, match="tuebingen_pairs.csv:3: expected 5 fields"):
        parse_pair_map(
            "cdt_id,pair_id,cause_column,weight,n_points\npair1,0001,1,0.166,349\npair2,0002\n"
        )


@pytest.mark.skipif(
    not (OFFICIAL / "pairmeta.txt").is_file(),
    reason=f"official Tübingen benchmark not at {OFFICIAL}",
)
def test_the_committed_map_matches_the_official_benchmark():
    official = {p.stem: p.read_text for p in OFFICIAL.glob("*.txt")}
    derived = derive_pair_map(official, read_cdt_pairs(cdt_resources()))
    assert tuple(derived) == pair_map()
    files = pair_files(to_official(read_cdt_pairs(cdt_resources()), pair_map()))
    ours = {m.pair_id: m for m in parse_pairmeta(files["pairmeta"])}
    for meta in parse_pairmeta(official["pairmeta"]()):
        if meta.pair_id in ours:
            assert (
                ours[meta.pair_id].cause,
                ours[meta.pair_id].effect,
                ours[meta.pair_id].weight,
            ) == (meta.cause, meta.effect, meta.weight)
            np.testing.assert_allclose(
                read_pairs(
                    {
                        "pairmeta": f"{meta.pair_id} 1 1 2 2 1\n",
                        f"pair{meta.pair_id}": files[f"pair{meta.pair_id}"],
                    }
                )[0][0].a,
                read_pairs(
                    {
                        "pairmeta": f"{meta.pair_id} 1 1 2 2 1\n",
                        f"pair{meta.pair_id}": official[f"pair{meta.pair_id}"](),
                    }
                )[0][0].a,
                rtol=1e-12,
            )


def test_cdt_conversion_writes_the_official_layout():
    source = {p.pair_id: p for p in read_cdt_pairs(cdt_resources())}
    assert len(source) == 99 and all(p.a_causes_b for p in source.values())
    files = convert_tuebingen()
    pairs, skipped = read_pairs(files)
    assert skipped == [] and [p.pair_id for p in pairs] == [r.pair_id for r in pair_map()]
    for p, row in zip(pairs, pair_map(), strict=True):
        assert p.a_causes_b == (row.cause_column == 1) and p.weight == row.weight
        cause, effect = (p.a, p.b) if p.a_causes_b else (p.b, p.a)
        np.testing.assert_array_equal(cause, source[f"{int(row.cdt_id[4:]):04d}"].a)
        np.testing.assert_array_equal(effect, source[f"{int(row.cdt_id[4:]):04d}"].b)
    assert sum(not p.a_causes_b for p in pairs) == 25  # official orientation: 25 of 99 effect-first
