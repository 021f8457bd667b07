"""Data stage: build or fetch the raw vision datasets, then check them through the loaders.

Nodes are tagged ``vision`` (DVC stage ``data`` runs ``--tags vision``); other raw data (the
Tübingen pairs) adds its own nodes under another tag and DVC stage, summed in below.
"""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.data import nodes

RAW = ["data_raw_imagenet", "data_raw_voc", "data_raw_coco", "data_raw_gan"]


def create_pipeline(**kwargs) -> Pipeline:
    vision = pipeline(
        [
            node(
                nodes.build_raw_data,
                ["params:profile", "params:data", "params:seed"],
                [*RAW, "data_build_info"],
                name="build_raw_data",
            ),
            node(
                nodes.validate_raw_data,
                [*RAW, "data_build_info", "params:profile", "params:data", "params:seed"],
                ["data_metrics", "data_class_sets"],
                name="validate_raw_data",
            ),
        ],
        tags="vision",
    )
    return vision
