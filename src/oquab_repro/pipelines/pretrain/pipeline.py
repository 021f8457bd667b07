"""Pretrain stage: one AlexNet per source network (namespace and tag ``<source>``, DVC stage
pretrain@<source>; sources: params.PRETRAIN_SOURCES)."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import PRETRAIN_SOURCES
from oquab_repro.pipelines import bind, namespaced
from oquab_repro.pipelines.pretrain import nodes


def _source(source: str) -> Pipeline:
    run = f"pretrain_{source}"
    train = node(
        bind(nodes.pretrain, source=source),
        [
            "data_raw_imagenet",
            "data_class_sets",
            f"{run}_checkpoints",
            "params:pretrain",
            "params:profile",
            "params:seed",
            "params:device",
            "params:data.skip_corrupt",
            "params:caps.images_per_set",
            "params:caps.steps_per_epoch",
            "params:caps.epochs",
        ],
        [f"{run}_weights", f"{run}_plot_history", f"{run}_metrics", f"{run}_timings"],
        name="train",
    )
    return namespaced([train], source, tags=[source])


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([_source(s) for s in PRETRAIN_SOURCES])
