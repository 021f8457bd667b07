"""Tübingen pairs: the official-format writer and reader agree, and the cdt conversion is faithful."""

from __future__ import annotations

import numpy as np
import pytest
from kedro_datasets.partitions import PartitionedDataset

from oquab_repro.lib.tuebingen import CausePair, pair_files, parse_pairmeta, read_pairs
from oquab_repro.pipelines.data.tuebingen import cdt_resources, convert_tuebingen, read_cdt_pairs


def _dataset(path) -> PartitionedDataset:
    # the same configuration as `tuebingen_pairs` in conf/base/catalog.yml
    return PartitionedDataset(path=str(path), dataset="text.TextDataset", filename_suffix=".txt")


def test_round_trip_through_partitioned_dataset(tmp_path):
    rng = np.random.default_rng(0)
    pairs = [
        CausePair("0001", rng.normal(size=50), rng.normal(size=50), True, 0.5),
        CausePair("0002", np.round(rng.normal(size=7), 3), rng.integers(0, 9, 7).astype(float), False, 1.0),
    ]
    _dataset(tmp_path).save(pair_files(pairs))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pair0001.txt", "pair0002.txt", "pairmeta.txt"]
    (tmp_path / "pair0001_des.txt").write_text("description files of the official archive are ignored\n")
    loaded, skipped = read_pairs(_dataset(tmp_path).load())
    assert skipped == []
    for want, got in zip(pairs, loaded, strict=True):
        assert got.pair_id == want.pair_id and got.a_causes_b == want.a_causes_b and got.weight == want.weight
        np.testing.assert_array_equal(got.a, want.a)
        np.testing.assert_array_equal(got.b, want.b)


def test_reader_skips_multivariate_pairs_and_reads_tabs():
    files = {
        "pairmeta": "0001 2 2 1 1 0.25\n0052 5 8 1 4 0\n",
        "pair0001": "1\t10\n2\t20\n3\t30\n",
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
        ({"pairmeta": "0001 1 1 2 2 1\n"}, "pair0001.txt is missing"),
        ({"pairmeta": "0001 1 1 2 2 1\n", "pair0001": "1 2\n3\n"}, "pair0001.txt: rows have different"),
    ],
)
def test_reader_names_the_bad_file(files, message):
    with pytest.raises(ValueError, match=message):
        read_pairs(files)


def test_cdt_conversion_keeps_data_and_truth():
    source = {p.pair_id: p for p in read_cdt_pairs(cdt_resources())}
    assert len(source) == 99 and all(p.a_causes_b for p in source.values())
    files = convert_tuebingen({"effect_first_fraction": 0.5}, seed=0)
    metas = parse_pairmeta(files["pairmeta"])
    assert sum(m.cause[0] == 2 for m in metas) == 50
    pairs, skipped = read_pairs(files)
    assert skipped == [] and len(pairs) == 99
    for p in pairs:
        cause, effect = (p.a, p.b) if p.a_causes_b else (p.b, p.a)
        np.testing.assert_array_equal(cause, source[p.pair_id].a)
        np.testing.assert_array_equal(effect, source[p.pair_id].b)
