"""Data pipeline: one tagged sub-pipeline per dataset family (run one with ``--tags <tag>``).

``vision`` (DVC stage ``data``): build or fetch the raw image datasets into a staging folder, check
them there through the loaders, and only then move them into ``data/01_raw``. Other raw data (the
Tübingen pairs, tag ``tuebingen``) adds its own sub-pipeline and DVC stage and is
summed in ``create_pipeline``.
"""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines import namespaced
from oquab_repro.pipelines.data import nodes
from oquab_repro.pipelines.data.tuebingen import create_tuebingen_pipeline

RAW = ["data_raw_imagenet", "data_raw_voc", "data_raw_coco", "data_raw_gan", "data_raw_weights"]


def create_vision_pipeline() -> Pipeline:
    return pipeline(
        [
            node(
                nodes.build_raw_data,
                ["params:profile", "params:data", "params:seed"],
                ["data_staged", "data_build_info", "data_staged_class_sets"],
                name="build_raw_data",
            ),
            node(  # validated in staging: data/01_raw changes only when every check passed
                nodes.validate_raw_data,
                [
                    "data_staged",
                    "data_build_info",
                    "data_staged_class_sets",
                    "params:profile",
                    "params:data",
                    "params:seed",
                ],
                [*RAW, "data_metrics", "data_class_sets", "data_timings"],
                name="validate_raw_data",
            ),
        ],
        tags="vision",
    )


def create_pipeline(**kwargs) -> Pipeline:
    vision = namespaced([create_vision_pipeline()], "vision")
    return vision + namespaced([create_tuebingen_pipeline()], "tuebingen")
