"""Project pipelines: one modular pipeline per thesis stage, discovered from ``pipelines/``."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

RANKED: tuple[str, ...] = ()
"""Pipelines whose nodes share their work among torch.distributed ranks (lib/distributed.py);
``kedro run`` of only these starts itself under torchrun when ``distributed`` asks for it."""


def register_pipelines() -> dict[str, Pipeline]:
    """Register every stage pipeline; ``__default__`` runs them all (what ``dvc repro`` does stage by stage)."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
