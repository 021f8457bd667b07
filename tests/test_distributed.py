"""torch.distributed plumbing: sharing units among ranks, gathering them, and Kedro under torchrun.

Processes are real (``python -m torch.distributed.run``, gloo on CPU); the multi-node case runs two
launchers that meet through a c10d rendezvous on 127.0.0.1, as two machines would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from oquab_repro import cli
from oquab_repro.lib import distributed
from tests.conftest import ROOT, copy_project


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "PET_"))}
    env.update(
        {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "KEDRO_DISABLE_TELEMETRY": "1", **extra}
    )
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def test_assignment_balances_costs_and_is_deterministic() -> None:
    costs = [5, 1, 4, 2, 3, 3]
    owner = distributed.assignment(costs, 2)
    loads = [sum(c for c, r in zip(costs, owner, strict=True) if r == k) for k in range(2)]
    assert sorted(loads) == [9, 9]
    assert owner == distributed.assignment(costs, 2)
    assert distributed.assignment(costs, 1) == [0] * len(costs)


def test_world_of_one_keeps_everything_local() -> None:
    assert distributed.world() == distributed.World(0, 1, 0)
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    assert distributed.map_units(lambda u: u * 10, [3, 1, 2]) == [30, 10, 20]
    assert distributed.gather("x") == ["x"]


def _single_process(tmp_path: Path) -> dict:
    out = tmp_path / "single.json"
    subprocess.run(
        [sys.executable, str(ROOT / "tests/dist_probe.py"), str(out)], env=_env(), check=True
    )
    return json.loads(out.read_text())


def test_two_ranks_share_units_and_gather_the_same_results(tmp_path: Path) -> None:
    out = tmp_path / "two.json"
    subprocess.run(
        _torchrun(
            "--standalone", "--nproc-per-node=2", str(ROOT / "tests/dist_probe.py"), str(out)
        ),
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    two, one = json.loads(out.read_text()), _single_process(tmp_path)
    assert two["size"] == 2 and one["size"] == 1
    assert two["results"] == one["results"]
    assert sorted(u for part in two["shards"] for u in part) == list(range(11))
    assert all(two["shards"]), "each rank gets a share"
    assert two["token"] == "from-rank-0"


def test_two_nodes_meet_through_a_c10d_rendezvous_on_loopback(tmp_path: Path) -> None:
    """Two launchers with --nnodes 2 and one c10d endpoint: what two machines would run."""
    out, endpoint = tmp_path / "nodes.json", f"127.0.0.1:{_free_port()}"
    node = _torchrun(
        "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
        "--rdzv-id=probe", str(ROOT / "tests/dist_probe.py"), str(out),
    )  # fmt: skip
    procs = [
        subprocess.Popen(node, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
    two = json.loads(out.read_text())
    assert two["size"] == 2 and two["results"] == _single_process(tmp_path)["results"]


def test_launch_plan_starts_torchrun_only_for_ranked_pipelines(monkeypatch, tmp_path: Path) -> None:
    import oquab_repro.pipeline_registry as registry

    project = copy_project(tmp_path / "repo")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("nproc_per_node: 1", "nproc_per_node: 2", 1))
    monkeypatch.setattr(registry, "RANKED", ("gan",))
    for var in ("LOCAL_RANK", "WORLD_SIZE", "PET_NNODES"):
        monkeypatch.delenv(var, raising=False)
    assert cli.launch_plan(["gan"], project) == 2
    assert cli.launch_plan(["gan", "report"], project) == 1, (
        "a non-ranked pipeline runs in one process"
    )
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.launch_plan(["gan"], project) == 1, "already under torchrun"
    argv = cli.torchrun_argv(2, ["run", "--pipelines", "gan"])
    assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert argv[-5:] == ["-m", "kedro", "run", "--pipelines", "gan"]


def test_kedro_under_torchrun_writes_outputs_and_one_mlflow_run_from_rank_zero(
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    project = copy_project(tmp_path / "repo")
    proc = subprocess.run(
        _torchrun(
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "kedro",
            "run",
            "--pipelines",
            "data",
            "--tags",
            "tuebingen",
        ),
        cwd=project,
        env=_env(PYTHONPATH=str(project / "src")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list((project / "data/01_raw/tuebingen").glob("pair*.txt"))) >= 99
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("oquab-repro").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert proc.stderr.count("joined the gloo process group") == 2
