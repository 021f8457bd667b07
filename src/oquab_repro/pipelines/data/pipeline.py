"""Data pipeline: one tagged sub-pipeline per dataset family (run one with ``--tags <tag>``).

``vision`` (DVC stage ``data``): build or fetch the raw image datasets, then check them through the
loaders. Other raw data (the Tübingen pairs, tag ``tuebingen``) adds its own sub-pipeline and DVC
stage and is summed in ``create_pipeline``.
"""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.data import nodes
from oquab_repro.pipelines.data.tuebingen import create_tuebingen_pipeline

RAW = ["data_raw_imagenet", "data_raw_voc", "data_raw_coco", "data_raw_gan", "data_raw_weights"]
PARAMS = ["params:profile", "params:data", "params:seed"]


def create_vision_pipeline() -> Pipeline:
    return pipeline(
        [
            node(
                nodes.build_raw_data,
                ["params:profile", "params:data", "params:seed"],
                [*RAW, "data_build_info", "data_build_seconds"],
                name="build_raw_data",
            ),
            node(
                nodes.validate_raw_data,
                [*RAW, "data_build_info", "data_build_seconds", *PARAMS],
                ["data_metrics", "data_class_sets", "data_timings"],
                name="validate_raw_data",
            ),
        ],
        tags="vision",
        namespace="vision",
        prefix_datasets_with_namespace=False,
    )


def create_pipeline(**kwargs) -> Pipeline:
    tuebingen = pipeline(
        create_tuebingen_pipeline(), namespace="tuebingen", prefix_datasets_with_namespace=False
    )
    return create_vision_pipeline() + tuebingen
