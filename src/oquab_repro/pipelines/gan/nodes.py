"""Kedro nodes of the GAN stage (§5.3.3): train the gf × df grid of a set, test
every snapshot, rank the grid.

Each snapshot is compared with held-out real images by three tests on pretrained-network
features (C2ST-KNN, C2ST-NN, linear MMD), by a C2ST on raw pixels with a discriminator-shaped
CNN, and scored by a classifier-free quality measure (k-NN coverage, Naeem et al. 2020, in the same
feature space) that the model-selection node uses as an independent check of the statistics'
rankings: no classifier and no kernel, and it is low for a collapsed generator (few real
neighbourhoods covered) however sharp its few modes are. In pixel space it saturates at mini
scale (0 on every LFW-like model, 1 on every bedroom-like one), so it is computed on features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import spearmanr
from torch.utils.data import Subset

from oquab_repro.lib import distributed
from oquab_repro.lib import twosample as ts
from oquab_repro.lib.adversarial import (
    GanConfig,
    discriminator_classifier,
    image_grid_array,
    sample,
    train_gans,
)
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import (
    gan_images,
    read_in_workers,
    skipped_files,
    summarise_skipped,
)
from oquab_repro.lib.features import build_featuriser, knn_coverage
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.params import GAN_LEVELS, GanParams, GanProfileParams, cap, with_profile

log = logging.getLogger(__name__)

STATISTICS = (
    "mmd",
    "knn",
    "nn",
)  # Tables C.1/C.2 columns (registry names); larger = easier to tell from real
ALL_TESTS = (*STATISTICS, "pixel")
QUALITY = "coverage"  # larger = better
TABLE_COLUMNS = ["gf", "df", "epoch", *STATISTICS, "pixel", QUALITY]


def _set_threads(p: GanProfileParams) -> None:
    if p.torch_threads:
        torch.set_num_threads(p.torch_threads)
    torch.set_flush_denormal(
        True
    )  # tiny DCGAN weights otherwise hit slow denormal arithmetic on CPU


def capped_profile(
    gan: dict[str, Any], profile: str, images_cap: int | None, snapshots_cap: int | None
) -> tuple[GanParams, GanProfileParams]:
    """The section and its profile under ``caps.images_per_set`` (training images, held-out
    evaluation samples and so the batch) and ``caps.gan_snapshot_epochs`` (snapshots at epochs
    ≤ the cap, the first at least; training stops at the last). No cap: the profile as it is."""
    cfg, p = with_profile(GanParams, gan, profile)
    kept = [e for e in p.snapshot_epochs if snapshots_cap is None or e <= snapshots_cap]
    update: dict[str, Any] = {"snapshot_epochs": kept or p.snapshot_epochs[:1]}
    if images_cap is not None:  # a capped set also caps the batch: one batch is all it holds
        train = images_cap if p.train_images is None else cap(p.train_images, images_cap)
        update |= {"train_images": train, "eval_samples": cap(p.eval_samples, images_cap)}
        update["batch_size"] = cap(p.batch_size, train)
    return cfg, p.model_copy(update=update)


def split_images(
    root: Path, dataset: str, p: GanProfileParams, seed: int, skip_corrupt: bool
) -> tuple[Subset, Subset]:
    """(training images, held-out real images) of a set: one seeded split shared by every grid
    cell. Under data.skip_corrupt an unreadable image reads as its next readable neighbour; the
    nodes that read images in this process leave those out and count them (:func:`_readable`)."""
    images = gan_images(dataset, Path(root) / dataset, p.image_size, skip_corrupt=skip_corrupt)
    order = np.random.default_rng(seed).permutation(len(images))
    held, rest = order[: p.eval_samples], order[p.eval_samples :]
    if p.train_images is not None:
        rest = rest[: p.train_images]
    if len(rest) < p.batch_size:
        raise ValueError(
            f"{root}/{dataset}: {len(images)} images leave {len(rest)} for training after"
            f" {p.eval_samples} held out; lower gan.eval_samples or add images."
        )
    return Subset(images, rest.tolist()), Subset(images, held.tolist())


def grid_cells() -> list[tuple[str, str]]:
    """The (g, d) levels of the gf × df grid, in table order."""
    return [(g, d) for g in GAN_LEVELS for d in GAN_LEVELS]


def cell_name(g: str, d: str) -> str:
    return f"{g}_{d}"


def train_grid(
    raw_gan: Path,
    checkpointer: Checkpointer,
    gan: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    skip_corrupt: bool,
    images_cap: int | None,
    snapshots_cap: int | None,
    *,
    dataset: str,
) -> tuple[dict[str, dict[int, dict[str, torch.Tensor]]], pd.DataFrame, list[str]]:
    """Train the DCGAN of every grid cell of one set in one loop, resuming from its checkpoints.

    Returns the generator snapshots per cell (``"<g>_<d>"`` → {epoch: weights}), the histories
    and the training images data.skip_corrupt left out (:func:`evaluate_grid` counts them).
    ``images_cap`` / ``snapshots_cap``: ``caps.images_per_set`` / ``caps.gan_snapshot_epochs``.
    """
    cfg, p = capped_profile(gan, profile, images_cap, snapshots_cap)
    _set_threads(p)
    seed_everything(seed)
    split = split_images(raw_gan, dataset, p, seed, skip_corrupt)[0]
    train = _training_set(split, p.preload, p.num_workers, f"gan {dataset}")
    runs = [
        GanConfig(
            gf=p.widths[g],
            df=p.widths[d],
            image_size=p.image_size,
            batch_size=p.batch_size,
            lr=cfg.optim.lr,
            beta1=cfg.optim.beta1,
            snapshot_epochs=tuple(p.snapshot_epochs),
            seed=seed,
        )
        for g, d in grid_cells()
    ]
    results = train_cells(
        train, runs, checkpointer, resolve_device(device), p.num_workers, f"dcgan grid {dataset}"
    )
    snapshots, histories = {}, []
    for (g, d), run, (states, history) in zip(grid_cells(), runs, results, strict=True):
        snapshots[cell_name(g, d)] = states
        histories.append(history.assign(g=g, d=d, gf=run.gf, df=run.df))
    return snapshots, pd.concat(histories, ignore_index=True), skipped_files(split.dataset)


def _training_set(split: Subset, preload: bool, workers: int, desc: str) -> Any:
    """The training images without those data.skip_corrupt skipped (never their neighbours in
    their place): decoded into memory (``preload``), else indexed by one pass in DataLoader
    workers and read again per epoch; either way this process records what was skipped."""
    if preload:
        return _readable(split)
    kept = [split.indices[i] for i, _ in read_in_workers(split, workers, desc)]
    return Subset(split.dataset, kept)


def _readable(subset: Subset) -> list[torch.Tensor]:
    """The images of ``subset``, without those data.skip_corrupt skipped (not their neighbours)."""
    images = [subset[i] for i in range(len(subset))]
    skipped = subset.dataset.skipped
    return [x for x, index in zip(images, subset.indices, strict=True) if index not in skipped]


def cell_cost(run: GanConfig) -> float:
    """Relative cost of training one cell: DCGAN FLOPs grow with the square of gf and of df."""
    return float(run.gf**2 + run.df**2)


def rank_checkpointer(checkpointer: Checkpointer) -> Checkpointer:
    """Where this rank keeps the checkpoints of its cells: the stage's folder for one process, a
    subfolder per rank and world size otherwise (each rank trains other cells)."""
    w = distributed.world()
    if w.size == 1:
        return checkpointer
    return Checkpointer(checkpointer.folder / f"rank-{w.rank}-of-{w.size}", keep=checkpointer.keep)


def train_cells(
    images: Any,
    runs: list[GanConfig],
    checkpointer: Checkpointer,
    device: torch.device,
    num_workers: int,
    desc: str,
) -> list[tuple[dict[int, dict[str, torch.Tensor]], pd.DataFrame]]:
    """:func:`train_gans` over the cells, shared among the torch.distributed ranks (balanced by
    :func:`cell_cost`); every rank gets every cell's snapshots and history, in ``runs`` order.
    A cell's result does not depend on the cells it is trained with (see ``GanGrid``)."""
    owner = distributed.assignment([cell_cost(r) for r in runs], distributed.world().size)
    rank = distributed.world().rank
    mine = [i for i, r in enumerate(owner) if r == rank]
    trained = (
        train_gans(images, [runs[i] for i in mine], rank_checkpointer(checkpointer), device,
                   num_workers, desc=desc)
        if mine
        else []
    )  # fmt: skip
    merged: dict[int, Any] = {}
    for part in distributed.gather(dict(zip(mine, trained, strict=True))):
        merged.update(part)
    return [merged[i] for i in range(len(runs))]


