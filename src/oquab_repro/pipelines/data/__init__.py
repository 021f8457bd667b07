"""Data layer: datasets in their official on-disk formats under ``data/01_raw``."""

from oquab_repro.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
