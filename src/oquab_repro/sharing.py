"""Share finished stages between machines through one DVC remote and its run-cache.

DVC's run-cache records, per stage, which outputs a command made from which deps and params; a
machine that pulls it restores those outputs instead of running the stage (``dvc repro --pull``).
That needs every output a run-cache entry names on the remote, the uncached ones included
(``metrics.json``, ``plots/*.csv``: DVC copies them into the local cache when it saves the entry).
``dvc push --run-cache`` (DVC 3) sends the entries but only the workspace's cached outputs, so a
stage restored elsewhere found its metrics missing and ran again. :func:`push` sends both, with
DVC's own API, so another machine restores every stage it can.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pushed:
    """What one :func:`push` sent: workspace files and run entries (``dvc push --run-cache``),
    the outputs of every run entry, and those it could not find in the local cache."""

    workspace: int
    run_outputs: int
    missing: int
    entries: int


def run_entries(cache_dir: str) -> list[tuple[str, str]]:
    """Every (stage key, entry) of a run-cache folder (``.dvc/cache/runs/<xx>/<key>/<entry>``)."""
    return [
        (os.path.basename(folder), name)
        for folder, _, names in os.walk(cache_dir)
        for name in names
    ]


def push(root: Path, remote: str | None = None, jobs: int | None = None) -> Pushed:
    """``dvc push --run-cache`` and the outputs every run-cache entry names."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        workspace = repo.push(remote=remote, run_cache=True, jobs=jobs)
        entries = run_entries(repo.stage_cache.cache_dir)
        objs = set().union(*repo.stage_cache.get_used_objs(entries).values()) if entries else set()
        result = repo.cloud.push(objs, jobs=jobs, remote=remote)
    return Pushed(workspace, len(result.transferred), len(result.failed), len(entries))


def waves(graph: Any) -> list[list[str]]:
    """DVC's stage graph (edges point from a stage to the stages it depends on) in rounds: each
    round's stages depend only on earlier rounds, so machines sharing one remote can run a round's
    stages at once, each restoring the earlier rounds from the run-cache."""
    done: set[Any] = set()
    rounds = []
    while len(done) < graph.number_of_nodes():
        ready = [s for s in graph.nodes if s not in done and set(graph.successors(s)) <= done]
        if not ready:  # DVC refuses cyclic pipelines; never loop forever on one
            raise ValueError("the stage graph has a cycle")
        rounds.append(sorted(s.addressing for s in ready))
        done.update(ready)
    return rounds
