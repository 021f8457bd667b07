"""`oquab-repro seeds`: which DVC experiments count as seed replicates, and the per_seed.csv the
report reads (columns seed, stage, key, value)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from oquab_repro.console import per_seed_rows, seed_replicates, seed_targets, seeded_metrics
from oquab_repro.pipelines.report.claims import per_seed, seed_table

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"profile": "mini", "seed": 0, "actions": {"holdout_fraction": 0.2}}


def _rev(
    name: str, seed: int, map_value: float, timestamp: str, error: dict | None = None, **changed
) -> dict:
    params = {**PARAMS, "seed": seed, "actions": {**PARAMS["actions"], **changed}}
    metrics = {
        "data/08_reporting/actions/metrics.json": {
            "data": {
                "map_voc10": {"pre_in1512": map_value},
                "train": {"nopre": {"train_seconds": 3.0}},
            }
        },
        "data/08_reporting/weak_voc/metrics.json": {
            "data": {
                "location_map": {"weak_sup": map_value / 2},
                "findings": {"weak_ge_full_images": True},
            }
        },
    }
    return {
        "rev": f"{name}-sha",
        "name": name,
        "error": error,
        "experiments": None,
        "data": {
            "timestamp": timestamp,
            "params": {"params.yaml": {"data": params}},
            "metrics": metrics,
        },
    }


def _shown(*revs: dict) -> list[dict]:
    """`dvc exp show --json`'s shape: the workspace row, then the commit with its experiments."""
    return [
        {"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
        {
            "rev": "c0ffee",
            "name": "main",
            "data": {},
            "error": None,
            "experiments": [{"name": r["name"], "revs": [r]} for r in revs],
        },
    ]


def test_replicates_are_experiments_differing_only_in_seed_newest_first() -> None:
    shown = _shown(
        _rev("seed-1", 1, 80.0, "2026-01-01T10:00:00"),
        _rev("seed-1-again", 1, 81.0, "2026-01-01T12:00:00"),  # newer run of seed 1 wins
        _rev("seed-2", 2, 70.0, "2026-01-01T10:00:00"),
        _rev(
            "lr-test", 3, 99.0, "2026-01-01T10:00:00", holdout_fraction=0.5
        ),  # another setup: not a replicate
        _rev("broken", 4, 1.0, "2026-01-01T10:00:00", error={"type": "ReproductionError"}),
    )
    picked = seed_replicates(shown, PARAMS, None)
    assert {s: r["name"] for s, r in picked.items()} == {1: "seed-1-again", 2: "seed-2"}
    assert list(seed_replicates(shown, PARAMS, [2])) == [2]


def test_per_seed_csv_feeds_the_report(tmp_path: Path) -> None:
    picked = seed_replicates(
        _shown(*(_rev(f"seed-{s}", s, 60.0 + s, "t") for s in (0, 1, 2))), PARAMS, None
    )
    table = pd.DataFrame(per_seed_rows(picked, "c0ffee"))
    assert not table.key.str.contains("seconds").any()  # wall times are not results of a seed
    assert set(table.stage) == {"actions", "weak_voc"}
    assert (table.commit == "c0ffee").all()
    path = tmp_path / "per_seed.csv"
    table.to_csv(path, index=False)
    seeds = seed_table({"seeds/per_seed": lambda: pd.read_csv(path)})
    assert per_seed(seeds, "actions:map_voc10.pre_in1512") == {0: 60.0, 1: 61.0, 2: 62.0}
    assert per_seed(seeds, "weak_voc:findings.weak_ge_full_images") == {0: 1.0, 1: 1.0, 2: 1.0}


def _stage(seed: int | None, deps: dict[str, str], outs: dict[str, str]) -> dict:
    entry = {
        "deps": [{"path": p, "md5": m} for p, m in deps.items()],
        "outs": [{"path": p, "md5": m} for p, m in outs.items()],
    }
    return entry | (
        {"params": {"params.yaml": {"seed": seed, "profile": "mini"}}} if seed is not None else {}
    )


def test_only_metrics_produced_under_the_seed_are_collected() -> None:
    """An experiment run for some stages keeps the other stages' metrics of the commit it started
    from: the lock tells which were made with this seed, from the upstream outputs it now holds."""
    m = "data/08_reporting/{}/metrics.json".format
    lock = {
        "stages": {
            "data": _stage(1, {}, {"data/01_raw/voc": "a.dir", m("data"): "d"}),
            "actions": _stage(
                1, {"data/01_raw/voc": "a.dir", "src/x.py": "s"}, {m("actions"): "e"}
            ),
            "transfer_report": _stage(
                None, {m("actions"): "e"}, {m("transfer"): "t"}
            ),  # reads no seed, fresh inputs
            "weak@voc": _stage(
                1, {"data/01_raw/voc": "OLD.dir"}, {m("weak_voc"): "w"}
            ),  # ran before data changed
            "gan_select": _stage(
                None, {m("weak_voc"): "w"}, {m("gan"): "g"}
            ),  # fresh input of a stale stage
            "causal": _stage(0, {}, {m("causal"): "c"}),  # the commit's seed-0 result
        }
    }
    assert seeded_metrics(lock, 1) == {m("data"), m("actions"), m("transfer")}
    assert seeded_metrics(lock, 0) == {m("causal")}
    picked = seed_replicates(_shown(_rev("seed-1", 1, 61.0, "t")), PARAMS, None)
    rows = per_seed_rows(picked, "c0ffee", {1: lock})
    assert {r["stage"] for r in rows} == {"actions"}  # weak_voc's numbers are seed 0's: left out


def test_default_targets_are_every_stage_but_the_report() -> None:
    targets = seed_targets(ROOT, None)
    assert "report" not in targets and {
        "actions",
        "weak",
        "causal",
        "gan_select",
        "transfer_report",
    } <= set(targets)
    assert seed_targets(ROOT, ["actions", "weak@voc"]) == ["actions", "weak@voc"]
    with pytest.raises(SystemExit, match="no stage"):
        seed_targets(ROOT, ["actoins"])


def test_a_committed_sweep_has_three_seeds_of_every_headline_stage() -> None:
    """The report states claims over seeds only with >= 3 of them (pipelines/report/claims.py), so
    a committed sweep must hold at least 3 seeds of every headline stage; the file is header-only
    until the first sweep is committed (`oquab-repro seeds run && oquab-repro seeds collect`)."""
    table = pd.read_csv(ROOT / "data/08_reporting/seeds/per_seed.csv")
    assert list(table.columns[:4]) == ["seed", "stage", "key", "value"]
    if table.empty:
        pytest.skip("no seed sweep committed yet (per_seed.csv is header-only)")
    for stage in ("causal", "transfer", "actions", "weak_voc", "weak_coco", "gan"):
        assert table[table.stage == stage].seed.nunique() >= 3, stage
