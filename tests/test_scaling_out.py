"""Several machines, one DVC remote with its run-cache and one MLflow server (README "Scaling out").

Each "machine" is a git clone of one bare repository; the clones sit side by side, so the default
remote of ``.dvc/config`` (``../oquab-repro-dvc-remote``, relative to the repository) is the same
directory for all of them, as an NFS mount or an S3 bucket would be. The stages run on a tiny
parameter set (seconds per stage) through real ``dvc`` commands.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_project
from tests.test_e2e_dvc import _env, _ran, _run

pytestmark = pytest.mark.slow

REMOTE = "oquab-repro-dvc-remote"  # the default remote's folder, next to the repositories
TARGET = "gan@lfw"  # a training stage with checkpoints, downstream of data and pretrain@in1000c
# Tiny settings: the data, pretrain@in1000c and gan@lfw chain in well under a minute.
TINY = {
    "data.mini.source_train_per_class": 6,
    "data.mini.source_val_per_class": 2,
    "data.mini.voc_trainval": 12,
    "data.mini.voc_test": 12,
    "data.mini.action_trainval": 12,
    "data.mini.gan_images": 96,
    "data.mini.workers": 1,
    "pretrain.mini.max_epochs": 1,
    "gan.mini.snapshot_epochs": [1],
    "gan.mini.train_images": 64,
    "gan.mini.eval_samples": 32,
    "gan.mini.grid_images": 8,
    "gan.mini.pixel_c2st.epochs": 1,
    "c2st.nn_epochs": 3,
    "twosample.sample_sizes": [20, 40],
    "twosample.repetitions": 2,
}
GIT = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]


def _set(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    assert leaf in tree, f"params.yaml has no {dotted}"
    tree[leaf] = value


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare git repository holding the project with :data:`TINY` parameters (no outputs)."""
    root = tmp_path_factory.mktemp("machines")
    project = copy_project(root / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in TINY.items():
        _set(params, key, value)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([*GIT, "commit", "-qam", "tiny params"], cwd=project, check=True)
    subprocess.run(["git", "clone", "-q", "--bare", project, root / "origin.git"], check=True)
    return root / "origin.git"


def _clone(origin: Path, name: str) -> Path:
    """A fresh machine: a git clone next to the others (so they share the default remote)."""
    dest = origin.parent / name
    subprocess.run(["git", "clone", "-q", origin, dest], check=True)
    return dest


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


OUTPUTS = (
    "data/06_models/pretrain_in1000c/weights.safetensors",
    "data/06_models/gan_lfw/generators.safetensors",
    "data/08_reporting/gan_lfw/metrics.json",
    "data/08_reporting/gan_lfw/scores.csv",
)


@pytest.fixture(scope="module")
def machine_a(origin: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """Machine A runs gan@lfw (and what it depends on) and shares outputs and run-cache."""
    a = _clone(origin, "a")
    proc = _run(["dvc", "repro", TARGET], a)
    pushed = _run([str(Path(sys.executable).parent / "oquab-repro"), "push"], a)
    print(pushed.stdout)  # noqa: T201 - shown with pytest -s
    return a, proc


def test_default_remote_is_a_folder_beside_the_repository(machine_a) -> None:
    a, proc = machine_a
    assert _ran(proc) == {"check", "data", "pretrain@in1000c", TARGET}
    remote = a.parent / REMOTE
    listed = _run(["dvc", "remote", "list"], a).stdout.split()
    assert listed == ["shared", str(remote), "(default)"], listed
    assert (remote / "files" / "md5").is_dir(), "dvc push wrote the outputs to the default remote"
    assert any((remote / "runs").rglob("*")), "dvc push --run-cache wrote run-cache entries"


def test_a_second_machine_restores_from_the_run_cache_instead_of_rerunning(
    origin: Path, machine_a
) -> None:
    """Machine B has the same commit and no dvc.lock: `dvc repro --pull` fetches the run-cache,
    checks out A's results (same bytes) and runs nothing; B's workspace is then up to date.

    With DVC's own `dvc push --run-cache` on A instead of `oquab-repro push`, B reran all three
    stages: the entries name metrics and plots (cache: false) that DVC 3 never pushes."""
    a, _ = machine_a
    b = _clone(origin, "b")
    assert not (b / "dvc.lock").exists()
    proc = _run(["dvc", "repro", "--pull", TARGET], b)
    log = proc.stdout + proc.stderr
    print(log)  # noqa: T201 - quoted in the README and the report (pytest -s)
    # check (params validation, a second) keeps a persist marker, so it is never run-cached
    assert _ran(proc) == {"check"}, f"B reran stages A had run:\n{log}"
    for stage in ("data", "pretrain@in1000c", TARGET):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in log
    for rel in OUTPUTS:
        assert _digest(b / rel) == _digest(a / rel), f"{rel} differs from machine A's"
    status = _run(["dvc", "status", TARGET], b).stdout
    assert "up to date" in status, status


def test_push_and_pull_round_trip_data_and_models(origin: Path, machine_a) -> None:
    """A commits dvc.lock and its metrics, pushes to git; a fresh clone's `dvc pull` restores
    every output."""
    a, _ = machine_a
    subprocess.run([*GIT, "add", "-A"], cwd=a, check=True)  # dvc.lock, metrics and plots
    subprocess.run([*GIT, "commit", "-qm", "results of gan@lfw"], cwd=a, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD"], cwd=a, check=True)
    # DVC's own push after `oquab-repro push`: nothing is left to send but run-cache entries
    assert "Everything is up to date" in _run(["dvc", "push"], a).stdout
    pushed = _run(["dvc", "push", "--run-cache"], a).stdout
    assert re.search(r"Everything is up to date|\d+ files? pushed", pushed), pushed
    c = _clone(origin, "c")
    proc = _run(["dvc", "pull", "--with-deps", TARGET], c)  # dvc.lock holds only these stages
    assert re.search(r"\d+ files? (added|fetched)", proc.stdout), proc.stdout
    for rel in (*OUTPUTS, "data/01_raw/gan/lfw"):
        assert (c / rel).exists(), f"dvc pull did not restore {rel}"
    for rel in OUTPUTS:
        assert _digest(c / rel) == _digest(a / rel)
    assert "up to date" in _run(["dvc", "status", TARGET], c).stdout
    # README: a plain `dvc pull --run-cache` fetches the run-cache, then stops on the outputs of
    # the stages this dvc.lock lacks (hence `dvc pull --with-deps STAGE`)
    plain = subprocess.run(
        ["dvc", "pull", "--run-cache"], cwd=c, env=_env(), capture_output=True, text=True
    )
    assert plain.returncode != 0, plain.stdout
    assert "data/07_model_output/patches/labelled.parquet" in plain.stderr, plain.stderr[-3000:]
    assert any((c / ".dvc/cache/runs").rglob("*")), "no run-cache entry pulled"


def test_experiments_travel_through_the_git_remote_and_the_dvc_remote(
    origin: Path, machine_a
) -> None:
    """`dvc exp push` sends an experiment's commit to git and its outputs to the DVC remote;
    another machine's `dvc exp pull` gets both: its checkout has A's metrics and figure."""
    a, _ = machine_a
    _run(["dvc", "exp", "run", "--name", "reps-3", "-S", "twosample.repetitions=3", "twosample"], a)
    outputs = (
        "data/08_reporting/twosample/metrics.json",
        "data/08_reporting/twosample/fig_calibration.png",
    )
    made = {rel: _digest(a / rel) for rel in outputs}
    _run(["dvc", "exp", "push", "origin", "reps-3"], a)
    d = _clone(origin, "d")
    _run(["dvc", "exp", "pull", "origin", "reps-3"], d)
    assert "reps-3" in _run(["dvc", "exp", "list", "--name-only"], d).stdout
    # `dvc exp apply` checks out every stage of dvc.yaml; this dvc.lock holds four of them
    _run(["dvc", "exp", "branch", "reps-3", "from-a"], d)
    subprocess.run(["git", "checkout", "-q", "from-a"], cwd=d, check=True)
    _run(["dvc", "checkout", "twosample"], d)  # the figure comes from the cache exp pull filled
    assert {rel: _digest(d / rel) for rel in outputs} == made


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(origin: Path) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on loopback: SQLite backend store, artifacts served from its own folder."""
    home = origin.parent / "mlflow-server"
    home.mkdir()
    url = f"http://127.0.0.1:{_free_port()}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1"]
    cmd += ["--port", url.rsplit(":", 1)[1], "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{home}/mlflow.db"]
    cmd += ["--serve-artifacts", "--artifacts-destination", str(home / "artifacts")]
    env = _env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # no job workers: tracking only
    with (home / "server.log").open("w") as log:  # its own process group: stopped whole below
        server = subprocess.Popen(
            cmd, cwd=home, env=env, stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):  # noqa: S310
                    break
            except OSError:
                assert server.poll() is None, (home / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start within 90 s"
                time.sleep(1)
        yield url, home
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        server.wait(timeout=30)


def test_two_machines_log_to_one_tracking_server_and_compare_reads_both(
    origin: Path, tracking_server
) -> None:
    """Each machine runs an experiment against the server; the artifacts are uploaded through it
    (none in a client's mlartifacts/), and `oquab-repro compare --from mlflow` on either machine
    reads both runs from the server."""
    url, home = tracking_server
    machines = {"on-e": 3, "on-f": 4}
    for name, reps in machines.items():
        clone = _clone(origin, name)
        cmd = ["dvc", "exp", "run", "--name", name, "-S", f"twosample.repetitions={reps}"]
        _run([*cmd, "twosample"], clone, MLFLOW_TRACKING_URI=url)
        assert not (clone / "mlartifacts").exists(), "artifacts written on the client"
        assert not (clone / "mlflow.db").exists()
    stored = sorted((home / "artifacts").rglob("twosample/metrics.json"))
    assert len(stored) == 2, stored
    cli = str(Path(sys.executable).parent / "oquab-repro")
    compare = _run([cli, "compare", "--from", "mlflow", *machines], clone, MLFLOW_TRACKING_URI=url)
    print(compare.stdout[-1500:])  # noqa: T201 - shown with pytest -s
    assert "Thesis tables: thesis vs on-e vs on-f" in compare.stdout
    differ = compare.stdout.split("Metrics that differ")[1]
    assert re.search(r"twosample\.(type1|power)\.\w+", differ), differ
