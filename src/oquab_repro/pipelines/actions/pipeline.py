"""Action stage (Table 3.3): person crops → one network per row (NO PRETRAIN, PRE-1512, PRE-1512U) → AP."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import ACTION_VARIANTS, TRANSFER_SOURCES
from oquab_repro.pipelines.actions import nodes


def _train(variant: str):
    if variant == "nopre":  # no source network

        def train(persons, checkpointer, *args, **kwargs):
            return nodes.train_action(persons, None, checkpointer, *args, **kwargs)

        return update_wrapper(partial(train, variant=variant), nodes.train_action)
    return update_wrapper(partial(nodes.train_action, variant=variant), nodes.train_action)


def create_pipeline(**kwargs) -> Pipeline:
    common = ["params:actions", "params:transfer", "params:pretrain", "params:profile", "params:seed", "params:device"]
    nodes_ = [node(nodes.load_persons, ["data_raw_voc", "params:actions", "params:pretrain", "params:profile", "params:seed"], "actions_persons", name="actions_persons")]
    for v in ACTION_VARIANTS:
        source = [] if v == "nopre" else [f"pretrain_{TRANSFER_SOURCES[v]}_weights"]
        nodes_.append(node(_train(v), ["actions_persons", *source, f"actions_{v}_checkpoints", *common], [f"actions_{v}_weights", f"actions_{v}_result"], name=f"actions_{v}"))
    nodes_.append(
        node(
            nodes.evaluate_actions,
            {"persons": "actions_persons", "reference": "report_reference", "params": "params:actions", "profile": "params:profile", **{f"r_{v}": f"actions_{v}_result" for v in ACTION_VARIANTS}},
            ["actions_metrics", "actions_table_table3_3", "actions_fig_crops"],
            name="actions_evaluate",
        )
    )
    return pipeline(nodes_)
