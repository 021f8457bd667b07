"""Kedro nodes of the patches stage: grid, labels and a seeded background sample, as coordinates."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from tqdm.auto import tqdm

from oquab_repro.lib.datasets import VOC_LABELS, skip_summary, voc_detection
from oquab_repro.lib.patches import (
    BACKGROUND,
    grid_overlap,
    label_patches,
    patch_grid,
    sample_training_patches,
)
from oquab_repro.lib.plots import new_figure
from oquab_repro.params import PatchesParams

log = logging.getLogger(__name__)

COLUMNS = ["split", "image_id", "width", "height", "scale", "x0", "y0", "x1", "y1", "label"]


def label_image(
    width: int, height: int, boxes: torch.Tensor, labels: torch.Tensor, cfg: PatchesParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every grid patch of one image with its scale index and label (0 = background)."""
    grid, scale_ids = patch_grid(width, height, cfg.scales, cfg.step_fraction)
    return (
        grid,
        scale_ids,
        label_patches(grid, boxes, labels, cfg.min_patch_fraction, cfg.min_object_fraction),
    )


def _kept_rows(
    split: str,
    image_id: str,
    width: int,
    height: int,
    grid: torch.Tensor,
    scale_ids: torch.Tensor,
    labels: torch.Tensor,
    keep: torch.Tensor,
) -> pd.DataFrame:
    """The kept patches of one image as table rows (coordinates, never pixels)."""
    box = grid[keep].numpy()
    return pd.DataFrame(
        {
            "split": split,
            "image_id": image_id,
            "width": width,
            "height": height,
            "scale": scale_ids[keep].numpy().astype(np.int16),
            "x0": box[:, 0],
            "y0": box[:, 1],
            "x1": box[:, 2],
            "y1": box[:, 3],
            "label": labels[keep].numpy().astype(np.int16),
        }
    )


def label_patches_node(
    voc_root: Path, params: dict[str, Any], seed: int, skip_corrupt: bool
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame, dict[str, float]]:
    """Label the patches of every image of the configured splits; keep
    positives + a background sample.

    Returns the kept patches (coordinates, never pixels), metrics, per-class patch counts and the
    labelling speed.
    """
    cfg = PatchesParams.model_validate(params)
    generator = torch.Generator().manual_seed(seed)
    frames, stats = [], {"images": 0, "patches": 0, "positive": 0, "kept_background": 0}
    counts = np.zeros((len(cfg.splits), len(VOC_LABELS)), dtype=np.int64)
    seconds, worst_overlap, read = 0.0, 1.0, []
    for s, split in enumerate(cfg.splits):
        dataset = voc_detection(voc_root, cfg.voc_year, split, skip_corrupt=skip_corrupt)
        read.append(dataset)
        for index in tqdm(range(len(dataset)), desc=f"label patches ({split})", unit="image"):
            _, target = dataset[index]
            if index in dataset.skipped:
                continue  # unreadable (data.skip_corrupt): left out, not replaced by a neighbour
            height, width = target["boxes"].canvas_size
            tic = time.perf_counter()
            grid, scale_ids, labels = label_image(
                width, height, target["boxes"].as_subclass(torch.Tensor), target["labels"], cfg
            )
            keep = sample_training_patches(labels, cfg.background_fraction, generator)
            seconds += time.perf_counter() - tic
            if stats["images"] == 0:
                worst_overlap = min(
                    grid_overlap(grid[scale_ids == i].numpy()) for i in range(len(cfg.scales))
                )
            counts[s] += np.bincount(labels.numpy(), minlength=len(VOC_LABELS))
            stats["images"] += 1
            stats["patches"] += len(labels)
            stats["positive"] += int((labels != BACKGROUND).sum())
            stats["kept_background"] += int((labels[keep] == BACKGROUND).sum())
            frames.append(
                _kept_rows(split, target["image_id"], width, height, grid, scale_ids, labels, keep)
            )
    table = pd.concat(frames, ignore_index=True)[COLUMNS]
    metrics = {
        **stats,
        "patches_per_image": stats["patches"] / stats["images"],
        "positive_fraction": stats["positive"] / stats["patches"],
        "kept": len(table),
        "min_grid_overlap": float(worst_overlap),
        **skip_summary(*read),
    }
    timings = {"labelling_images_per_s": stats["images"] / seconds}
    log.info(
        "Labelled %d patches of %d images (%.0f images/s)",
        stats["patches"],
        stats["images"],
        timings["labelling_images_per_s"],
    )
    per_class = pd.DataFrame(counts.T, columns=[f"{s}_patches" for s in cfg.splits])
    per_class.insert(0, "label", list(VOC_LABELS))
    return table, metrics, per_class, timings


def plot_examples(
    voc_root: Path, table: pd.DataFrame, params: dict[str, Any], skip_corrupt: bool
) -> Figure:
    """A few training images with their positive patches (one colour per class)."""
    cfg = PatchesParams.model_validate(params)
    dataset = voc_detection(voc_root, cfg.voc_year, cfg.splits[0], skip_corrupt=skip_corrupt)
    fig, axes = new_figure(1, 4, size=3.0)
    colours = [f"C{i % 10}" for i in range(len(VOC_LABELS))]
    for ax, index in zip(axes[0], range(4), strict=True):
        image, target = dataset[index]
        ax.imshow(image)
        rows = table[
            (table.image_id == target["image_id"])
            & (table.split == cfg.splits[0])
            & (table.label > 0)
        ]
        for r in rows.itertuples():
            ax.add_patch(
                Rectangle(
                    (r.x0, r.y0),
                    r.x1 - r.x0,
                    r.y1 - r.y0,
                    fill=False,
                    lw=0.8,
                    color=colours[r.label],
                )
            )
        for b, lab in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            ax.add_patch(
                Rectangle(
                    (b[0], b[1]),
                    b[2] - b[0],
                    b[3] - b[1],
                    fill=False,
                    lw=2,
                    ls="--",
                    color=colours[lab],
                )
            )
        ax.set_title(f"{target['image_id']}: {len(rows)} positive patches", fontsize=8)
        ax.axis("off")
    return fig
