"""Raw data stage: build the offline mini datasets or fetch the official ones into
``data/01_raw``."""

from oquab_repro.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
