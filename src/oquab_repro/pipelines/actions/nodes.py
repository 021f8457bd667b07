"""Kedro nodes of the action stage (Table 3.3): crop one mirror-padded square around every person,
train the adaptation layers of NO PRETRAIN, PRE-1512 and PRE-1512U on them,
and measure per-action AP.
"""

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

from oquab_repro.lib.adaptation import (
    pretraining_findings,
    trainable_parameters,
    trainable_part,
    variant_network,
)
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import VOC_ACTIONS, skipped_files, summarise_skipped, voc_actions
from oquab_repro.lib.metrics import AP_METHODS, mean_ap, per_class_ap
from oquab_repro.lib.models.alexnet import to_bundle
from oquab_repro.lib.patches import crop_patches, mirror_crop, normalise, square_around
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device
from oquab_repro.lib.thesis import row_labels, thesis_rows
from oquab_repro.lib.training import (
    TrainConfig,
    capped_run,
    fingerprint,
    fit,
    set_threads,
    step_timings,
)
from oquab_repro.params import ActionsParams, PretrainParams, TransferParams, cap, with_profile

log = logging.getLogger(__name__)


def person_crops(
    voc_root: Path, split: str, side_factor: float, size: int, skip_corrupt: bool
) -> dict[str, Any]:
    """One ``size`` × ``size`` crop ([0, 1] RGB) per annotated person of a VOC2012 action split,
    with its image id and devkit labels (+1 doing the action, −1 not; persons × actions), and the
    unreadable image files data.skip_corrupt skipped."""
    dataset = voc_actions(voc_root, split, skip_corrupt=skip_corrupt)
    crops, labels, ids = [], [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        if i in dataset.skipped:
            continue  # unreadable: its persons are left out, not replaced by a neighbour
        left, top, side = square_around(target["boxes"][0].tolist(), side_factor)
        square = mirror_crop(pil_to_tensor(image), left, top, side).div_(255)
        crops.append(crop_patches(square, torch.tensor([[0.0, 0.0, side, side]]), size)[0])
        labels.append(torch.where(target["actions"] > 0, 1, -1))
        ids.append(target["image_id"])
    if not crops:
        raise ValueError(f"{voc_root}: VOC2012 action split '{split}' has no annotated person")
    return {
        "crops": torch.stack(crops),
        "labels": torch.stack(labels).to(torch.int8),
        "image_ids": ids,
        "skipped_files": skipped_files(dataset),
    }


def _pick(persons: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
    """The persons where ``mask`` is true."""
    ids = [i for i, k in zip(persons["image_ids"], mask.tolist(), strict=True) if k]
    return {"crops": persons["crops"][mask], "labels": persons["labels"][mask], "image_ids": ids}


def load_persons(
    voc_root: Path,
    params: dict[str, Any],
    pretrain_params: dict[str, Any],
    profile: str,
    seed: int,
    skip_corrupt: bool,
) -> dict[str, Any]:
    """Person crops of the train split (split by image into fit / holdout) and of the test split,
    and what data.skip_corrupt skipped."""
    cfg = ActionsParams.model_validate(params)
    size = with_profile(PretrainParams, pretrain_params, profile)[1].net.input_size
    train = person_crops(voc_root, cfg.train_set, cfg.side_factor, size, skip_corrupt)
    test = person_crops(voc_root, cfg.test_set, cfg.side_factor, size, skip_corrupt)
    images = sorted(set(train["image_ids"]))
    rng = np.random.default_rng(seed)
    held = set(
        rng.choice(
            images, max(1, round(cfg.holdout_fraction * len(images))), replace=False
        ).tolist()
    )
    mask = torch.tensor([i in held for i in train["image_ids"]])
    skipped = summarise_skipped(train["skipped_files"] + test["skipped_files"])
    return {"fit": _pick(train, ~mask), "holdout": _pick(train, mask), "test": test} | {
        "skipped": skipped
    }


def training_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(person index, action index) pairs for softmax training: a person doing several actions
    appears once per action, a person doing none of the 10 (VOC's "other") is left out."""
    person, action = torch.nonzero(labels > 0, as_tuple=True)
    return person, action


def _dataset(
    split: dict[str, Any], mean: list[float], std: list[float], flip: bool
) -> TensorDataset:
    person, action = training_targets(split["labels"])
    x = normalise(split["crops"][person], mean, std)
    if (
        flip
    ):  # mirrored copies: a fixed augmentation, so frozen-layer outputs can still be computed once
        x, action = torch.cat([x, x.flip(-1)]), torch.cat([action, action])
    return TensorDataset(x, action)


def _run_id(
    params: dict[str, Any],
    tcfg: TransferParams,
    tprof: Any,
    net: Any,
    persons: dict[str, Any],
    bundle: dict[str, Any] | None,
    variant: str,
    seed: int,
) -> str:
    """What a Table 3.3 network's checkpoints depend on."""
    settings = {
        "actions": params,
        "transfer_variant": tcfg.variants[variant].model_dump(),
        "optim": tcfg.optim.model_dump(),
        "net": net.model_dump(),
    }
    settings |= {"hidden": tprof.hidden_dim, "flip": tprof.flip, "variant": variant, "seed": seed}
    settings["persons"] = [float(persons[k]["crops"].sum()) for k in ("fit", "holdout")]
    return fingerprint(settings, bundle["state_dict"] if bundle else None)


@torch.no_grad()
def _test_scores(
    model: torch.nn.Module,
    crops: torch.Tensor,
    mean: list[float],
    std: list[float],
    device: torch.device,
) -> np.ndarray:
    """Softmax scores of every test person (persons × actions)."""
    model.eval()
    return model(normalise(crops, mean, std).to(device)).softmax(dim=1).cpu().numpy()


def train_action(
    persons: dict[str, Any],
    checkpointer: Checkpointer,
    params: dict[str, Any],
    transfer_params: dict[str, Any],
    pretrain_params: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    steps_cap: int | None,
    epochs_cap: int | None,
    *source: dict[str, Any],
    variant: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Train one Table 3.3 network (the transfer variant's ``source`` bundle, none from scratch, its
    frozen and adaptation layers) on the persons; return its bundle, its softmax scores on the test
    persons with its training facts, and its timings."""
    _, prof = with_profile(ActionsParams, params, profile)
    tcfg, tprof = with_profile(TransferParams, transfer_params, profile)
    _, pre = with_profile(PretrainParams, pretrain_params, profile)
    bundle = source[0] if source else None
    set_threads(tprof.torch_threads)
    spec = tcfg.variants[variant]
    model, mean, std = variant_network(bundle, spec, pre.net, tprof, len(VOC_ACTIONS), seed)
    sets = {
        k: _dataset(persons[k], mean, std, tprof.flip and k == "fit") for k in ("fit", "holdout")
    }
    dev = resolve_device(device)
    tic = time.perf_counter()
    # mirrored copies are a fixed augmentation (no jitter): frozen-layer outputs are computed once
    trained, sets, _ = trainable_part(
        model, sets, jitter=False, cache_inputs=False, batch_size=prof.batch_size, device=dev
    )
    caps = capped_run(steps=steps_cap, epochs=epochs_cap)  # caps.steps_per_epoch, caps.epochs
    run_id = _run_id({**params, **caps}, tcfg, tprof, pre.net, persons, bundle, variant, seed)
    train_cfg = TrainConfig.from_optim(
        tcfg.optim,
        max_epochs=cap(prof.max_epochs, epochs_cap),
        batch_size=prof.batch_size,
        num_workers=0,
        seed=seed,
        max_steps=steps_cap,
    )
    history = fit(
        trained,
        sets["fit"],
        sets["holdout"],
        train_cfg,
        dev,
        checkpointer,
        desc=f"actions {variant}",
        run_id=run_id,
    )
    result = {
        "scores": _test_scores(model, persons["test"]["crops"], mean, std, dev),
        "epochs": len(history),
        "train_persons": len(sets["fit"]),
        "holdout_top1_error": float(history.val_top1_error.iloc[-1]),
        "trainable_parameters": trainable_parameters(model),
    }
    timings = {"train_seconds": time.perf_counter() - tic}
    timings |= step_timings(history, len(sets["fit"]), train_cfg)
    return to_bundle(model.cpu(), list(VOC_ACTIONS), mean, std), result, timings


def _variant_aps(
    scores: np.ndarray, labels: np.ndarray, actions: list[str]
) -> dict[str, dict[str, float]]:
    """Per-action AP of one network under both Pascal definitions."""
    return {m: per_class_ap(scores, labels, actions, m) for m in AP_METHODS}


def evaluate_actions(
    persons: dict[str, Any],
    reference: dict[str, Any],
    params: dict[str, Any],
    transfer_params: dict[str, Any],
    profile: str,
    *results: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, Figure]:
    """Per-action AP (both Pascal definitions) and mAP of every Table 3.3 row (``results`` in the
    order of ``actions.variants``), the thesis' mAP beside ours, and a figure of test crops with
    their true and predicted actions."""
    cfg, prof = with_profile(ActionsParams, params, profile)
    variants = dict(zip(cfg.variants, results, strict=True))
    labels = persons["test"]["labels"].numpy()
    present = [i for i, a in enumerate(VOC_ACTIONS) if (labels[:, i] > 0).any()]
    if len(present) < len(VOC_ACTIONS):
        log.warning(
            "Actions without a positive test person are left out of mAP: %s",
            [a for i, a in enumerate(VOC_ACTIONS) if i not in present],
        )
    actions = [VOC_ACTIONS[i] for i in present]
    thesis, names = thesis_rows(reference, "3.3"), row_labels(reference, "3.3", variants)
    metrics: dict[str, Any] = {"test_persons": len(labels), "train": {}, **persons["skipped"]}
    rows = []
    for variant, res in variants.items():
        metrics["train"][variant] = {k: v for k, v in res.items() if k != "scores"}
        aps = _variant_aps(res["scores"][:, present], labels[:, present], actions)
        for method, per_action in aps.items():
            metrics.setdefault(f"map_{method}", {})[variant] = 100 * mean_ap(per_action)
            metrics.setdefault(f"ap_{method}", {})[variant] = {
                a: 100 * v for a, v in per_action.items()
            }
        rows += [
            {
                "row": names[variant],
                "source": "ours (voc10)",
                **metrics["ap_voc10"][variant],
                "mAP": metrics["map_voc10"][variant],
            },
            {
                "row": names[variant],
                "source": "thesis: VOC 2012 action test",
                "mAP": thesis.get(variant, (None, None))[1],
            },
        ]
    sources = {
        v: TransferParams.model_validate(transfer_params).variants[v].source for v in variants
    }
    metrics |= pretraining_findings(metrics["map_voc10"], sources, "voc10")
    table = pd.DataFrame(rows)[["row", "source", *actions, "mAP"]]
    best = max(variants, key=metrics["map_voc10"].get)
    return metrics, table, _figure(persons["test"], variants[best], best, prof.figure_persons)


def _figure(test: dict[str, Any], result: dict[str, Any], variant: str, n: int) -> Figure:
    """Test crops (mirror padding visible at the borders): truth → ``variant``'s prediction."""
    n = min(len(test["labels"]), n)
    cols = 6
    fig, axes = new_figure((n + cols - 1) // cols, cols, size=1.7)
    for ax, i in zip(
        axes.flat, np.linspace(0, len(test["labels"]) - 1, n).astype(int), strict=False
    ):
        ax.imshow(test["crops"][i].permute(1, 2, 0).clamp(0, 1).numpy())
        truth = [
            a for a, v in zip(VOC_ACTIONS, test["labels"][i].tolist(), strict=True) if v > 0
        ] or ["other"]
        ax.set_title(
            f"{','.join(truth)}\n→ {VOC_ACTIONS[int(result['scores'][i].argmax())]}", fontsize=6
        )
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"predictions of {variant} (best mAP)", fontsize=7)
    return fig
