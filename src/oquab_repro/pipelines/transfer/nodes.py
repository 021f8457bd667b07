"""Kedro nodes of the transfer stage: train the adaptation layers on labelled patches, score the
test images from their patches (mean of y^k), and measure per-class AP under both definitions."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm.auto import tqdm

from oquab_repro.lib.adaptation import (
    pretraining_findings,
    trainable_parameters,
    trainable_part,
    variant_network,
)
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import VOC_CLASSES, skip_summary, voc_detection
from oquab_repro.lib.metrics import AP_METHODS, classification_labels, mean_ap, per_class_ap
from oquab_repro.lib.models.alexnet import from_bundle, frozen_depth, split_at, to_bundle
from oquab_repro.lib.patches import PatchCrops, heat_map, score_image, score_images
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.lib.thesis import row_labels, thesis_rows
from oquab_repro.lib.training import (
    TrainConfig,
    capped_run,
    fingerprint,
    fit,
    set_threads,
    step_timings,
)
from oquab_repro.params import (
    PatchesParams,
    PretrainParams,
    TransferParams,
    cap,
    with_profile,
)

log = logging.getLogger(__name__)


def _images(
    voc_root: Path, year: str, split: str, skip_corrupt: bool
) -> tuple[dict[str, torch.Tensor], Dataset]:
    """Every readable image of a VOC split as a uint8 tensor (C × H × W), keyed by image id, and
    the dataset (its ``skipped`` images: data.skip_corrupt)."""
    dataset = voc_detection(voc_root, year, split, skip_corrupt=skip_corrupt)
    out = {}
    for i in tqdm(range(len(dataset)), desc=f"load VOC {split}", unit="image", leave=False):
        image, target = dataset[i]
        if i not in dataset.skipped:
            out[target["image_id"]] = pil_to_tensor(image)
    return out, dataset


def _patch_sets(
    voc_root: Path,
    patches: pd.DataFrame,
    cfg: TransferParams,
    voc_year: str,
    size: int,
    mean: list[float],
    std: list[float],
    flip: bool,
    skip_corrupt: bool,
) -> tuple[dict[str, PatchCrops], dict[str, Any]]:
    """The labelled patches of the train and val image sets, cropped on the fly, and what
    data.skip_corrupt skipped."""
    sets, read = {}, []
    for split in (cfg.train_set, cfg.val_set):
        rows = patches[patches.split == split]
        if rows.empty:
            raise ValueError(
                f"no labelled patches for VOC split '{split}': "
                "add it to patches.splits in params.yaml"
            )
        images, dataset = _images(voc_root, voc_year, split, skip_corrupt)
        read.append(dataset)
        sets[split] = PatchCrops(
            images,
            rows,
            size,
            mean,
            std,
            flip=flip and split == cfg.train_set,
        )
    return sets, skip_summary(*read)


def _run_id(
    params: dict[str, Any],
    patches_params: dict[str, Any],
    net: dict[str, Any],
    patches: pd.DataFrame,
    bundle: dict[str, Any] | None,
    variant: str,
    profile: str,
    seed: int,
) -> str:
    """What a variant's checkpoints depend on (its own entry of transfer.variants only, so another
    variant's change keeps them)."""
    own = {**params, "variants": {variant: params["variants"][variant]}}
    table = int(pd.util.hash_pandas_object(patches, index=False).sum())
    settings = {"transfer": own, "patches": patches_params, "net": net, "variant": variant}
    settings |= {"profile": profile, "seed": seed, "patch_table": table}
    return fingerprint(settings, bundle["state_dict"] if bundle else None)


