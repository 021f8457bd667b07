"""§5.3.2: calibration of the two-sample tests (type-I error under P = Q, power under P ≠ Q)."""

from oquab_repro.pipelines.twosample.pipeline import create_pipeline

__all__ = ["create_pipeline"]
