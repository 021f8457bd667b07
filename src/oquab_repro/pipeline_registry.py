"""Project pipelines: one modular pipeline per thesis stage, discovered from ``pipelines/``."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from oquab_repro.pipelines import namespaced

RANKED: tuple[str, ...] = ("pretrain", "transfer", "weak", "actions", "gan", "causal")
"""Pipelines whose nodes share their work among torch.distributed ranks (lib/distributed.py);
``kedro run`` of only these starts itself under torchrun when ``distributed`` asks for it.
The single networks (pretrain, transfer, weak, actions) train with DDP in ``lib/training.fit``;
``gan`` shares its grid cells and snapshot scoring, ``causal`` its CGAN-C2ST units. Their other
nodes run on every rank alike (only rank 0 writes)."""


def register_pipelines() -> dict[str, Pipeline]:
    """Register every stage pipeline in a namespace of its name (``kedro viz`` opens on the thesis'
    stages, each expandable; dataset names stay the catalog's); ``__default__`` runs them all
    (what ``dvc repro`` does stage by stage)."""
    found = find_pipelines(raise_errors=True)
    pipelines = {name: namespaced([stage], name) for name, stage in found.items()}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
