"""GAN stage: per image set a train + evaluate pair tagged ``<dataset>`` (DVC ``gan@<dataset>``)
that trains every gf × df cell in one loop, and a ``select`` node (DVC ``gan_select``) that ranks
the whole grid and draws Fig. 5-7."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import GAN_DATASETS
from oquab_repro.pipelines.gan import nodes


def _bind(func, **kwargs):
    return update_wrapper(partial(func, **kwargs), func)


def create_pipeline(**kwargs) -> Pipeline:
    grids = []
    for ds in GAN_DATASETS:
        prefix = f"gan_{ds}"
        grids += [
            node(
                _bind(nodes.train_grid, dataset=ds),
                ["data_raw_gan", f"{prefix}_checkpoints", "params:gan", "params:profile", "params:seed", "params:device"],
                [f"{prefix}_generators", f"{prefix}_plot_history"],
                name=f"train_{ds}",
                tags=[ds],
            ),
            node(
                _bind(nodes.evaluate_grid, dataset=ds),
                ["data_raw_gan", f"{prefix}_generators", "params:gan", "params:c2st", "params:profile", "params:seed"],
                [f"{prefix}_table_scores", f"{prefix}_metrics", f"{prefix}_fig_samples", f"{prefix}_grids"],
                name=f"evaluate_{ds}",
                tags=[ds],
            ),
        ]
    select = node(
        nodes.select_models,
        {
            "gan": "params:gan", "profile": "params:profile", "seed": "params:seed",
            **{f"table__{ds}": f"gan_{ds}_table_scores" for ds in GAN_DATASETS},
            **{f"snapshots__{ds}": f"gan_{ds}_generators" for ds in GAN_DATASETS},
        },
        [*(f"gan_table_{ds}" for ds in GAN_DATASETS), "gan_table_ranking", "gan_metrics", "gan_fig_best_worst", "gan_fig_statistics"],
        name="select_models",
        tags=["select"],
    )  # fmt: skip
    return pipeline([*grids, select])
