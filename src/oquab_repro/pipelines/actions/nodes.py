"""Kedro nodes of the action stage (Table 3.3): crop one mirror-padded square around every person,
train the adaptation layers of NO PRETRAIN, PRE-1512 and PRE-1512U on them, and measure per-action AP."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.utils.data import TensorDataset
from torchvision.transforms.v2.functional import pil_to_tensor

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import VOC_ACTIONS, voc_actions
from oquab_repro.lib.metrics import AP_METHODS, mean_ap, per_class_ap
from oquab_repro.lib.models.alexnet import (
    frozen_prefix,
    spec_from_params,
    to_bundle,
    transfer_network,
)
from oquab_repro.lib.patches import crop_patches, mirror_crop, normalise, square_around
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device
from oquab_repro.lib.training import TrainConfig, fingerprint, fit, precompute, set_threads
from oquab_repro.params import ActionsParams, PretrainProfile, TransferParams

log = logging.getLogger(__name__)

# Table 3.3 row of each variant (the reference file uses these labels)
ACTION_ROWS: dict[str, str] = {"nopre": "NO PRETRAIN", "pre_in1512": "PRE-1512", "pre_in1512u": "PRE-1512U"}


def person_crops(voc_root: Path, split: str, side_factor: float, size: int) -> dict[str, Any]:
    """One ``size`` × ``size`` crop ([0, 1] RGB) per annotated person of a VOC2012 action split,
    with its image id and devkit labels (+1 doing the action, −1 not; persons × actions)."""
    dataset = voc_actions(voc_root, split)
    crops, labels, ids = [], [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        left, top, side = square_around(target["boxes"][0].tolist(), side_factor)
        square = mirror_crop(pil_to_tensor(image), left, top, side).div_(255)
        crops.append(crop_patches(square, torch.tensor([[0.0, 0.0, side, side]]), size)[0])
        labels.append(torch.where(target["actions"] > 0, 1, -1))
        ids.append(target["image_id"])
    if not crops:
        raise ValueError(f"{voc_root}: VOC2012 action split '{split}' has no annotated person")
    return {"crops": torch.stack(crops), "labels": torch.stack(labels).to(torch.int8), "image_ids": ids}


def load_persons(voc_root: Path, params: dict[str, Any], pretrain_params: dict[str, Any], profile: str, seed: int) -> dict[str, Any]:
    """Person crops of the train split (split by image into fit / holdout) and of the test split."""
    cfg = ActionsParams.model_validate(params)
    size = PretrainProfile.model_validate(pretrain_params[profile]).net.input_size
    train = person_crops(voc_root, cfg.train_set, cfg.side_factor, size)
    test = person_crops(voc_root, cfg.test_set, cfg.side_factor, size)
    images = sorted(set(train["image_ids"]))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(images, max(1, round(cfg.holdout_fraction * len(images))), replace=False).tolist())
    mask = torch.tensor([i in held for i in train["image_ids"]])
    pick = lambda d, m: {"crops": d["crops"][m], "labels": d["labels"][m], "image_ids": [i for i, k in zip(d["image_ids"], m.tolist(), strict=True) if k]}  # noqa: E731
    return {"fit": pick(train, ~mask), "holdout": pick(train, mask), "test": test}


def training_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(person index, action index) pairs for softmax training: a person doing several actions
    appears once per action, a person doing none of the 10 (VOC's "other") is left out."""
    person, action = torch.nonzero(labels > 0, as_tuple=True)
    return person, action


def _dataset(split: dict[str, Any], mean: list[float], std: list[float], flip: bool) -> TensorDataset:
    person, action = training_targets(split["labels"])
    x = normalise(split["crops"][person], mean, std)
    if flip:  # mirrored copies: a fixed augmentation, so frozen-layer outputs can still be computed once
        x, action = torch.cat([x, x.flip(-1)]), torch.cat([action, action])
    return TensorDataset(x, action)


