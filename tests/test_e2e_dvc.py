"""End to end on a fresh copy: `dvc repro` builds the mini thesis, is incremental, and tracks runs.

This is the smoke path CI always runs (marked slow only so developers can skip it locally with
`pytest -m "not slow"`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_project
from tests.test_check_stage import set_param

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
def built(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess | None]:
    """A fresh copy of the project after a full mini `dvc repro`, and that run's output.

    Developer hook (CI never sets it): when the environment variable OQUAB_E2E_BUILT names a
    finished workspace (a copy of the project at the current code after a complete `dvc repro`,
    with its own DVC cache and, like copy_project's, a git HEAD holding sources but no outputs),
    it is copied here instead of built (the build costs ~30 minutes on 2 busy cores), and the
    run's output is None: test_repro_builds_every_stage then checks only that nothing is stale.
    """
    finished = os.environ.get("OQUAB_E2E_BUILT")
    if finished:
        repo = tmp_path_factory.mktemp("repo") / "finished"
        shutil.copytree(finished, repo, symlinks=True)
        return repo, None
    repo = copy_project(tmp_path_factory.mktemp("repo"))
    return repo, _run(["dvc", "repro"], repo)


def test_repro_builds_every_stage(built) -> None:
    repo, proc = built
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        names = {s.name for s in dvc.index.stages}
        if proc is not None:  # None: a finished workspace given by OQUAB_E2E_BUILT
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


def _fingerprint(repo: Path) -> dict[str, str]:
    """sha1 of every file under data/ and of dvc.lock: what a refused command must leave as it
    was."""
    files = [p for p in (repo / "data").rglob("*") if p.is_file()] + [repo / "dvc.lock"]
    return {p.relative_to(repo).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def _up_to_date(repo: Path) -> None:
    status = _run(["dvc", "status"], repo).stdout
    assert "Data and pipelines are up to date" in status, status


# the files a README command may edit (remote settings) and the test restores after each one
SETTINGS = ("params.yaml", "dvc.yaml", ".dvc/config", ".dvc/config.local")
RESTORED_ONLY = {".dvc/config", ".dvc/config.local"}  # the rest must come out unchanged


def _settings(repo: Path) -> dict[str, bytes | None]:
    return {rel: (repo / rel).read_bytes() if (repo / rel).is_file() else None for rel in SETTINGS}


def _restore(repo: Path, saved: dict[str, bytes | None]) -> None:
    for rel, data in saved.items():
        if data is None:
            (repo / rel).unlink(missing_ok=True)
        else:
            (repo / rel).write_bytes(data)


def test_readme_commands_run_on_the_finished_workspace(built) -> None:
    """Every README command tests/readme_commands.py declares `OnFinished` runs here, exits 0 and
    prints what it is for; none of them changes an output, dvc.lock, params.yaml or dvc.yaml
    (`oquab-repro dvc-yaml` rewrites dvc.yaml with the same bytes)."""
    from tests.readme_commands import COMMANDS, OnFinished

    repo, _ = built
    before, saved = _fingerprint(repo), _settings(repo)
    for command, entry in COMMANDS.items():
        if not isinstance(entry, OnFinished):
            continue
        try:
            proc = _run(shlex.split(entry.run), repo)
            shown = _run(shlex.split(entry.show), repo) if entry.show else proc
            out = shown.stdout + shown.stderr
            assert re.search(entry.expect, out), f"`{entry.run}` (README: `{command}`):\n{out}"
            for undo in entry.undo:
                _run(shlex.split(undo), repo)
            changed = {k for k, v in _settings(repo).items() if v != saved[k]} - RESTORED_ONLY
            assert not changed, f"`{entry.run}` changed {changed}"
        finally:
            _restore(repo, saved)
    assert _fingerprint(repo) == before
    _up_to_date(repo)


VOC = "data/01_raw/voc"
JPEG = f"{VOC}/VOCdevkit/VOC2007/JPEGImages/000001.jpg"  # first of trainval: patches reads it


@contextmanager
def _params(repo: Path, edit: Callable[[str], str]) -> Iterator[None]:
    """params.yaml edited for the duration (and as it was afterwards, whatever DVC did to it)."""
    path = repo / "params.yaml"
    text = path.read_text()
    path.write_text(edit(text))
    try:
        yield
    finally:
        path.write_text(text)


def _set(**changes: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        for key, value in changes.items():
            text = set_param(text, key.replace("__", "."), value)
        return text

    return edit


@contextmanager
def _truncated(path: Path) -> Iterator[None]:
    data, times = path.read_bytes(), path.stat()
    path.write_bytes(data[: len(data) // 3])
    try:
        yield
    finally:
        path.write_bytes(data)
        os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))  # DVC's state sees no change


@contextmanager
def _moved(path: Path) -> Iterator[None]:
    aside = path.with_name(path.name + "-aside")
    path.rename(aside)
    try:
        yield
    finally:
        aside.rename(path)


KEPT = "check: stopped before any stage ran; every output is as it was"


def _experiments(repo: Path) -> str:
    return _run(["dvc", "exp", "list", "--all-commits", "--name-only"], repo).stdout


def test_faults_on_the_finished_workspace_are_refused_and_lose_nothing(built) -> None:
    """Issue 14's faults, applied to the finished mini workspace: each exits non-zero with a
    message naming the key or file and the fix, and every file under data/ and dvc.lock keeps its
    bytes; no experiment is recorded and, at the end, nothing is stale."""
    repo, _ = built
    jpeg, voc = repo / JPEG, repo / VOC

    def twice(text: str) -> str:
        return text + "seed: 1\n"

    faults = {  # name: (fault, command, what the message must say)
        "distances.n_points: -5": (
            _params(repo, _set(distances__n_points="-5")),
            ["dvc", "repro"],
            ["invalid value for 'distances.n_points' (-5): Input should be greater than 0", KEPT],
        ),
        "unknown profile in an experiment": (
            _params(repo, lambda text: text),  # DVC writes -S into params.yaml: put back after
            ["dvc", "exp", "run", "-S", "profile=medium"],
            ["invalid value for 'profile' ('medium'): Input should be 'mini' or 'full'", KEPT],
        ),
        "full profile without its data": (
            _params(repo, _set(profile="full", data__full__mirror="http://127.0.0.1:9")),
            ["dvc", "repro"],
            [
                "data.full.imagenet_path = /path/to/ILSVRC2012: not found; point it at",
                "127.0.0.1:9 does not answer; put VOCtrainval_06-Nov-2007.tar there or get online",
                KEPT,
            ],
        ),
        # DVC reads params.yaml before any stage runs: its own message names the file, key, lines
        "a key given twice": (
            _params(repo, twice),
            ["dvc", "repro"],
            ["unable to read: 'params.yaml'", 'found duplicate key "seed"'],
        ),
        "a key given twice, checked": (
            _params(repo, twice),
            ["oquab-repro", "check"],
            ["params.yaml: key 'seed' given twice (lines ", "): keep one"],
        ),
        "real_label below fake_label": (
            _params(repo, _set(causal__cgan__real_label="0.2", causal__cgan__fake_label="0.8")),
            ["dvc", "repro"],
            ["causal.cgan.fake_label (0.8) must be below causal.cgan.real_label (0.2)", KEPT],
        ),
        "truncated VOC JPEG": (
            _truncated(jpeg),
            ["kedro", "run", "--pipelines", "patches"],
            [f"{jpeg}: unreadable image", "data.skip_corrupt: true"],
        ),
        "VOC root missing": (
            _moved(voc),
            ["kedro", "run", "--pipelines", "patches"],
            [str(voc), "dvc repro data"],
        ),
    }
    before, experiments = _fingerprint(repo), _experiments(repo)
    uri = f"sqlite:///{repo.parent}/faults-mlflow.db"  # the workspace's own runs stay as they were
    for name, (fault, argv, messages) in faults.items():
        with fault:
            proc = subprocess.run(
                argv, cwd=repo, env=_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True
            )
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, f"{name}: `{' '.join(argv)}` succeeded:\n{out[-3000:]}"
        for message in messages:
            assert message in out, f"{name}: no {message!r} in:\n{out[-3000:]}"
        if KEPT in messages:  # refused by the check stage: one line per problem, no traceback
            assert "Traceback" not in out, f"{name}:\n{out[-3000:]}"
        assert _fingerprint(repo) == before, f"{name}: an output or dvc.lock changed"
    assert _experiments(repo) == experiments, "a refused `dvc exp run` was recorded"
    _up_to_date(repo)


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
    # a cheaper search (9 angles instead of 90): the rerun is what is tested, not its cost
    params.write_text(re.sub(r"theta_steps: 90\b", "theta_steps: 9", text, count=1))
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
    pair = repo / "data/01_raw/tuebingen/pair0001.txt"  # the cheapest stage (about a second)
    kept = pair.read_bytes()
    pair.unlink()
    proc = _run(
        ["kedro", "run", "--pipelines", "data", "--tags", "tuebingen"],
        repo,
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
    )
    assert pair.read_bytes() == kept  # the stage ran to the end
    assert proc.stderr.count("is unavailable") == 1


def test_experiments_show_up_in_exp_show_compare_and_plots_diff(built) -> None:
    repo, _ = built
    for name, reps in (("reps-8", 8), ("reps-4", 4)):
        # two small sample sizes: what is tested is DVC's bookkeeping (the full grid costs minutes)
        settings = [f"twosample.repetitions={reps}", "twosample.sample_sizes=[100,300]"]
        proc = _run(
            ["dvc", "exp", "run", "--name", name, *(a for s in settings for a in ("-S", s))], repo
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
    # README: `dvc exp apply EXP` brings an earlier experiment's parameters and results back
    _run(["dvc", "exp", "apply", "reps-8"], repo)
    applied = yaml.safe_load((repo / "params.yaml").read_text())
    assert applied["twosample"]["repetitions"] == 8
    metrics = "data/08_reporting/twosample/metrics.json"
    assert (
        json.loads((repo / metrics).read_text())
        == exps["reps-8"]["data"]["metrics"][metrics]["data"]
    )


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