def train_transfer(
    voc_root: Path,
    patches: pd.DataFrame,
    checkpointer: Checkpointer,
    params: dict[str, Any],
    patches_params: dict[str, Any],
    pretrain_params: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    skip_corrupt: bool,
    steps_cap: int | None,
    epochs_cap: int | None,
    *source: dict[str, Any],
    variant: str,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], dict[str, float]]:
    """Copy C1–FC7 of the variant's ``source`` bundle (none: random init), freeze its layers, add
    FCa…FCb (K+1 outputs) and train on the patches; return the bundle, history, stats, timings.
    ``steps_cap`` / ``epochs_cap``: ``caps.steps_per_epoch`` / ``caps.epochs`` (None: no cap)."""
    cfg, prof = with_profile(TransferParams, params, profile)
    pcfg = PatchesParams.model_validate(patches_params)
    _, pre = with_profile(PretrainParams, pretrain_params, profile)
    bundle = source[0] if source else None
    set_threads(prof.torch_threads)
    seed_everything(seed)
    outputs = len(VOC_CLASSES) + 1
    model, mean, std = variant_network(bundle, cfg.variants[variant], pre.net, prof, outputs, seed)
    size = model.trunk.spec.input_size
    sets, skipped = _patch_sets(
        voc_root, patches, cfg, pcfg.voc_year, size, mean, std, prof.flip, skip_corrupt
    )
    dev = resolve_device(device)
    tic = time.perf_counter()
    trained, sets, frozen = trainable_part(
        model,
        sets,
        jitter=prof.flip,
        cache_inputs=prof.cache_crops,
        batch_size=prof.batch_size,
        device=dev,
    )
    net = pretrain_params[profile]["net"]
    caps = capped_run(steps=steps_cap, epochs=epochs_cap)
    run_id = _run_id(
        {**params, **caps}, patches_params, net, patches, bundle, variant, profile, seed
    )
    loop = {
        "max_epochs": cap(prof.max_epochs, epochs_cap),
        "batch_size": prof.batch_size,
        "num_workers": prof.num_workers,
        "max_steps": steps_cap,
    }
    train_cfg = TrainConfig.from_optim(cfg.optim, **loop, seed=seed)
    train, val = sets[cfg.train_set], sets[cfg.val_set]
    history = fit(
        trained, train, val, train_cfg, dev, checkpointer, desc=f"transfer {variant}", run_id=run_id
    )
    stats = {
        "train_patches": len(train),
        "frozen_prefix_layers": frozen,
        "trainable_parameters": trainable_parameters(model),
        "epochs": len(history),
        "val_patch_top1_error": float(history.val_top1_error.iloc[-1]),
        **skipped,
    }
    timings = {"train_seconds": time.perf_counter() - tic}
    timings |= step_timings(history, len(train), train_cfg)
    classes = ["__background__", *VOC_CLASSES]
    return to_bundle(model.cpu(), classes, mean, std), history, stats, timings


def _shared_trunk(models: dict[str, Any], depth: int) -> torch.nn.Module:
    """The first ``depth`` layers, checked to be the same in every model (frozen copies of one
    source)."""
    names = list(models)
    trunk, _ = split_at(models[names[0]], depth)
    for v in names[1:]:
        for (name, a), b in zip(
            trunk.state_dict().items(),
            split_at(models[v], depth)[0].state_dict().values(),
            strict=True,
        ):
            if not torch.equal(a, b):
                raise ValueError(
                    f"transfer variants {names[0]} and {v} differ in their frozen layer "
                    f"{name}: they cannot share a trunk"
                )
    return trunk


