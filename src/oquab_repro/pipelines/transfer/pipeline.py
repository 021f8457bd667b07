"""Transfer stage: per variant (tag = variant name) train → score → evaluate → heat maps; the
``report`` tag gathers every variant into Table 3.1/3.2-shaped tables."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import TRANSFER_SOURCES, TRANSFER_VARIANTS
from oquab_repro.pipelines.transfer import nodes

VARIANTS = ("nopre", *TRANSFER_VARIANTS)


def _nopre(voc_root, patches, checkpointer, *args, **kwargs):
    """NO PRETRAIN has no source network."""
    return nodes.train_transfer(voc_root, patches, None, checkpointer, *args, **kwargs)


def _variant(v: str) -> Pipeline:
    prefix = f"transfer_{v}"
    common = ["params:transfer", "params:patches", "params:pretrain", "params:profile", "params:seed", "params:device"]
    if v == "nopre":
        train = update_wrapper(partial(_nopre, variant=v), nodes.train_transfer)
        inputs = ["data_raw_voc", "patches_model_labelled", f"{prefix}_checkpoints", *common]
    else:
        train = update_wrapper(partial(nodes.train_transfer, variant=v), nodes.train_transfer)
        inputs = ["data_raw_voc", "patches_model_labelled", f"pretrain_{TRANSFER_SOURCES[v]}_weights", f"{prefix}_checkpoints", *common]
    return pipeline(
        [
            node(train, inputs, [f"{prefix}_weights", f"{prefix}_plot_history", f"{prefix}_trainstats"], name=f"{prefix}_train"),
            node(
                nodes.score_test_images,
                ["data_raw_voc", f"{prefix}_weights", "params:transfer", "params:patches", "params:profile", "params:device"],
                [f"{prefix}_model_scores", f"{prefix}_timing"],
                name=f"{prefix}_score",
            ),
            node(nodes.evaluate, [f"{prefix}_model_scores", f"{prefix}_timing", f"{prefix}_trainstats"], [f"{prefix}_metrics", f"{prefix}_table_ap"], name=f"{prefix}_evaluate"),
            node(
                nodes.plot_heat_maps,
                ["data_raw_voc", f"{prefix}_weights", f"{prefix}_model_scores", "params:transfer", "params:patches", "params:profile", "params:device"],
                f"{prefix}_fig_heatmaps",
                name=f"{prefix}_heat_maps",
            ),
        ],
        tags=[v],
    )


def create_pipeline(**kwargs) -> Pipeline:
    report = node(
        nodes.report_tables,
        {"reference": "report_reference", **{f"m_{v}": f"transfer_{v}_metrics" for v in VARIANTS}},
        ["transfer_table_table3_1", "transfer_table_table3_2", "transfer_metrics", "transfer_fig_map"],
        name="transfer_report",
        tags=["report"],
    )
    return sum((_variant(v) for v in VARIANTS), Pipeline([])) + pipeline([report])
