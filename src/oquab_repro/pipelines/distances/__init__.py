"""Appendix D / §5.5.2: which distance between distributions recovers a rotated rectangle."""

from oquab_repro.pipelines.distances.pipeline import create_pipeline

__all__ = ["create_pipeline"]