def _stack(subset: Subset) -> torch.Tensor:
    return torch.stack(_readable(subset))


def _featuriser(p: GanProfileParams, seed: int) -> Any:
    f = p.featuriser
    weights = Path(f.weights) if f.weights else None
    return build_featuriser(
        f.kind, weights=weights, sha256_prefix=f.sha256_prefix, input_size=f.input_size, seed=seed
    )


def _tests(
    real: torch.Tensor,
    real_features: np.ndarray,
    fake: torch.Tensor,
    fake_features: np.ndarray,
    options: ts.TestOptions,
    pixel: Any,
    seed: int,
) -> dict[str, ts.TestResult]:
    """The registered tests on features (Tables C.1/C.2) and a discriminator's C2ST on pixels."""
    results = {
        t: ts.two_sample_test(real_features, fake_features, method=t, seed=seed, options=options)
        for t in STATISTICS
    }
    results["pixel"] = ts.c2st(real.numpy(), fake.numpy(), pixel, options.test_fraction, seed)
    return results


@dataclass(frozen=True)
class _Reference:
    """What every snapshot is compared with: the held-out real images, their features, the tests."""

    real: torch.Tensor
    features: np.ndarray
    featurise: Any
    options: ts.TestOptions
    pixel: Any
    seed: int


def _score_snapshot(
    ref: _Reference, state: dict[str, torch.Tensor], gf: int, p: GanProfileParams
) -> tuple[dict[str, float], torch.Tensor]:
    """One generator snapshot's statistics (tests, p-values, coverage) and its samples."""
    fake = sample(state, gf, p.image_size, p.eval_samples, ref.seed + 1)
    fake_features = ref.featurise(fake)
    results = _tests(ref.real, ref.features, fake, fake_features, ref.options, ref.pixel, ref.seed)
    row = {t: r.statistic for t, r in results.items()} | {
        f"{t}_p": r.p_value for t, r in results.items()
    }
    row[QUALITY] = knn_coverage(ref.features, fake_features, p.coverage_k)
    return row, fake