def _score_rows(
    variant: str, scores: dict[str, torch.Tensor], labels: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    return [
        {
            "variant": variant,
            "image_id": i,
            **{f"score_{c}": float(x) for c, x in zip(VOC_CLASSES, s[1:], strict=True)},
            **{f"label_{c}": int(y) for c, y in zip(VOC_CLASSES, labels[i], strict=True)},
        }
        for i, s in scores.items()
    ]


def score_test_images(
    voc_root: Path,
    params: dict[str, Any],
    patches_params: dict[str, Any],
    profile: str,
    device: str,
    skip_corrupt: bool,
    *bundles: dict[str, Any],
    variants: tuple[str, ...],
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, float]]:
    """Image scores (mean over all grid patches of y^k) and devkit labels of every test image, for
    the ``variants`` of one source network at once (``bundles`` in the same order): one table with
    a ``variant`` column, the test set's facts, and the timings.

    Their common frozen layers (C1–C5 for PRE-1512U and the frozen variants, C1–FC7 when all
    freeze them) are identical copies of the source's, so they run once per patch for all
    variants; only the layers after them run per variant. Same numbers as scoring each alone.
    """
    cfg, prof = with_profile(TransferParams, params, profile)
    pcfg = PatchesParams.model_validate(patches_params)
    set_threads(prof.torch_threads)
    dev = resolve_device(device)
    models = {v: from_bundle(b).to(dev).eval() for v, b in zip(variants, bundles, strict=True)}
    depth = min(frozen_depth(cfg.variants[v].frozen) for v in variants)
    trunk = _shared_trunk(models, depth)
    heads = {v: split_at(m, depth)[1] for v, m in models.items()}
    dataset = voc_detection(voc_root, pcfg.voc_year, cfg.test_set, skip_corrupt=skip_corrupt)
    labels: dict[str, np.ndarray] = {}

    def images():
        for i in tqdm(range(len(dataset)), desc=f"score VOC {cfg.test_set}", unit="image"):
            image, target = dataset[i]
            if i in dataset.skipped:
                continue  # unreadable (data.skip_corrupt): left out, not scored twice
            labels[target["image_id"]] = classification_labels(
                target["labels"], target["difficult"], len(VOC_CLASSES)
            )
            yield target["image_id"], pil_to_tensor(image)

    first = bundles[0]
    tic = time.perf_counter()
    scores = score_images(
        images(),
        trunk,
        heads,
        pcfg.scales,
        pcfg.step_fraction,
        first["spec"]["input_size"],
        first["mean"],
        first["std"],
        cfg.k,
        dev,
    )
    seconds = time.perf_counter() - tic
    table = pd.DataFrame([row for v in variants for row in _score_rows(v, scores[v], labels)])
    test = {
        "test_images": len(labels),
        "shared_frozen_layers": depth,
        "variants_scored_together": len(variants),
        **skip_summary(dataset),
    }
    return table, test, {"scoring_seconds": seconds, "scoring_images_per_s": len(labels) / seconds}


