"""Patches stage: VOC images → labelled patch coordinates (parquet), counts, metrics, a figure."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.patches import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                nodes.label_patches_node,
                ["data_raw_voc", "params:patches", "params:seed", "params:data.skip_corrupt"],
                [
                    "patches_model_labelled",
                    "patches_metrics",
                    "patches_table_per_class",
                    "patches_timings",
                ],
                name="label_patches",
            ),
            node(
                nodes.plot_examples,
                [
                    "data_raw_voc",
                    "patches_model_labelled",
                    "params:patches",
                    "params:data.skip_corrupt",
                ],
                "patches_fig_examples",
                name="plot_patch_examples",
            ),
        ]
    )
