"""End to end on a fresh copy: `dvc repro` builds the mini thesis, is incremental, and tracks runs.

This is the smoke path CI always runs (marked slow only so developers can skip it locally with
`pytest -m "not slow"`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import copy_project

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DO_NOT_TRACK="1", KEDRO_DISABLE_TELEMETRY="1", DVC_NO_ANALYTICS="1", **extra)
    return env


def _run(cmd: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(**extra), capture_output=True, text=True)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc


def _ran(proc: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    repo = copy_project(tmp_path_factory.mktemp("repo"))
    return repo, _run(["dvc", "repro"], repo)


def test_repro_builds_every_stage(built) -> None:
    repo, proc = built
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        names = {s.name for s in dvc.index.stages}
        assert _ran(proc) == names
        assert dvc.status() == {}, "after dvc repro every stage is up to date"
    fits = json.loads((repo / "data/08_reporting/distances/metrics.json").read_text())
    assert {
        "kl",
        "js",
        "emd",
        "nll",
    } <= fits.keys()  # sinkhorn only when distances.criteria lists it
    assert (repo / "data/08_reporting/distances/fig_fits.png").stat().st_size > 10_000


def test_second_repro_does_nothing_quickly(built) -> None:
    repo, _ = built
    start = time.monotonic()
    proc = _run(["dvc", "repro"], repo)
    elapsed = time.monotonic() - start
    assert _ran(proc) == set()
    assert elapsed < 15, f"no-op dvc repro took {elapsed:.1f}s"


def test_mlflow_has_one_tagged_run_per_stage(built) -> None:
    from mlflow import MlflowClient

    repo, _ = built
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("oquab-repro").experiment_id])
    by_stage = {r.data.tags["stage"]: r for r in runs}
    assert {"distances", "twosample"} <= by_stage.keys()
    run = by_stage["distances"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["profile"] == "mini"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", run.data.tags["git_commit"])
    assert run.data.tags["dvc_exp"] == "workspace" and run.data.tags["dvc_stage"] == "distances"
    assert run.data.params["distances.parzen_radius"] == "0.3"
    assert "emd.theta_deg" in run.data.metrics
    assert {"fig_fits.png", "metrics.json"} <= {
        Path(a.path).name for a in client.list_artifacts(run.info.run_id, "distances")
    }


def test_changing_a_distances_param_reruns_only_distances_and_the_report(built) -> None:
    repo, _ = built
    params = repo / "params.yaml"
    text = params.read_text()
    # a cheaper search (18 angles instead of 90): the rerun is what is tested, not its cost
    params.write_text(re.sub(r"theta_steps: 90\b", "theta_steps: 18", text, count=1))
    assert params.read_text() != text
    proc = _run(["dvc", "repro"], repo)
    # check (upstream of every stage) revalidates params.yaml; its output is unchanged, so only
    # distances and the report (the only stage downstream of it) rerun
    assert _ran(proc) == {"check", "distances", "report"}


def test_unreachable_tracking_store_does_not_fail_the_stage(built) -> None:
    repo, _ = built
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    metrics = repo / "data/08_reporting/twosample/metrics.json"
    metrics.unlink()
    proc = _run(
        ["kedro", "run", "--pipelines", "twosample"],
        repo,
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
    )
    assert metrics.is_file()
    assert proc.stderr.count("is unavailable") == 1


def test_experiments_show_up_in_exp_show_compare_and_plots_diff(built) -> None:
    repo, _ = built
    for name, reps in (("reps-8", 8), ("reps-4", 4)):
        proc = _run(
            ["dvc", "exp", "run", "--name", name, "-S", f"twosample.repetitions={reps}"], repo
        )
        assert "twosample" in _ran(proc) and "distances" not in _ran(proc)
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo).stdout)
    exps = {
        rev["name"]: rev
        for row in shown
        for exp in row.get("experiments") or []
        for rev in exp["revs"]
    }
    assert exps["reps-4"]["data"]["params"]["params.yaml"]["data"]["twosample"]["repetitions"] == 4
    compare = _run(
        [str(Path(sys.executable).parent / "oquab-repro"), "compare", "reps-8", "reps-4"], repo
    ).stdout
    assert "Thesis tables: thesis vs reps-8 vs reps-4" in compare
    assert re.search(r"twosample\.(type1|power)\.\w+", compare.split("Metrics that differ")[1])
    plots = _run(["dvc", "plots", "diff", "reps-8", "reps-4", "--json"], repo).stdout
    assert "twosample_power" in plots and "twosample_type1" in plots


def _results(path: Path) -> dict:
    """A metrics.json without its wall times (they vary with the machine's load, not the run)."""
    from oquab_repro.tracking import flatten

    return {k: v for k, v in flatten(json.loads(path.read_text())).items() if "seconds" not in k}


def test_a_training_stage_gives_the_same_metrics_and_weight_bytes_twice(built) -> None:
    """README "Determinism": same params and seed on one machine give bit-identical results.

    `actions` trains three networks (dropout, shuffling, seeded holdout); rerunning it from scratch
    (checkpoints removed, `dvc repro -f`) must reproduce its metrics and its weights byte for byte,
    so DVC sees unchanged outputs and nothing downstream goes stale because of the rerun.
    """
    repo, _ = built
    weights = sorted(repo.glob("data/06_models/actions_*/weights.safetensors"))
    assert len(weights) == 3
    before = {p: p.read_bytes() for p in weights}
    metrics = repo / "data/08_reporting/actions/metrics.json"
    first = _results(metrics)
    for folder in repo.glob("data/06_models/actions_*/checkpoints"):
        for ckpt in folder.iterdir():
            ckpt.unlink()  # no resume: train again from the seed
    proc = _run(["dvc", "repro", "--force", "--single-item", "actions"], repo)
    assert _ran(proc) == {"actions"}
    assert _results(metrics) == first
    for path, data in before.items():
        assert path.read_bytes() == data, (
            f"{path.relative_to(repo)} differs between two identical runs"
        )


def test_seed_sweep_runs_experiments_and_collects_per_seed_csv(built) -> None:
    """`oquab-repro seeds run` makes one DVC experiment per seed; `collect`
    writes what the report reads."""
    repo, _ = built
    cli = str(Path(sys.executable).parent / "oquab-repro")
    proc = _run([cli, "seeds", "run", "--seeds", "0", "1", "--stages", "twosample"], repo)
    assert "seed 1:" in proc.stdout
    _run([cli, "seeds", "collect"], repo)
    import pandas as pd

    table = pd.read_csv(repo / "data/08_reporting/seeds/per_seed.csv")
    assert set(table.stage) >= {"twosample"} and set(table.seed) == {0, 1}
    assert set(zip(table.seed, table.experiment, strict=True)) == {(0, "seed-0"), (1, "seed-1")}
    assert {"type1.knn", "power.knn"} <= set(table[table.stage == "twosample"].key)
    assert not table.key.str.contains("seconds").any()
    proc = _run(["dvc", "status", "report"], repo)
    assert "per_seed.csv" in proc.stdout  # the report depends on the sweep