def _check_snapshots(snapshots: dict[str, Any], cell: str, epochs: list[int], dataset: str) -> None:
    missing = [e for e in epochs if e not in snapshots.get(cell, {})]
    if missing:
        raise KeyError(
            f"gan_{dataset} cell {cell}: no generator snapshot for epochs {missing}; rerun stage"
            f" gan@{dataset}."
        )


def evaluate_grid(
    raw_gan: Path,
    snapshots: dict[str, dict[int, dict[str, torch.Tensor]]],
    train_skipped: list[str],
    gan: dict[str, Any],
    c2st: dict[str, Any],
    profile: str,
    seed: int,
    skip_corrupt: bool,
    images_cap: int | None,
    snapshots_cap: int | None,
    *,
    dataset: str,
) -> tuple[pd.DataFrame, dict[str, Any], Figure, dict[str, Image.Image], dict[str, float]]:
    """Every snapshot of every cell against held-out real images: Table C.1/C.2 rows, metrics,
    sample grids, timings (under the caps of :func:`train_grid`)."""
    _, p = capped_profile(gan, profile, images_cap, snapshots_cap)
    _set_threads(p)
    seed_everything(seed)
    held = split_images(raw_gan, dataset, p, seed, skip_corrupt)[1]
    real = _stack(held)
    featurise = _featuriser(p, seed)
    pc = p.pixel_c2st
    pixel = discriminator_classifier(pc.df, pc.epochs, pc.lr, pc.batch_size)
    ref = _Reference(
        real, featurise(real), featurise, ts.TestOptions.from_params(c2st), pixel, seed
    )
    rows, grids, seconds = score_cells(ref, snapshots, p, dataset)
    table = pd.DataFrame(rows)
    metrics: dict[str, Any] = {
        cell_name(g, d): {
            f"epoch_{int(r['epoch'])}": {k: float(r[k]) for k in (*ALL_TESTS, QUALITY)}
            for r in t.to_dict("records")
        }
        for (g, d), t in table.groupby(["g", "d"], sort=False)
    }
    # unreadable images skipped for training and among the held-out ones this evaluation read
    metrics |= summarise_skipped(train_skipped + skipped_files(held.dataset))
    figure = _grid_figure(grids, p, f"{dataset}: gf × df cells (rows) by snapshot (columns)")
    return table, metrics, figure, grids, {"eval_seconds_per_snapshot": float(np.mean(seconds))}


