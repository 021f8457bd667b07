"""The report: every thesis table next to ours, and every figure, in one self-contained page."""

from oquab_repro.pipelines.report.pipeline import create_pipeline

__all__ = ["create_pipeline"]
