"""Weak stage: per dataset (tag = voc | coco) load → train WEAK SUP, FULL IMAGES, MASKED POOL →
score the test images → Tables 4.1–4.3-shaped metrics, PR curves and the location figure."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import WEAK_DATASETS, WEAK_SOURCE
from oquab_repro.pipelines.weak import nodes


def _dataset(d: str) -> Pipeline:
    stage = f"weak_{d}"
    nodes_ = [
        node(
            update_wrapper(partial(nodes.load_sets, dataset=d), nodes.load_sets),
            ["data_raw_voc", "data_raw_coco", "params:weak", "params:profile", "params:seed"],
            f"{stage}_sets",
            name=f"{stage}_load",
        )
    ]
    for v in nodes.TRAINED_VARIANTS:
        run = f"{stage}_{v}"
        nodes_.append(
            node(
                update_wrapper(partial(nodes.train_variant, dataset=d, variant=v), nodes.train_variant),
                [f"{stage}_sets", f"pretrain_{WEAK_SOURCE}_weights", f"{run}_checkpoints", "params:weak", "params:profile", "params:seed", "params:device"],
                [f"{run}_weights", f"{stage}_plot_{v}_history", f"{run}_trainstats"],
                name=f"{run}_train",
            )
        )
    nodes_ += [
        node(
            nodes.score_test,
            {"sets": f"{stage}_sets", "params": "params:weak", "profile": "params:profile", "device": "params:device", **{v: f"{stage}_{v}_weights" for v in nodes.TRAINED_VARIANTS}},
            f"{stage}_test",
            name=f"{stage}_score",
        ),
        node(
            nodes.evaluate,
            {"sets": f"{stage}_sets", "tests": f"{stage}_test", "params": "params:weak", "profile": "params:profile", **{v: f"{stage}_{v}_trainstats" for v in nodes.TRAINED_VARIANTS}},
            [f"{stage}_metrics", f"{stage}_table_classification", f"{stage}_table_location", f"{stage}_plot_pr_classification", f"{stage}_plot_pr_location"],
            name=f"{stage}_evaluate",
        ),
        node(
            nodes.plot_locations,
            [f"{stage}_sets", f"{stage}_weak_sup_weights", f"{stage}_test", "params:weak", "params:profile"],
            f"{stage}_fig_locations",
            name=f"{stage}_figure",
        ),
    ]
    return pipeline(nodes_, tags=[d])


def create_pipeline(**kwargs) -> Pipeline:
    return sum((_dataset(d) for d in WEAK_DATASETS), Pipeline([]))
