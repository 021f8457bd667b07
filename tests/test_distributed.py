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

import pytest

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
    monkeypatch.setattr(registry, "RANKED", ("gan", "weak"))
    for var in ("LOCAL_RANK", "WORLD_SIZE", "PET_NNODES"):
        monkeypatch.delenv(var, raising=False)
    assert cli.launch_plan(["gan"], project) == 2
    assert cli.launch_plan(["gan", "report"], project) is None, (
        "a non-ranked pipeline runs in one process"
    )
    text = params.read_text().replace("nproc_per_node: 2", "nproc_per_node: 1", 1)
    params.write_text(text.replace("per_stage: {}", "per_stage: {gan: auto}", 1))
    cores = cli.processes_per_node("auto", "cpu")
    assert cli.launch_plan(["gan"], project) == (cores if cores > 1 else None), (
        "per_stage: gan runs on every core"
    )
    assert cli.launch_plan(["weak"], project) is None, "other stages keep nproc_per_node"
    params.write_text(params.read_text().replace("{gan: auto}", "{gan: 1}", 1))
    assert cli.launch_plan(["gan"], project) is None, "one process on one machine: no torchrun"
    monkeypatch.setenv("PET_NNODES", "2")
    assert cli.launch_plan(["gan"], project) == 1, "one rank here, others on other machines"
    monkeypatch.delenv("PET_NNODES")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.launch_plan(["gan"], project) is None, "already under torchrun"
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


@pytest.mark.parametrize("max_steps", [None, 2])
def test_global_batches_are_the_batches_one_process_trains_on(max_steps: int | None) -> None:
    """The order several ranks share is the one the single-process loop walks, epoch after epoch;
    under caps.steps_per_epoch both stop after the same first batches of each epoch."""
    import dataclasses

    import torch
    from torch.utils.data import TensorDataset

    from oquab_repro.lib import training
    from tests.ddp_probe import CFG

    seen: list[list[int]] = []

    def record(x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(targets.tolist())
        return x, targets

    n, cfg = 37, dataclasses.replace(CFG, max_epochs=3, batch_size=8, max_steps=max_steps)
    items = TensorDataset(torch.zeros(n, 4), torch.arange(n))
    net = torch.nn.Linear(4, n)
    objective = dataclasses.replace(training.CROSS_ENTROPY, augment=record)
    training.fit(net, items, items, cfg, torch.device("cpu"), None, objective=objective)
    generator = torch.Generator().manual_seed(cfg.seed)
    expected = [
        b.tolist()
        for _ in range(3)
        for b in training.global_batches(n, cfg.batch_size, generator)[:max_steps]
    ]
    assert seen == expected and len(expected) == 3 * (max_steps or 5)
    seen.clear()  # the shared loop (here in a world of one) walks the same capped batches
    generator = torch.Generator().manual_seed(cfg.seed)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.0)
    for _ in range(3):
        training.train_one_epoch_shared(
            net, items, generator, optimiser, objective, cfg, torch.device("cpu"), "shared"
        )
    assert seen == expected


def test_rank_batches_split_each_global_batch_and_weight_the_shares() -> None:
    import torch

    from oquab_repro.lib.training import rank_batches

    batches = [torch.tensor([5, 2, 7, 1, 0]), torch.tensor([3])]
    parts = [rank_batches(batches, distributed.World(r, 2)) for r in range(2)]
    assert [p[0] for p in parts] == [[[5, 2, 7], [3]], [[1, 0], [3]]]
    assert [p[1] for p in parts] == [[1.2, 2.0], [0.8, 0.0]], "rank 1 steps on a 0-weight item"
    for b in range(2):  # DDP averages over 2 ranks: the weights average to 1
        assert sum(parts[r][1][b] for r in range(2)) / 2 == 1.0


WEIGHT_TOLERANCE = 1e-6
"""DDP on 2 ranks vs 1 process, tests/ddp_probe.py (5 epochs, SGD momentum 0.9, weight decay, one
lr division, a last batch of 1 item): largest weight difference measured 8.9e-8 (weights up to
1.25); float32 sums in another order, nothing more."""


