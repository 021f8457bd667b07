"""GAN stage. Per image set (params.GAN_DATASETS; namespace ``<dataset>``): train + evaluate, tagged
``<dataset>`` (DVC ``gan@<dataset>``: the whole gf × df grid in one loop), then rank + best/worst
samples, tagged ``select``; the ``select`` summary (DVC ``gan_select``) gathers every set."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import GAN_DATASETS
from oquab_repro.pipelines import bind, namespaced
from oquab_repro.pipelines.gan import nodes

PARAMS = ["params:gan", "params:profile", "params:seed"]
CAPS = ["params:caps.images_per_set", "params:caps.gan_snapshot_epochs"]


def _dataset(dataset: str) -> Pipeline:
    run = f"gan_{dataset}"
    grid = pipeline(
        [
            node(
                bind(nodes.train_grid, dataset=dataset),
                [
                    "data_raw_gan",
                    f"{run}_checkpoints",
                    *PARAMS,
                    "params:device",
                    "params:data.skip_corrupt",
                    *CAPS,
                ],
                [f"{run}_generators", f"{run}_plot_history", f"{run}_train_skipped"],
                name="train",
            ),
            node(
                bind(nodes.evaluate_grid, dataset=dataset),
                [
                    "data_raw_gan",
                    f"{run}_generators",
                    f"{run}_train_skipped",
                    "params:gan",
                    "params:c2st",
                    "params:profile",
                    "params:seed",
                    "params:data.skip_corrupt",
                    *CAPS,
                ],
                [
                    f"{run}_table_scores",
                    f"{run}_metrics",
                    f"{run}_fig_samples",
                    f"{run}_grids",
                    f"{run}_timings",
                ],
                name="evaluate",
            ),
        ],
        tags=[dataset],
    )
    select = pipeline(
        [
            node(nodes.rank_models, f"{run}_table_scores", f"{run}_ranked", name="rank"),
            node(nodes.table_c, f"{run}_ranked", f"gan_table_{dataset}", name="table"),
            node(
                nodes.best_and_worst,
                [f"{run}_ranked", f"{run}_generators", *PARAMS],
                f"{run}_best_worst",
                name="best_and_worst",
            ),
        ],
        tags=["select"],
    )
    return namespaced([grid, select], dataset)


def create_pipeline(**kwargs) -> Pipeline:
    summary = pipeline(
        [
            node(
                nodes.summarise_grids,
                [f"gan_{d}_ranked" for d in GAN_DATASETS],
                ["gan_table_ranking", "gan_metrics", "gan_fig_statistics"],
                name="summarise",
            ),
            node(
                nodes.best_worst_figure,
                [f"gan_{d}_best_worst" for d in GAN_DATASETS],
                "gan_fig_best_worst",
                name="best_worst",
            ),
        ],
        tags=["select"],
    )
    return pipeline([*(_dataset(d) for d in GAN_DATASETS), summary])