def _score_unit(
    ref: _Reference, snapshots: dict[str, Any], p: GanProfileParams, dataset: str, unit: tuple
) -> tuple[dict[str, Any], np.ndarray, float]:
    """One snapshot's table row, its sample grid and its scoring time."""
    g, d, epoch = unit
    tic = time.perf_counter()
    stats, fake = _score_snapshot(ref, snapshots[cell_name(g, d)][epoch], p.widths[g], p)
    seconds = time.perf_counter() - tic
    log.info(
        "gan %s %s epoch %d: %s",
        dataset,
        cell_name(g, d),
        epoch,
        {k: round(v, 3) for k, v in stats.items()},
    )
    row = {"dataset": dataset, "g": g, "d": d, "gf": p.widths[g], "df": p.widths[d]}
    grid = image_grid_array(fake[: p.grid_images], nrow=8)
    return {**row, "epoch": epoch, **stats}, grid, seconds


def score_cells(
    ref: _Reference, snapshots: dict[str, Any], p: GanProfileParams, dataset: str
) -> tuple[list[dict[str, Any]], dict[str, Image.Image], list[float]]:
    """Every snapshot of every cell scored (shared among the ranks; each snapshot's tests are
    seeded by the run seed alone): table rows, sample grids and seconds, in table order."""
    for g, d in grid_cells():
        _check_snapshots(snapshots, cell_name(g, d), p.snapshot_epochs, dataset)
    units = [(g, d, epoch) for g, d in grid_cells() for epoch in p.snapshot_epochs]
    costs = [p.widths[g] + p.widths[d] for g, d, _ in units]
    scored = distributed.map_units(partial(_score_unit, ref, snapshots, p, dataset), units, costs)
    grids = {
        f"{cell_name(g, d)}_epoch-{epoch:04d}": Image.fromarray(grid)
        for (g, d, epoch), (_, grid, _) in zip(units, scored, strict=True)
    }
    return [row for row, _, _ in scored], grids, [sec for _, _, sec in scored]


def _grid_figure(grids: dict[str, Image.Image], p: GanProfileParams, title: str) -> Figure:
    """Sample grids, one row per cell and one column per snapshot epoch."""
    cells = list(dict.fromkeys(name.split("_epoch-")[0] for name in grids))
    fig, axes = new_figure(len(cells), len(p.snapshot_epochs), size=1.9)
    for i, cell in enumerate(cells):
        g, d = cell.split("_")
        for j, epoch in enumerate(p.snapshot_epochs):
            ax = axes[i, j]
            ax.imshow(grids[f"{cell}_epoch-{epoch:04d}"])
            ax.set_title(f"gf={p.widths[g]} df={p.widths[d]} epoch {epoch}", fontsize=6)
            ax.axis("off")
    fig.suptitle(title, fontsize=8)
    return fig


def _spearman(a: pd.Series, b: pd.Series) -> float | None:
    """Spearman's ρ, or None when a column is constant (e.g. pixel accuracy
    1.0 everywhere: no ranking)."""
    if a.nunique() < 2 or b.nunique() < 2:
        return None
    return float(spearmanr(a, b).statistic)


def rank_models(scores: pd.DataFrame) -> pd.DataFrame:
    """One set's grid ranked by each statistic and by the quality score (rank 1 = best model)."""
    t = scores.copy()
    for s in (*ALL_TESTS, QUALITY):
        t[f"rank_{s}"] = t[s].rank(ascending=s != QUALITY, method="min").astype(int)
    return t


def table_c(ranked: pd.DataFrame) -> pd.DataFrame:
    """The set's Table C.1/C.2 block: every cell and snapshot with its statistics."""
    return ranked[TABLE_COLUMNS].sort_values(["gf", "df", "epoch"]).reset_index(drop=True)


