"""Pretrain stage: one node per source set, tagged with its name (DVC stage pretrain@<source>)."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import PRETRAIN_SOURCES
from oquab_repro.pipelines.pretrain import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                update_wrapper(partial(nodes.pretrain, source=s), nodes.pretrain),
                ["data_raw_imagenet", "data_class_sets", f"pretrain_{s}_checkpoints", "params:pretrain", "params:profile", "params:seed", "params:device"],
                [f"pretrain_{s}_weights", f"pretrain_{s}_plot_history", f"pretrain_{s}_metrics"],
                name=f"pretrain_{s}",
                tags=[s],
            )
            for s in PRETRAIN_SOURCES
        ]
    )
