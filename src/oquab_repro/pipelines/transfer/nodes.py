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
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm.auto import tqdm

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import VOC_CLASSES, voc_detection
from oquab_repro.lib.metrics import AP_METHODS, classification_labels, mean_ap, per_class_ap
from oquab_repro.lib.models.alexnet import (
    from_bundle,
    frozen_depth,
    frozen_prefix,
    spec_from_params,
    split_at,
    to_bundle,
    transfer_network,
)
from oquab_repro.lib.patches import PatchCrops, heat_map, score_image, score_images
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.lib.training import TrainConfig, fingerprint, fit, precompute, set_threads
from oquab_repro.params import PatchesParams, PretrainProfile, TransferParams, TransferProfile

log = logging.getLogger(__name__)


def _images(voc_root: Path, year: str, split: str) -> dict[str, torch.Tensor]:
    """Every image of a VOC split as a uint8 tensor (C × H × W), keyed by image id."""
    dataset = voc_detection(voc_root, year, split)
    out = {}
    for i in tqdm(range(len(dataset)), desc=f"load VOC {split}", unit="image", leave=False):
        image, target = dataset[i]
        out[target["image_id"]] = pil_to_tensor(image)
    return out


def train_transfer(
    voc_root: Path,
    patches: pd.DataFrame,
    source_bundle: dict[str, Any] | None,
    checkpointer: Checkpointer,
    params: dict[str, Any],
    patches_params: dict[str, Any],
    pretrain_params: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    *,
    variant: str,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Copy C1–FC7, freeze the variant's layers, add FCa…FCb (K+1 outputs) and train on the patches."""
    cfg = TransferParams.model_validate(params)
    prof: TransferProfile = getattr(cfg, profile)
    pcfg = PatchesParams.model_validate(patches_params)
    spec = cfg.nopre if variant == "nopre" else cfg.variants[variant]
    net_params = PretrainProfile.model_validate(pretrain_params[profile]).net
    set_threads(prof.torch_threads)
    seed_everything(seed)
    scratch = None if source_bundle else spec_from_params(net_params.input_size, [c.model_dump() for c in net_params.conv], cfg.nopre.fc_dim, net_params.dropout)
    model = transfer_network(source_bundle, scratch, spec.frozen, [prof.hidden_dim] * (spec.adaptation_layers - 1), len(VOC_CLASSES) + 1, seed)
    mean, std = (source_bundle["mean"], source_bundle["std"]) if source_bundle else (net_params.mean, net_params.std)
    size = model.trunk.spec.input_size
    sets = {}
    for split in (cfg.train_set, cfg.val_set):
        rows = patches[patches.split == split]
        if rows.empty:
            raise ValueError(f"no labelled patches for VOC split '{split}': add it to patches.splits in params.yaml")
        sets[split] = PatchCrops(_images(voc_root, pcfg.voc_year, split), rows, size, mean, std, flip=prof.flip and split == cfg.train_set)
    o = cfg.optim
    train_cfg = TrainConfig(o.lr, o.momentum, o.weight_decay, o.lr_factor, o.patience, o.max_reductions, prof.max_epochs, prof.batch_size, prof.num_workers, seed, o.plateau_on)
    dev = resolve_device(device)
    tic = time.perf_counter()
    prefix, rest = frozen_prefix(model)
    if not prof.flip and (len(prefix) or prof.cache_crops):  # no jitter: frozen layers' outputs (or crops) never change
        sets = {k: precompute(prefix, v, prof.batch_size, dev) for k, v in sets.items()}
        trained = rest
    else:
        trained = model
    settings = {"transfer": params, "patches": patches_params, "net": pretrain_params[profile]["net"], "profile": profile, "variant": variant, "seed": seed, "patch_table": int(pd.util.hash_pandas_object(patches, index=False).sum())}
    run_id = fingerprint(settings, source_bundle["state_dict"] if source_bundle else None)
    history = fit(trained, sets[cfg.train_set], sets[cfg.val_set], train_cfg, dev, checkpointer, desc=f"transfer {variant}", run_id=run_id)
    metrics = {
        "train_patches": len(sets[cfg.train_set]),
        "frozen_prefix_layers": len(prefix),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "epochs": len(history),
        "val_patch_top1_error": float(history.val_top1_error.iloc[-1]),
        "train_seconds": time.perf_counter() - tic,
    }
    return to_bundle(model.cpu(), ["__background__", *VOC_CLASSES], mean, std), history, metrics


def score_test_images(
    voc_root: Path, params: dict[str, Any], patches_params: dict[str, Any], profile: str, device: str, **bundles: dict[str, Any]
) -> tuple[Any, ...]:
    """Image scores (mean over all grid patches of y^k) and devkit labels of every test image, for
    the variants of one source network at once (``bundles``: ``w_<variant>`` → trained bundle).

    Their common frozen layers (C1–C5 for PRE-1512U and the frozen variants, C1–FC7 when all
    freeze them) are identical copies of the source's, so they run once per patch for all
    variants; only the layers after them run per variant. Same numbers as scoring each alone.
    """
    cfg = TransferParams.model_validate(params)
    pcfg = PatchesParams.model_validate(patches_params)
    set_threads(getattr(cfg, profile).torch_threads)
    dev = resolve_device(device)
    variants = [k.removeprefix("w_") for k in bundles]
    models = {v: from_bundle(b).to(dev).eval() for v, b in zip(variants, bundles.values(), strict=True)}
    depth = min(frozen_depth((cfg.nopre if v == "nopre" else cfg.variants[v]).frozen) for v in variants)
    trunk, _ = split_at(models[variants[0]], depth)
    for v in variants[1:]:
        for (name, a), b in zip(trunk.state_dict().items(), split_at(models[v], depth)[0].state_dict().values(), strict=True):
            if not torch.equal(a, b):
                raise ValueError(f"transfer variants {variants[0]} and {v} differ in their frozen layer {name}: they cannot share a trunk")
    heads = {v: split_at(models[v], depth)[1] for v in variants}
    first = bundles[f"w_{variants[0]}"]
    dataset = voc_detection(voc_root, pcfg.voc_year, cfg.test_set)
    labels: dict[str, np.ndarray] = {}

    def images():
        for i in tqdm(range(len(dataset)), desc=f"score VOC {cfg.test_set}", unit="image"):
            image, target = dataset[i]
            labels[target["image_id"]] = classification_labels(target["labels"], target["difficult"], len(VOC_CLASSES))
            yield target["image_id"], pil_to_tensor(image)

    tic = time.perf_counter()
    scores = score_images(images(), trunk, heads, pcfg.scales, pcfg.step_fraction, first["spec"]["input_size"], first["mean"], first["std"], cfg.k, dev)
    seconds = time.perf_counter() - tic
    frames = []
    for v in variants:
        rows = [
            {"image_id": i, **{f"score_{c}": float(x) for c, x in zip(VOC_CLASSES, s[1:], strict=True)}, **{f"label_{c}": int(y) for c, y in zip(VOC_CLASSES, labels[i], strict=True)}}
            for i, s in scores[v].items()
        ]
        frames.append(pd.DataFrame(rows))
    timing = {"test_images": len(labels), "shared_frozen_layers": depth, "variants_scored_together": len(variants), "scoring_seconds": seconds, "scoring_images_per_s": len(labels) / seconds}
    return (*frames, timing)


def evaluate(scores: pd.DataFrame, timing: dict[str, Any], train_metrics: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per-class AP (VOC07 11-point and VOC10+ envelope) and mAP, as metrics and a per-class table."""
    s = scores[[f"score_{c}" for c in VOC_CLASSES]].to_numpy()
    y = scores[[f"label_{c}" for c in VOC_CLASSES]].to_numpy()
    present = [i for i, c in enumerate(VOC_CLASSES) if (y[:, i] > 0).any()]
    if len(present) < len(VOC_CLASSES):
        log.warning("Classes without a positive test image are left out of mAP: %s", [c for i, c in enumerate(VOC_CLASSES) if i not in present])
    classes = [VOC_CLASSES[i] for i in present]
    metrics: dict[str, Any] = {"train": train_metrics, "test": timing}
    table = pd.DataFrame({"class": classes})
    for method in AP_METHODS:
        aps = per_class_ap(s[:, present], y[:, present], classes, method)
        metrics[f"map_{method}"] = mean_ap(aps)
        metrics[f"ap_{method}"] = aps
        table[f"ap_{method}"] = [aps[c] for c in classes]
    return metrics, table


def plot_heat_maps(voc_root: Path, bundle: dict[str, Any], scores: pd.DataFrame, params: dict[str, Any], patches_params: dict[str, Any], profile: str, device: str) -> Figure:
    """Fig. 3-1 / 3-9: for a few test images, per-class score maps averaged over covering patches.

    Each map shows y (the patch softmax output) averaged over the patches covering each pixel,
    for the image's highest-scoring classes; colours span 0 … the map's peak (given in the title).
    """
    cfg = TransferParams.model_validate(params)
    prof: TransferProfile = getattr(cfg, profile)
    pcfg = PatchesParams.model_validate(patches_params)
    set_threads(prof.torch_threads)
    dev = resolve_device(device)
    model = from_bundle(bundle).to(dev).eval()
    dataset = voc_detection(voc_root, pcfg.voc_year, cfg.test_set)
    n, kc = prof.heatmap_images, prof.heatmap_classes
    fig, axes = new_figure(n, kc + 1, size=2.4)
    for row, index in enumerate(np.linspace(0, len(dataset) - 1, n).astype(int)):
        image, target = dataset[int(index)]
        pixels = pil_to_tensor(image)
        boxes, probs = score_image(model, pixels, pcfg.scales, pcfg.step_fraction, bundle["spec"]["input_size"], bundle["mean"], bundle["std"], dev)
        maps = heat_map(boxes, probs[:, 1:], pixels.shape[1], pixels.shape[2])
        image_scores = scores.set_index("image_id").loc[target["image_id"], [f"score_{c}" for c in VOC_CLASSES]].to_numpy(float)
        truth = sorted({VOC_CLASSES[label - 1] for label in target["labels"].tolist()})
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(f"{target['image_id']}: {', '.join(truth)}", fontsize=7)
        for col, c in enumerate(np.argsort(-image_scores)[:kc], start=1):
            axes[row, col].imshow(image)
            peak = float(maps[c].max())
            axes[row, col].imshow(maps[c].numpy(), cmap="jet", alpha=0.55, vmin=0, vmax=max(peak, 1e-6))
            axes[row, col].set_title(f"{VOC_CLASSES[c]}: score {image_scores[c]:.2g}, peak y {peak:.2f}", fontsize=7)
        for ax in axes[row]:
            ax.axis("off")
    return fig


# Table rows of the thesis for each variant (report tables and the reference file use these names).
VARIANT_ROWS: dict[str, str] = {
    "nopre": "NO PRETRAIN",
    "pre_in1000c": "PRE-1000C",
    "pre_in1000r": "PRE-1000R",
    "pre_in1512": "PRE-1512",
    "pre_in1512u": "PRE-1512U",
    "pre_in1512_a1": "PRE-1512, 1 adaptation layer",
    "pre_in1512_a3": "PRE-1512, 3 adaptation layers",
}
# (table id in the reference file, our AP definition, what the thesis measured on)
TABLES = {
    "3.1": ("voc07", "thesis: VOC 2007 test (11-point AP)"),
    "3.2": ("voc10", "thesis: VOC 2012 test (area under the precision envelope)"),
}


def thesis_map(reference: dict[str, Any], table_id: str) -> dict[str, float | None]:
    """Row label → the thesis' mAP for a Chapter 3 table of ``reference/thesis_numbers.yaml``."""
    for table in reference["tables"]:
        if table["id"] == table_id:
            return {row["label"]: row["thesis"][0] for row in table["rows"]}
    raise KeyError(f"src/oquab_repro/reference/thesis_numbers.yaml: no table with id '{table_id}'; add it (see its header).")


def report_tables(reference: dict[str, Any], **variant_metrics: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], Figure]:
    """Tables 3.1/3.2 shaped: per-class AP (%) and mAP of every variant, with the thesis' mAP beside.

    Ours are measured on this profile's VOC test set (mini: generated scenes), so only the
    ordering of rows, not the absolute values, is comparable with the thesis.
    """
    out = []
    for table_id, (method, thesis_label) in TABLES.items():
        reference_maps = thesis_map(reference, table_id)
        rows = []
        for variant, metrics in variant_metrics.items():
            name = VARIANT_ROWS[variant.removeprefix("m_")]
            rows.append({"row": name, "source": f"ours ({method})", **{c: 100 * v for c, v in metrics[f"ap_{method}"].items()}, "mAP": 100 * metrics[f"map_{method}"]})
            rows.append({"row": name, "source": thesis_label, "mAP": reference_maps.get(name)})
        frame = pd.DataFrame(rows)
        out.append(frame[["row", "source", *[c for c in VOC_CLASSES if c in frame], "mAP"]])
    maps = {v.removeprefix("m_"): {m: 100 * variant_metrics[v][f"map_{m}"] for m in AP_METHODS} for v in variant_metrics}
    summary = {
        "map_voc07": {v: m["voc07"] for v, m in maps.items()},
        "map_voc10": {v: m["voc10"] for v, m in maps.items()},
        # per-class AP (%) of every variant: the report's per-class Tables 3.1/3.2 read these
        **{f"ap_{m}": {v.removeprefix("m_"): {c: 100 * ap for c, ap in variant_metrics[v][f"ap_{m}"].items()} for v in variant_metrics} for m in AP_METHODS},
        "pretraining_gain_voc07": maps["pre_in1512"]["voc07"] - maps["nopre"]["voc07"],
        "pretraining_helps": bool(maps["pre_in1512"]["voc07"] > maps["nopre"]["voc07"]),
        "best_pretrained_map_voc07": max(m["voc07"] for v, m in maps.items() if v != "nopre"),
    }
    fig, axes = new_figure(1, 1, size=5.0)
    ax = axes[0, 0]
    names = list(maps)
    x = np.arange(len(names))
    for j, m in enumerate(AP_METHODS):
        ax.bar(x + (j - 0.5) * 0.38, [maps[r][m] for r in names], width=0.38, label=f"mAP ({m})")
    ax.set_xticks(x, [VARIANT_ROWS[v] for v in names], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("mAP (%)")
    ax.set_title("Transfer to the target set: mAP per variant", fontsize=9)
    ax.legend(fontsize=7)
    return out[0], out[1], summary, fig
