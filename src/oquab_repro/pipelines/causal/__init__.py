"""§5.4.2 / Table 5.1: CGAN-C2ST cause-effect discovery on the Tübingen
pairs, with cdt baselines."""

from oquab_repro.pipelines.causal.pipeline import create_pipeline

__all__ = ["create_pipeline"]
