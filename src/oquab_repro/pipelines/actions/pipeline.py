"""Action stage (Table 3.3): person crops → one network per row (params ``actions.variants``,
each a transfer variant: NO PRETRAIN, PRE-1512, PRE-1512U) → per-action AP."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import project_params
from oquab_repro.pipelines import source_weights, train_node
from oquab_repro.pipelines.actions import nodes

PARAMS = [
    "params:actions",
    "params:transfer",
    "params:pretrain",
    "params:profile",
    "params:seed",
    "params:device",
]
FIT_CAPS = ["params:caps.steps_per_epoch", "params:caps.epochs"]  # lib/training.fit's loop


def _train(variant: str, source: str) -> Pipeline:
    """Train one Table 3.3 row's network (namespace ``<variant>``)."""
    run = f"actions_{variant}"
    inputs = ["actions_persons", f"{run}_checkpoints", *PARAMS, *FIT_CAPS, *source_weights(source)]
    outputs = [f"{run}_weights", f"{run}_result", f"{run}_timings"]
    return train_node(nodes.train_action, variant, inputs, outputs)


def create_pipeline(**kwargs) -> Pipeline:
    params = project_params()
    variants = params.actions.variants
    persons = node(
        nodes.load_persons,
        [
            "data_raw_voc",
            "params:actions",
            "params:pretrain",
            "params:profile",
            "params:seed",
            "params:data.skip_corrupt",
        ],
        "actions_persons",
        name="persons",
    )
    evaluate = node(
        nodes.evaluate_actions,
        [
            "actions_persons",
            "report_reference",
            "params:actions",
            "params:transfer",
            "params:profile",
            *(f"actions_{v}_result" for v in variants),
        ],
        ["actions_metrics", "actions_table_table3_3", "actions_fig_crops"],
        name="evaluate",
    )
    trains = [_train(v, params.transfer.variants[v].source) for v in variants]
    return pipeline([persons, *trains, evaluate])
