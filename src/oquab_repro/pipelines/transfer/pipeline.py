"""Transfer stage, one DVC stage per source network (tag ``from_<source>``; NO PRETRAIN: ``nopre``):
train each variant → score the test images once for all variants of the source (their frozen
layers are shared) → evaluate → heat maps. The ``report`` tag gathers every variant into Table
3.1/3.2-shaped tables."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import TRANSFER_SOURCES, TRANSFER_VARIANTS
from oquab_repro.pipelines.transfer import nodes

VARIANTS = ("nopre", *TRANSFER_VARIANTS)
# DVC stage tag → the variants it trains and scores together
GROUPS: dict[str, tuple[str, ...]] = {
    "nopre": ("nopre",),
    **{f"from_{s}": tuple(v for v in TRANSFER_VARIANTS if TRANSFER_SOURCES[v] == s) for s in dict.fromkeys(TRANSFER_SOURCES.values())},
}


def _nopre(voc_root, patches, checkpointer, *args, **kwargs):
    """NO PRETRAIN has no source network."""
    return nodes.train_transfer(voc_root, patches, None, checkpointer, *args, **kwargs)


def _group(tag: str, variants: tuple[str, ...]) -> Pipeline:
    common = ["params:transfer", "params:patches", "params:pretrain", "params:profile", "params:seed", "params:device"]
    scoring = ["data_raw_voc", "params:transfer", "params:patches", "params:profile", "params:device"]
    steps = []
    for v in variants:
        prefix = f"transfer_{v}"
        if v == "nopre":
            train = update_wrapper(partial(_nopre, variant=v), nodes.train_transfer)
            inputs = ["data_raw_voc", "patches_model_labelled", f"{prefix}_checkpoints", *common]
        else:
            train = update_wrapper(partial(nodes.train_transfer, variant=v), nodes.train_transfer)
            inputs = ["data_raw_voc", "patches_model_labelled", f"pretrain_{TRANSFER_SOURCES[v]}_weights", f"{prefix}_checkpoints", *common]
        steps += [
            node(train, inputs, [f"{prefix}_weights", f"{prefix}_plot_history", f"{prefix}_trainstats"], name=f"{prefix}_train"),
            node(nodes.evaluate, [f"{prefix}_model_scores", f"transfer_{tag}_timing", f"{prefix}_trainstats"], [f"{prefix}_metrics", f"{prefix}_table_ap"], name=f"{prefix}_evaluate"),
            node(
                nodes.plot_heat_maps,
                ["data_raw_voc", f"{prefix}_weights", f"{prefix}_model_scores", "params:transfer", "params:patches", "params:profile", "params:device"],
                f"{prefix}_fig_heatmaps",
                name=f"{prefix}_heat_maps",
            ),
        ]
    steps.append(
        node(
            nodes.score_test_images,
            {**dict(zip(("voc_root", "params", "patches_params", "profile", "device"), scoring, strict=True)), **{f"w_{v}": f"transfer_{v}_weights" for v in variants}},
            [*(f"transfer_{v}_model_scores" for v in variants), f"transfer_{tag}_timing"],
            name=f"transfer_{tag}_score",
        )
    )
    return pipeline(steps, tags=[tag])


def create_pipeline(**kwargs) -> Pipeline:
    report = node(
        nodes.report_tables,
        {"reference": "report_reference", **{f"m_{v}": f"transfer_{v}_metrics" for v in VARIANTS}},
        ["transfer_table_table3_1", "transfer_table_table3_2", "transfer_metrics", "transfer_fig_map"],
        name="transfer_report",
        tags=["report"],
    )
    return sum((_group(t, vs) for t, vs in GROUPS.items()), Pipeline([])) + pipeline([report])
