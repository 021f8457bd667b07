"""Appendix D / §5.5.2: which distance between distributions recovers a rotated rectangle."""

from __future__ import annotations

from typing import Any


def create_pipeline(**kwargs: Any) -> Any:
    """Kedro's entry point, imported lazily: the grid search's worker processes import this package
    for ``search`` and ``transport`` only, and should not pay for torch and matplotlib."""
    from oquab_repro.pipelines.distances.pipeline import create_pipeline as create

    return create(**kwargs)


__all__ = ["create_pipeline"]