def evaluate(
    scores: pd.DataFrame, test: dict[str, Any], train_stats: dict[str, Any], *, variant: str
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per-class AP (VOC07 11-point and VOC10+ envelope) and mAP of one variant's scores, as
    metrics and a per-class table."""
    scores = scores[scores.variant == variant]
    s = scores[[f"score_{c}" for c in VOC_CLASSES]].to_numpy()
    y = scores[[f"label_{c}" for c in VOC_CLASSES]].to_numpy()
    present = [i for i, c in enumerate(VOC_CLASSES) if (y[:, i] > 0).any()]
    if len(present) < len(VOC_CLASSES):
        log.warning(
            "Classes without a positive test image are left out of mAP: %s",
            [c for i, c in enumerate(VOC_CLASSES) if i not in present],
        )
    classes = [VOC_CLASSES[i] for i in present]
    metrics: dict[str, Any] = {"train": train_stats, "test": test}
    table = pd.DataFrame({"class": classes})
    for method in AP_METHODS:
        aps = per_class_ap(s[:, present], y[:, present], classes, method)
        metrics[f"map_{method}"] = mean_ap(aps)
        metrics[f"ap_{method}"] = aps
        table[f"ap_{method}"] = [aps[c] for c in classes]
    return metrics, table


def plot_heat_maps(
    voc_root: Path,
    bundle: dict[str, Any],
    scores: pd.DataFrame,
    params: dict[str, Any],
    patches_params: dict[str, Any],
    profile: str,
    device: str,
    skip_corrupt: bool,
    *,
    variant: str,
) -> Figure:
    """Fig. 3-1 / 3-9: for a few test images, per-class score maps averaged over covering patches.

    Each map shows y (the patch softmax output) averaged over the patches covering each pixel,
    for the image's highest-scoring classes; colours span 0 … the map's peak (given in the title).
    """
    cfg, prof = with_profile(TransferParams, params, profile)
    scores = scores[scores.variant == variant]
    pcfg = PatchesParams.model_validate(patches_params)
    set_threads(prof.torch_threads)
    dev = resolve_device(device)
    model = from_bundle(bundle).to(dev).eval()
    dataset = voc_detection(voc_root, pcfg.voc_year, cfg.test_set, skip_corrupt=skip_corrupt)
    n, kc = prof.heatmap_images, prof.heatmap_classes
    fig, axes = new_figure(n, kc + 1, size=2.4)
    for row, index in enumerate(np.linspace(0, len(dataset) - 1, n).astype(int)):
        image, target = dataset[int(index)]
        pixels = pil_to_tensor(image)
        boxes, probs = score_image(
            model,
            pixels,
            pcfg.scales,
            pcfg.step_fraction,
            bundle["spec"]["input_size"],
            bundle["mean"],
            bundle["std"],
            dev,
        )
        maps = heat_map(boxes, probs[:, 1:], pixels.shape[1], pixels.shape[2])
        image_scores = (
            scores.set_index("image_id")
            .loc[target["image_id"], [f"score_{c}" for c in VOC_CLASSES]]
            .to_numpy(float)
        )
        truth = sorted({VOC_CLASSES[label - 1] for label in target["labels"].tolist()})
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"{target['image_id']}: {', '.join(truth)}", fontsize=7)
        for col, c in enumerate(np.argsort(-image_scores)[:kc], start=1):
            axes[row, col].imshow(image)
            peak = float(maps[c].max())
            axes[row, col].imshow(
                maps[c].numpy(), cmap="jet", alpha=0.55, vmin=0, vmax=max(peak, 1e-6)
            )
            axes[row, col].set_title(
                f"{VOC_CLASSES[c]}: score {image_scores[c]:.2g}, peak y {peak:.2f}", fontsize=7
            )
        for ax in axes[row]:
            ax.axis("off")
    return fig


# (table id in the reference file, our AP definition, what the thesis measured on)
TABLES = {
    "3.1": ("voc07", "thesis: VOC 2007 test (11-point AP)"),
    "3.2": ("voc10", "thesis: VOC 2012 test (area under the precision envelope)"),
}


def _table(
    variants: dict[str, dict[str, Any]],
    method: str,
    thesis: dict[str, tuple[str, float | None]],
    labels: dict[str, str],
    thesis_label: str,
) -> pd.DataFrame:
    rows = []
    for variant, metrics in variants.items():
        aps = {c: 100 * v for c, v in metrics[f"ap_{method}"].items()}
        rows.append(
            {
                "row": labels[variant],
                "source": f"ours ({method})",
                **aps,
                "mAP": 100 * metrics[f"map_{method}"],
            }
        )
        rows.append(
            {
                "row": labels[variant],
                "source": thesis_label,
                "mAP": thesis.get(variant, (None, None))[1],
            }
        )
    frame = pd.DataFrame(rows)
    return frame[["row", "source", *[c for c in VOC_CLASSES if c in frame], "mAP"]]


def _map_figure(maps: dict[str, dict[str, float]], labels: dict[str, str]) -> Figure:
    fig, axes = new_figure(1, 1, size=5.0)
    ax = axes[0, 0]
    names = list(maps)
    x = np.arange(len(names))
    for j, m in enumerate(AP_METHODS):
        ax.bar(x + (j - 0.5) * 0.38, [maps[r][m] for r in names], width=0.38, label=f"mAP ({m})")
    ax.set_xticks(x, [labels[v] for v in names], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("mAP (%)")
    ax.set_title("Transfer to the target set: mAP per variant", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def report_tables(
    reference: dict[str, Any], variants_params: dict[str, Any], *variant_metrics: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], Figure]:
    """Tables 3.1/3.2 shaped: per-class AP (%) and mAP of every variant (``variant_metrics`` in the
    order of ``transfer.variants``), with the thesis' mAP beside.

    Ours are measured on this profile's VOC test set (mini: generated scenes), so only the
    ordering of rows, not the absolute values, is comparable with the thesis.
    """
    variants = dict(zip(variants_params, variant_metrics, strict=True))
    labels = row_labels(reference, "3.1", variants)
    tables = [
        _table(variants, method, thesis_rows(reference, tid), labels, label)
        for tid, (method, label) in TABLES.items()
    ]
    maps = {
        v: {m: 100 * metrics[f"map_{m}"] for m in AP_METHODS} for v, metrics in variants.items()
    }
    sources = {v: spec["source"] for v, spec in variants_params.items()}
    # per-class AP (%) of every variant: the report's per-class Tables 3.1/3.2 read these
    per_class = {
        f"ap_{m}": {v: {c: 100 * ap for c, ap in r[f"ap_{m}"].items()} for v, r in variants.items()}
        for m in AP_METHODS
    }
    summary = {
        "map_voc07": {v: m["voc07"] for v, m in maps.items()},
        "map_voc10": {v: m["voc10"] for v, m in maps.items()},
        **per_class,
        **pretraining_findings({v: m["voc07"] for v, m in maps.items()}, sources, "voc07"),
    }
    return tables[0], tables[1], summary, _map_figure(maps, labels)
