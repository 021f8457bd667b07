"""§4.2–4.6: weakly supervised learning with global max pooling; Tables 4.1–4.3, Fig. 4-1/4-6."""

from oquab_repro.pipelines.weak.pipeline import create_pipeline

__all__ = ["create_pipeline"]
