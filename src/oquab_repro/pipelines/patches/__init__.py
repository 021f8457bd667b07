"""§3.2.2: multi-scale patches of the target images, labelled from the object boxes."""

from oquab_repro.pipelines.patches.pipeline import create_pipeline

__all__ = ["create_pipeline"]
