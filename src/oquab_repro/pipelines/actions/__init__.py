"""§3.3, Table 3.3: action classification on the VOC2012 action set from one patch per person."""

from oquab_repro.pipelines.actions.pipeline import create_pipeline

__all__ = ["create_pipeline"]
