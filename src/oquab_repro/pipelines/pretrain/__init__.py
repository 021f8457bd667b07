"""§3.2.1: AlexNet pretraining on the source class sets (1000C, 1000R, 1512; mini equivalents)."""

from oquab_repro.pipelines.pretrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
