"""GAN stage: per grid cell a train + evaluate pair tagged ``<dataset>_<g>_<d>`` (DVC ``gan@…``),
and a ``select`` node (DVC ``gan_select``) that ranks every cell and draws Fig. 5-7."""

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.params import GAN_DATASETS, GAN_LEVELS
from oquab_repro.pipelines.gan import nodes

CELLS = [(ds, g, d) for ds in GAN_DATASETS for g in GAN_LEVELS for d in GAN_LEVELS]


def cell_key(dataset: str, g: str, d: str) -> str:
    return f"{dataset}_{g}_{d}"


def _bind(func, **kwargs):
    return update_wrapper(partial(func, **kwargs), func)


def create_pipeline(**kwargs) -> Pipeline:
    cells = []
    for ds, g, d in CELLS:
        key = cell_key(ds, g, d)
        prefix = f"gan_{key}"
        cells += [
            node(
                _bind(nodes.train_cell, dataset=ds, g=g, d=d),
                ["data_raw_gan", f"{prefix}_checkpoints", "params:gan", "params:profile", "params:seed", "params:device"],
                [f"{prefix}_generators", f"{prefix}_plot_history"],
                name=f"train_{key}",
                tags=[key],
            ),
            node(
                _bind(nodes.evaluate_cell, dataset=ds, g=g, d=d),
                ["data_raw_gan", f"{prefix}_generators", "params:gan", "params:c2st", "params:profile", "params:seed"],
                [f"{prefix}_table_scores", f"{prefix}_metrics", f"{prefix}_fig_samples", f"{prefix}_grids"],
                name=f"evaluate_{key}",
                tags=[key],
            ),
        ]
    tables = {f"table__{cell_key(*c)}": f"gan_{cell_key(*c)}_table_scores" for c in CELLS}
    snapshots = {f"snapshots__{cell_key(*c)}": f"gan_{cell_key(*c)}_generators" for c in CELLS}
    select = node(
        nodes.select_models,
        {"gan": "params:gan", "profile": "params:profile", "seed": "params:seed", **tables, **snapshots},
        [*(f"gan_table_{ds}" for ds in GAN_DATASETS), "gan_table_ranking", "gan_metrics", "gan_fig_best_worst", "gan_fig_statistics"],
        name="select_models",
        tags=["select"],
    )
    return pipeline([*cells, select])
