"""Weak stage: per dataset (namespace and tag ``voc`` | ``coco``, DVC stage weak@<dataset>) load →
train FULL IMAGES, WEAK SUP, MASKED POOL (a namespace each) → score the test images → Tables
4.1–4.3-shaped metrics, PR curves and the location figure."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.lib.weak import VARIANTS
from oquab_repro.params import WEAK_DATASETS, WEAK_SOURCE
from oquab_repro.pipelines import bind, namespaced, train_node
from oquab_repro.pipelines.weak import nodes

PARAMS = ["params:weak", "params:profile"]
FIT_CAPS = ["params:caps.steps_per_epoch", "params:caps.epochs"]  # lib/training.fit's loop


def _train(dataset: str, variant: str) -> Pipeline:
    """Train one variant on one dataset (namespace ``<variant>``)."""
    stage, run = f"weak_{dataset}", f"weak_{dataset}_{variant}"
    inputs = [f"{stage}_sets", f"pretrain_{WEAK_SOURCE}_weights", f"{run}_checkpoints", *PARAMS]
    outputs = [
        f"{run}_weights",
        f"{stage}_plot_{variant}_history",
        f"{run}_stats",
        f"{run}_timings",
    ]
    run_params = [*inputs, "params:seed", "params:device", *FIT_CAPS]
    return train_node(nodes.train_variant, variant, run_params, outputs, dataset=dataset)


def _dataset(dataset: str) -> Pipeline:
    stage = f"weak_{dataset}"
    load = node(
        bind(nodes.load_sets, dataset=dataset),
        [
            "data_raw_voc",
            "data_raw_coco",
            *PARAMS,
            "params:seed",
            "params:data.skip_corrupt",
            "params:caps.images_per_set",
        ],
        f"{stage}_sets",
        name="load",
    )
    score = node(
        nodes.score_test,
        [f"{stage}_sets", *PARAMS, "params:device", *(f"{stage}_{v}_weights" for v in VARIANTS)],
        [f"{stage}_test", f"{stage}_timings"],
        name="score",
    )
    evaluate = node(
        nodes.evaluate,
        [f"{stage}_sets", f"{stage}_test", *PARAMS, *(f"{stage}_{v}_stats" for v in VARIANTS)],
        [
            f"{stage}_metrics",
            f"{stage}_table_classification",
            f"{stage}_table_location",
            f"{stage}_plot_pr_classification",
            f"{stage}_plot_pr_location",
        ],
        name="evaluate",
    )
    figure = node(
        nodes.plot_locations,
        [f"{stage}_sets", f"{stage}_weak_sup_weights", f"{stage}_test", *PARAMS],
        f"{stage}_fig_locations",
        name="figure",
    )
    trains = [_train(dataset, v) for v in VARIANTS]
    return namespaced([load, *trains, score, evaluate, figure], dataset, tags=[dataset])


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline([_dataset(d) for d in WEAK_DATASETS])
