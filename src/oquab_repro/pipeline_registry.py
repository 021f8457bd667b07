"""Project pipelines: one modular pipeline per thesis stage, discovered from ``pipelines/``."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from oquab_repro.params import RANKED  # noqa: F401  (re-exported: cli.launch_plan reads it here)
from oquab_repro.pipelines import namespaced


def register_pipelines() -> dict[str, Pipeline]:
    """Register every stage pipeline in a namespace of its name (``kedro viz`` opens on the thesis'
    stages, each expandable; dataset names stay the catalog's); ``__default__`` runs them all
    (what ``dvc repro`` does stage by stage)."""
    found = find_pipelines(raise_errors=True)
    pipelines = {name: namespaced([stage], name) for name, stage in found.items()}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
