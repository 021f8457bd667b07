"""Project commands for the ``kedro`` CLI: ``kedro run`` starts itself under ``torchrun`` when the
stage it runs trains on several ranks.

DVC stages call ``kedro run --pipelines <stage> ...``. When every requested pipeline can use ranks
(:data:`oquab_repro.pipeline_registry.RANKED`) and the ``distributed`` section of ``params.yaml``
(or torchrun's own ``PET_*`` variables) asks for more than one process, this command replaces
itself with ``python -m torch.distributed.run ... -m kedro run <same arguments>``; inside torchrun
(``LOCAL_RANK`` set) it runs the pipeline as Kedro always does. Several machines: set
``PET_NNODES``, ``PET_RDZV_BACKEND=c10d`` and ``PET_RDZV_ENDPOINT=host:port`` on each of them
(see README, "Scaling out").
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from kedro.framework.cli.project import run as kedro_run

from oquab_repro.lib import distributed
from oquab_repro.params import read_params_file, validate_params

log = logging.getLogger(__name__)


def processes_per_node(setting: int | str, device: str) -> int:
    """Ranks on this machine: an explicit count, or ``auto`` = one per GPU
    (CUDA) else per CPU core."""
    if setting != "auto":
        return int(setting)
    if distributed.backend_for(device) == "nccl":
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, len(os.sched_getaffinity(0)))


def torchrun_argv(nproc: int, kedro_args: list[str]) -> list[str]:
    """The command that runs ``kedro <kedro_args>`` as ``nproc`` ranks on this machine.

    One machine gets a standalone rendezvous on a free port (several stages may run at once);
    with ``PET_RDZV_ENDPOINT`` set, torchrun reads the multi-node settings from ``PET_*``.
    """
    rendezvous = [] if os.environ.get("PET_RDZV_ENDPOINT") else ["--standalone"]
    return [
        sys.executable, "-m", "torch.distributed.run", *rendezvous,
        f"--nproc-per-node={os.environ.get('PET_NPROC_PER_NODE', nproc)}",
        "-m", "kedro", *kedro_args,
    ]  # fmt: skip


def launch_plan(pipelines: list[str], root: Path) -> int | None:
    """Ranks per machine to start under torchrun, or None to run here in this process: under
    torchrun already, a pipeline that does not use ranks, or one process on one machine. With
    ``PET_NNODES`` above 1 this machine joins the others even with one rank of its own."""
    from oquab_repro.pipeline_registry import RANKED

    if distributed.under_launcher() or not pipelines or not set(pipelines) <= set(RANKED):
        return None
    params = validate_params(read_params_file(root / "params.yaml"), root / "params.yaml")
    nproc = processes_per_node(params.distributed.nproc_per_node, params.device)
    multi_node = int(os.environ.get("PET_NNODES", "1").split(":")[-1]) > 1
    return nproc if nproc > 1 or multi_node else None


@click.group(name="oquab_repro")
def cli() -> None:
    """Project commands (they override Kedro's built-in ones of the same name)."""


@cli.command(
    "run",
    params=kedro_run.params,
    help=f"{kedro_run.help}\n\nTraining stages start themselves under torchrun when params.yaml's "
    "`distributed` section (or PET_* variables) asks for several processes.",
)
@click.pass_context
def run(ctx: click.Context, **kwargs: object) -> object:
    pipelines = list(
        kwargs.get("pipelines") or ([kwargs["pipeline"]] if kwargs.get("pipeline") else [])
    )
    nproc = launch_plan(pipelines, Path.cwd())
    if nproc is not None:
        argv = torchrun_argv(nproc, sys.argv[1:])
        log.info("Starting %d ranks: %s", nproc, " ".join(argv))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)
    return ctx.invoke(kedro_run, **kwargs)
