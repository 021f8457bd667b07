"""§5.3.3 / Appendix C: a grid of DCGANs judged by classifier two-sample tests
(Fig. 5-7, Tables C.1–C.2)."""

from oquab_repro.pipelines.gan.pipeline import create_pipeline

__all__ = ["create_pipeline"]
