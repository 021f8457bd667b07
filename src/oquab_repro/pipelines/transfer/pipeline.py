"""Transfer stage: one DVC stage per source network (``transfer_<source>``, tag ``<source>``; NO
PRETRAIN's source is ``none``) trains each of its variants → scores the test images once for
all of them (their frozen layers are shared) → evaluates → draws heat maps. The ``report`` tag
gathers every variant into Table 3.1/3.2-shaped tables. Variants and sources: params.yaml
``transfer.variants``."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import project_params
from oquab_repro.pipelines import bind, namespaced, source_weights, train_node
from oquab_repro.pipelines.transfer import nodes

PARAMS = [
    "params:transfer",
    "params:patches",
    "params:pretrain",
    "params:profile",
    "params:seed",
    "params:device",
    "params:data.skip_corrupt",
]
FIT_CAPS = ["params:caps.steps_per_epoch", "params:caps.epochs"]  # lib/training.fit's loop


def _train(source: str, variant: str) -> Pipeline:
    """Train one variant (namespace ``<source>.<variant>``)."""
    run = f"transfer_{variant}"
    inputs = ["data_raw_voc", "patches_model_labelled", f"{run}_checkpoints", *PARAMS]
    outputs = [f"{run}_weights", f"{run}_plot_history", f"{run}_stats", f"{run}_timings"]
    inputs += [*FIT_CAPS, *source_weights(source)]
    return train_node(nodes.train_transfer, variant, inputs, outputs)


def _evaluate(source: str, variant: str) -> list:
    """One variant's AP from the scores of its source's test pass, and its heat maps."""
    run, group = f"transfer_{variant}", f"transfer_{source}"
    evaluate = node(
        bind(nodes.evaluate, variant=variant),
        [f"{group}_model_scores", f"{group}_test", f"{run}_stats"],
        [f"{run}_metrics", f"{run}_table_ap"],
        name=f"evaluate_{variant}",
    )
    heat_maps = node(
        bind(nodes.plot_heat_maps, variant=variant),
        [
            "data_raw_voc",
            f"{run}_weights",
            f"{group}_model_scores",
            *PARAMS[:2],
            "params:profile",
            "params:device",
            "params:data.skip_corrupt",
        ],
        f"{run}_fig_heatmaps",
        name=f"heat_maps_{variant}",
    )
    return [evaluate, heat_maps]


def _source(source: str, variants: list[str]) -> Pipeline:
    """One DVC stage: train the variants of a source network, score the test images once for all
    of them, evaluate each (namespace ``<source>``)."""
    group = f"transfer_{source}"
    score = node(
        bind(nodes.score_test_images, variants=tuple(variants)),
        [
            "data_raw_voc",
            *PARAMS[:2],
            "params:profile",
            "params:device",
            "params:data.skip_corrupt",
            *(f"transfer_{v}_weights" for v in variants),
        ],
        [f"{group}_model_scores", f"{group}_test", f"{group}_timings"],
        name="score",
    )
    steps = [
        *(_train(source, v) for v in variants),
        score,
        *(n for v in variants for n in _evaluate(source, v)),
    ]
    return namespaced(steps, source, tags=[source])


def create_pipeline(**kwargs) -> Pipeline:
    variants = project_params().transfer
    report = node(
        nodes.report_tables,
        [
            "report_reference",
            "params:transfer.variants",
            *(f"transfer_{v}_metrics" for v in variants.variants),
        ],
        [
            "transfer_table_table3_1",
            "transfer_table_table3_2",
            "transfer_metrics",
            "transfer_fig_map",
        ],
        name="report",
        tags=["report"],
    )
    return pipeline([*(_source(s, vs) for s, vs in variants.sources().items()), report])