def best_and_worst(
    ranked: pd.DataFrame,
    snapshots: dict[str, dict[int, Any]],
    gan: dict[str, Any],
    profile: str,
    seed: int,
) -> dict[str, Any]:
    """Fig. 5-7's row of one set: samples of its best and its worst model under each statistic."""
    _, p = with_profile(GanParams, gan, profile)
    panels = []
    for s in STATISTICS:
        for label, row in (
            ("best", ranked.loc[ranked[s].idxmin()]),
            ("worst", ranked.loc[ranked[s].idxmax()]),
        ):
            images = sample(
                snapshots[f"{row.g}_{row.d}"][int(row.epoch)],
                int(row.gf),
                p.image_size,
                36,
                seed + 1,
            )
            model = f"gf={row.gf} df={row.df} ep={row.epoch}"
            title = f"{row.dataset} {label} by {s.upper()}: {model}\n{s}={row[s]:.3f}"
            panels.append({"image": image_grid_array(images, nrow=6), "title": title})
    return {"dataset": str(ranked.dataset.iloc[0]), "panels": panels}


def _set_summary(t: pd.DataFrame) -> dict[str, Any]:
    """One set's rank correlations, best and worst models, quality range and Table C cells."""
    names = [*STATISTICS, "pixel"]
    corr = {
        f"{a}_vs_{b}": _spearman(t[a], t[b]) for i, a in enumerate(names) for b in names[i + 1 :]
    }
    corr |= {
        f"{a}_vs_{QUALITY}": _spearman(t[a], -t[QUALITY]) for a in names
    }  # + = agrees with quality
    best = {s: t.loc[t[s].idxmin()] for s in STATISTICS}
    worst = {s: t.loc[t[s].idxmax()] for s in STATISTICS}
    table: dict[str, Any] = {}
    for r in t.to_dict("records"):  # Tables C.1/C.2 cells for the report
        table.setdefault(f"{r['g']}_{r['d']}", {})[f"epoch_{int(r['epoch'])}"] = {
            s: float(r[s]) for s in names
        }
    return {
        "spearman": corr,
        "pixel_accuracy_mean": float(t.pixel.mean()),
        "best": {s: f"gf={r.gf},df={r.df},epoch={r.epoch}" for s, r in best.items()},
        "worst": {s: f"gf={r.gf},df={r.df},epoch={r.epoch}" for s, r in worst.items()},
        "coverage_of_worst": {s: float(r[QUALITY]) for s, r in worst.items()},
        "coverage_of_best": {s: float(r[QUALITY]) for s, r in best.items()},
        "coverage_range": {"min": float(t[QUALITY].min()), "max": float(t[QUALITY].max())},
        "models": len(t),
        "pixel_accuracy_min": float(t.pixel.min()),
        "table": table,
    }


def summarise_grids(*ranked: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any], Figure]:
    """Every set's ranked grid (one per set of params.GAN_DATASETS): the ranking table, the metrics
    (per section, per set: rank correlations between statistics and with the quality score, best
    and worst models, Tables C.1/C.2 cells) and a statistics-vs-quality figure."""
    ranking = pd.concat(ranked, ignore_index=True)
    metrics: dict[str, Any] = {}
    for t in ranked:
        for section, value in _set_summary(t).items():
            metrics.setdefault(section, {})[str(t.dataset.iloc[0])] = value
    keep = ["dataset", "g", "d", *TABLE_COLUMNS, *(f"rank_{s}" for s in (*ALL_TESTS, QUALITY))]
    return ranking[keep], metrics, _statistics_figure(ranking)


def best_worst_figure(*sets: dict[str, Any]) -> Figure:
    """Fig. 5-7: samples of the best and the worst model of each set under each statistic."""
    fig, axes = new_figure(len(sets) * len(STATISTICS), 2, size=2.4)
    for ax, panel in zip(axes.flat, (p for s in sets for p in s["panels"]), strict=True):
        ax.imshow(panel["image"])
        ax.set_title(panel["title"], fontsize=6)
        ax.axis("off")
    return fig


def _statistics_figure(ranking: pd.DataFrame) -> Figure:
    """Each statistic against the quality score, one panel per statistic, datasets as colours."""
    fig, axes = new_figure(1, len(ALL_TESTS), size=2.8)
    for ax, s in zip(axes[0], ALL_TESTS, strict=True):
        for ds, t in ranking.groupby("dataset", sort=False):
            ax.scatter(t[QUALITY], t[s], s=12, label=ds)
        ax.set(xlabel=f"{QUALITY} (higher = better)", ylabel=s, title=f"{s.upper()} vs {QUALITY}")
    axes[0, 0].legend(fontsize=7)
    return fig
