"""torch.distributed for the stages: who am I, which share of the work is
mine, and gathering it back.

A stage that trains runs as one process per GPU (or per CPU core) under ``torchrun``; every rank
executes the same Kedro pipeline. Single networks use DistributedDataParallel (see
``lib/training.py``); grids and ensembles hand each rank a share of their independent units with
:func:`shard` and put the results back together with :func:`gather` (every rank gets them all, so
the nodes downstream stay identical on every rank). Only rank 0 writes: the Kedro hook in
``oquab_repro.hooks`` swaps the other ranks' outputs for in-memory datasets.

Outside ``torchrun`` (world size 1) every function degrades to the single-process behaviour, so the
same node code runs unchanged in both cases.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

TIMEOUT = datetime.timedelta(hours=2)
"""Collectives wait this long: rank 0 may spend a while writing files the others do not write."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (``rank`` 0 of 1 outside ``torchrun``)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_world() -> World:
    return World(
        rank=int(os.environ.get("RANK", 0)),
        size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def world() -> World:
    """The current world: from the process group when it is up, else from torchrun's variables."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_world().local_rank)
    return _env_world()


def is_main() -> bool:
    """True on the rank that writes outputs, checkpoints and MLflow runs (rank 0)."""
    return world().is_main


def under_launcher() -> bool:
    """True when this process was started by ``torchrun`` (it sets ``LOCAL_RANK`` and friends)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def backend_for(device: str) -> str:
    """NCCL for CUDA devices, gloo otherwise (CPU, and MPS which NCCL does not serve)."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if wants_cuda else "gloo"


def init(device: str = "auto") -> World:
    """Join the process group that ``torchrun`` describes (no-op for a world of one or when joined).

    With NCCL each rank takes the GPU of its local rank, so ``device: auto`` resolves per rank.
    """
    env = _env_world()
    if env.size <= 1 or not dist.is_available() or dist.is_initialized():
        return world()
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    log.info("Rank %d of %d joined the %s process group", env.rank, env.size, backend)
    return world()


def shutdown() -> None:
    """Leave the process group (after a last barrier so no rank exits while others still talk)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def assignment(costs: Sequence[float], size: int) -> list[int]:
    """Rank of each unit: longest units first, each to the least-loaded rank (LPT scheduling).

    Deterministic (ties go to the lower index and rank), so every rank computes the same map.
    """
    loads = [0.0] * size
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(size), key=lambda r: (loads[r], r))
        owner[i] = rank
        loads[rank] += costs[i]
    return owner


def shard(units: Sequence[T], costs: Sequence[float] | None = None) -> list[T]:
    """This rank's share of independent ``units`` (all of them in a world of one).

    ``costs`` (e.g. points × members) balance the shares; without them units count alike.
    """
    w = world()
    if w.size == 1:
        return list(units)
    owner = assignment(list(costs) if costs is not None else [1.0] * len(units), w.size)
    return [u for u, r in zip(units, owner, strict=True) if r == w.rank]


def gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a world of one)."""
    w = world()
    if w.size == 1:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (e.g. a checkpoint only rank 0 could read)."""
    if world().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def map_units(
    fn: Callable[[T], R], units: Sequence[T], costs: Sequence[float] | None = None
) -> list[R]:
    """``[fn(u) for u in units]`` with the units shared among the ranks; every rank gets every
    result, in the order of ``units``. ``fn`` must not depend on which rank runs it."""
    w = world()
    if w.size == 1:
        return [fn(u) for u in units]
    owner = assignment(list(costs) if costs is not None else [1.0] * len(units), w.size)
    mine = {i: fn(u) for i, (u, r) in enumerate(zip(units, owner, strict=True)) if r == w.rank}
    merged: dict[int, R] = {}
    for part in gather(mine):
        merged.update(part)
    return [merged[i] for i in range(len(units))]