def _probe(tmp_path: Path, name: str, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    out, checkpoints = tmp_path / f"{name}.pt", tmp_path / f"{name}-checkpoints"
    launcher = (
        _torchrun("--standalone", f"--nproc-per-node={nproc}") if nproc > 1 else [sys.executable]
    )
    return subprocess.run(
        [*launcher, str(ROOT / "tests/ddp_probe.py"), str(out), str(checkpoints), *extra],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_ddp_on_two_ranks_reaches_the_weights_of_one_process_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    import torch

    runs = {"one": _probe(tmp_path, "one", 1), "two": _probe(tmp_path, "two", 2)}
    assert all(r.returncode == 0 for r in runs.values()), runs["two"].stderr[-3000:]
    one, two = (torch.load(tmp_path / f"{n}.pt") for n in ("one", "two"))
    gap = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert gap < WEIGHT_TOLERANCE, f"DDP weights differ by {gap}"
    h1, h2 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert h2["size"] == 2 and h1["lr"] == h2["lr"] and len(h1["lr"]) == 5
    for column in ("train_loss", "val_loss", "train_top1_error", "val_top1_error"):
        assert torch.allclose(torch.tensor(h1[column]), torch.tensor(h2[column]), atol=1e-6)
    killed = _probe(tmp_path, "again", 2, "2")  # rank 0 dies after writing epoch 2
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "again-checkpoints").iterdir()) == [
        "epoch-0001.pt",
        "epoch-0002.pt",
    ]
    resumed = _probe(tmp_path, "again", 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = torch.load(tmp_path / "again.pt")
    assert all(torch.equal(again[k], two[k]) for k in two), "a resumed DDP run ends elsewhere"
    assert json.loads((tmp_path / "again.json").read_text()) == h2


def _units_probe(tmp_path: Path, workdir: str, nproc: int) -> dict:
    import pickle

    out = tmp_path / f"{workdir}-{nproc}.pkl"
    launcher = (
        _torchrun("--standalone", f"--nproc-per-node={nproc}") if nproc > 1 else [sys.executable]
    )
    proc = subprocess.run(
        [*launcher, str(ROOT / "tests/units_probe.py"), str(out), str(tmp_path / workdir)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return pickle.loads(out.read_bytes())


def test_gan_cells_and_cgan_units_give_the_same_statistics_on_one_and_two_ranks(
    tmp_path: Path,
) -> None:
    """Measured: generator weights within 9.2e-8 (cells regrouped into other grouped convolutions),
    GAN statistics equal but the MMD (1.4e-10); CGAN-C2ST statistics identical."""
    import numpy as np
    import pandas as pd
    import torch

    one, two = _units_probe(tmp_path, "one", 1), _units_probe(tmp_path, "two", 2)
    assert (one["size"], two["size"]) == (1, 2)
    rows1, rows2 = (pd.DataFrame(r["gan"]["rows"]) for r in (one, two))
    pd.testing.assert_frame_equal(rows1, rows2, rtol=0, atol=1e-6)
    for cell, states in one["gan"]["snapshots"].items():
        for epoch, state in states.items():
            for key, value in state.items():
                other = two["gan"]["snapshots"][cell][epoch][key]
                torch.testing.assert_close(other, value, rtol=0, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "two/gan").iterdir()) == [
        "rank-0-of-2",
        "rank-1-of-2",
    ]
    s1, s2 = one["cgan"]["statistics"], two["cgan"]["statistics"]
    pd.testing.assert_frame_equal(s1[s1.test == "knn"], s2[s2.test == "knn"])
    np.testing.assert_allclose(s1.statistic, s2.statistic, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(one["cgan"]["baselines"], two["cgan"]["baselines"])
    assert two["cgan"]["info"]["units_trained"] == 5 and len(two["cgan"]["cached"]) == 5
    again = _units_probe(tmp_path, "two", 2)  # both ranks resume: rank 0's cache is the truth
    assert again["cgan"]["info"] == {**again["cgan"]["info"], "units_trained": 0, "units_cached": 5}
    pd.testing.assert_frame_equal(again["cgan"]["statistics"], s2)


def test_only_rank_zero_draws_progress_bars() -> None:
    script = "import oquab_repro, tqdm.auto\nfor _ in tqdm.auto.tqdm(range(3), desc='bar'): pass"
    drawn = {}
    for rank in ("0", "1"):
        proc = subprocess.run(
            [sys.executable, "-c", script],
            env=_env(RANK=rank),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        drawn[rank] = "bar" in proc.stderr
    assert drawn == {"0": True, "1": False}