def train_action(
    persons: dict[str, Any],
    source_bundle: dict[str, Any] | None,
    checkpointer: Checkpointer,
    params: dict[str, Any],
    transfer_params: dict[str, Any],
    pretrain_params: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    *,
    variant: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one Table 3.3 network (its transfer variant's frozen layers and adaptation layers) on
    the persons; return its bundle and its softmax scores on the test persons."""
    cfg = ActionsParams.model_validate(params)
    prof = getattr(cfg, profile)
    tcfg = TransferParams.model_validate(transfer_params)
    tprof = getattr(tcfg, profile)
    spec = tcfg.nopre if variant == "nopre" else tcfg.variants[variant]
    net = PretrainProfile.model_validate(pretrain_params[profile]).net
    set_threads(tprof.torch_threads)
    scratch = None if source_bundle else spec_from_params(net.input_size, [c.model_dump() for c in net.conv], tcfg.nopre.fc_dim, net.dropout)
    model = transfer_network(source_bundle, scratch, spec.frozen, [tprof.hidden_dim] * (spec.adaptation_layers - 1), len(VOC_ACTIONS), seed)
    mean, std = (source_bundle["mean"], source_bundle["std"]) if source_bundle else (net.mean, net.std)
    sets = {k: _dataset(persons[k], mean, std, tprof.flip and k == "fit") for k in ("fit", "holdout")}
    dev = resolve_device(device)
    tic = time.perf_counter()
    prefix, rest = frozen_prefix(model)
    trained = model
    if len(prefix):
        sets = {k: precompute(prefix, v, prof.batch_size, dev) for k, v in sets.items()}
        trained = rest
    o = tcfg.optim
    train_cfg = TrainConfig(o.lr, o.momentum, o.weight_decay, o.lr_factor, o.patience, o.max_reductions, prof.max_epochs, prof.batch_size, 0, seed, o.plateau_on)
    settings = {"actions": params, "transfer_variant": spec.model_dump(), "optim": o.model_dump(), "net": net.model_dump(), "hidden": tprof.hidden_dim, "flip": tprof.flip, "variant": variant, "seed": seed,
                "persons": [float(persons[k]["crops"].sum()) for k in ("fit", "holdout")]}  # fmt: skip
    run_id = fingerprint(settings, source_bundle["state_dict"] if source_bundle else None)
    history = fit(trained, sets["fit"], sets["holdout"], train_cfg, dev, checkpointer, desc=f"actions {variant}", run_id=run_id)
    model.eval()
    with torch.no_grad():
        probs = model(normalise(persons["test"]["crops"], mean, std).to(dev)).softmax(dim=1).cpu()
    result = {
        "scores": probs.numpy(),
        "epochs": len(history),
        "train_persons": len(sets["fit"]),
        "holdout_top1_error": float(history.val_top1_error.iloc[-1]),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_seconds": time.perf_counter() - tic,
    }
    return to_bundle(model.cpu(), list(VOC_ACTIONS), mean, std), result


def evaluate_actions(
    persons: dict[str, Any], reference: dict[str, Any], params: dict[str, Any], profile: str, **results: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, Figure]:
    """Per-action AP (both Pascal definitions) and mAP of every Table 3.3 row, the thesis' mAP
    beside ours, and a figure of test crops with their true and predicted actions."""
    labels = persons["test"]["labels"].numpy()
    present = [i for i, a in enumerate(VOC_ACTIONS) if (labels[:, i] > 0).any()]
    if len(present) < len(VOC_ACTIONS):
        log.warning("Actions without a positive test person are left out of mAP: %s", [a for i, a in enumerate(VOC_ACTIONS) if i not in present])
    actions = [VOC_ACTIONS[i] for i in present]
    thesis = next((t for t in reference["tables"] if t["id"] == "3.3"), None)
    if thesis is None:
        raise KeyError("src/oquab_repro/reference/thesis_numbers.yaml: no table with id '3.3'; add it (see its header).")
    thesis_map = {r["label"]: r["thesis"][0] for r in thesis["rows"]}
    metrics: dict[str, Any] = {"test_persons": len(labels), "train": {}}
    rows = []
    for key, res in results.items():
        variant = key.removeprefix("r_")
        scores = res["scores"][:, present]
        metrics["train"][variant] = {k: v for k, v in res.items() if k != "scores"}
        row = {"row": ACTION_ROWS[variant], "source": "ours (voc10)"}
        for method in AP_METHODS:
            aps = per_class_ap(scores, labels[:, present], actions, method)
            metrics.setdefault(f"map_{method}", {})[variant] = 100 * mean_ap(aps)
            metrics.setdefault(f"ap_{method}", {})[variant] = {a: 100 * v for a, v in aps.items()}
            if method == "voc10":
                row |= {a: 100 * v for a, v in aps.items()} | {"mAP": 100 * mean_ap(aps)}
        rows += [row, {"row": ACTION_ROWS[variant], "source": "thesis: VOC 2012 action test", "mAP": thesis_map.get(ACTION_ROWS[variant])}]
    maps = metrics["map_voc10"]
    metrics["pretraining_gain_voc10"] = maps["pre_in1512"] - maps["nopre"]
    metrics["pretraining_helps"] = bool(maps["pre_in1512"] > maps["nopre"])
    table = pd.DataFrame(rows)[["row", "source", *actions, "mAP"]]
    n = getattr(ActionsParams.model_validate(params), profile).figure_persons
    return metrics, table, _figure(persons["test"], results, n)


def _figure(test: dict[str, Any], results: dict[str, Any], n: int) -> Figure:
    """Test crops (mirror padding visible at the borders) with true → PRE-1512's predicted action."""
    n = min(len(test["labels"]), n)
    cols = 6
    fig, axes = new_figure((n + cols - 1) // cols, cols, size=1.7)
    best = results.get("r_pre_in1512", next(iter(results.values())))
    for ax, i in zip(axes.flat, np.linspace(0, len(test["labels"]) - 1, n).astype(int), strict=False):
        ax.imshow(test["crops"][i].permute(1, 2, 0).clamp(0, 1).numpy())
        truth = [a for a, v in zip(VOC_ACTIONS, test["labels"][i].tolist(), strict=True) if v > 0] or ["other"]
        ax.set_title(f"{','.join(truth)}\n→ {VOC_ACTIONS[int(best['scores'][i].argmax())]}", fontsize=6)
    for ax in axes.flat:
        ax.axis("off")
    return fig
