"""§3.2.3–3.3: transfer of the pretrained layers to Pascal VOC; Tables 3.1/3.2, Fig. 3-1/3-9."""

from oquab_repro.pipelines.transfer.pipeline import create_pipeline

__all__ = ["create_pipeline"]
