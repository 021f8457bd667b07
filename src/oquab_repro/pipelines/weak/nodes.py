"""Kedro nodes of the weak stage (Ch. 4): train the fully-convolutional net from image labels only
(WEAK SUP), on whole images (FULL IMAGES) or with the max restricted to the objects (MASKED POOL);
score the test images over scales; measure classification and location-prediction AP."""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import VOC_CLASSES, coco_detection, voc_detection
from oquab_repro.lib.metrics import (
    RECALL_GRID,
    classification_labels,
    location_ap,
    location_outcomes,
    mean_ap,
    mean_pr_curve,
    per_class_ap,
)
from oquab_repro.lib.models.alexnet import AlexNet, freeze, from_bundle
from oquab_repro.lib.models.fcn import (
    FullyConvNet,
    box_mask,
    fcn_from_bundle,
    fcn_to_bundle,
    from_alexnet,
    global_max_pool,
    masked_max_pool,
    rescale_batch,
)
from oquab_repro.lib.patches import normalise
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.lib.training import Objective, TrainConfig, fingerprint, fit, set_threads
from oquab_repro.params import WeakCocoSet, WeakParams, WeakProfile

log = logging.getLogger(__name__)

TRAINED_VARIANTS: tuple[str, ...] = ("weak_sup", "full_images", "masked_pool")
# Table rows of the thesis (the report and the reference file use these names)
ROWS: dict[str, str] = {"full_images": "FULL IMAGES", "weak_sup": "WEAK SUP", "masked_pool": "MASKED POOL", "center_pred": "CENTER PRED"}
AP_METHOD = "voc10"  # VOC 2012 / COCO-era definition (area under the precision envelope)


def _profile(params: dict[str, Any], profile: str) -> tuple[WeakParams, WeakProfile]:
    cfg = WeakParams.model_validate(params)
    return cfg, getattr(cfg, profile)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _read(dataset: Any, label_map: dict[int, int], desc: str) -> dict[str, list]:
    images, targets, ids = [], [], []
    for i in tqdm(range(len(dataset)), desc=f"load {desc}", unit="image", leave=False):
        image, target = dataset[i]
        labels = torch.tensor([label_map[int(v)] for v in target["labels"].tolist()], dtype=torch.int64)
        difficult = target.get("difficult", torch.zeros(len(labels), dtype=torch.bool))
        images.append(TF.pil_to_tensor(image))
        targets.append({"boxes": target["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4), "labels": labels, "difficult": difficult})
        ids.append(str(target["image_id"]))
    return {"images": images, "targets": targets, "ids": ids}


def _subset(split: dict[str, list], index: np.ndarray) -> dict[str, list]:
    return {k: [v[i] for i in index] for k, v in split.items()}


def load_sets(voc_root: Path, coco_root: Path, params: dict[str, Any], profile: str, seed: int, *, dataset: str) -> dict[str, Any]:
    """Train / val (held out from train, seeded) / test images as uint8 tensors with their boxes.

    Labels are 1..K over the set's classes (VOC's 20; COCO's categories in id order).
    """
    cfg, prof = _profile(params, profile)
    spec = prof.datasets[dataset]
    if isinstance(spec, WeakCocoSet):
        def make(split: str) -> Any:
            return coco_detection(Path(coco_root) / split, Path(coco_root) / "annotations" / f"instances_{split}.json")

        train_ds, test_ds = make(spec.train_set), make(spec.test_set)
        cat_ids = sorted(train_ds.categories)
        classes = [train_ds.categories[c] for c in cat_ids]
        label_map = {c: i + 1 for i, c in enumerate(cat_ids)}
    else:
        train_ds, test_ds = (voc_detection(voc_root, spec.year, s) for s in (spec.train_set, spec.test_set))
        classes = list(VOC_CLASSES)
        label_map = {i: i for i in range(1, len(classes) + 1)}
    trainval = _read(train_ds, label_map, f"{dataset} {spec.train_set}")
    order = np.random.default_rng(seed).permutation(len(trainval["ids"]))
    n_val = max(1, round(cfg.val_fraction * len(order)))
    return {
        "classes": classes,
        "train": _subset(trainval, np.sort(order[n_val:])),
        "val": _subset(trainval, np.sort(order[:n_val])),
        "test": _read(test_ds, label_map, f"{dataset} {spec.test_set}"),
    }


def canvas(image: torch.Tensor, side: int, mean: list[float], std: list[float], pad_to: int) -> tuple[torch.Tensor, float]:
    """§4.3: rescale so the largest side is ``side``, normalise, zero-pad (bottom/right) to ``pad_to``².

    Returns the canvas and the rescaling factor (canvas px per image px).
    """
    _, h, w = image.shape
    factor = side / max(h, w)
    size = [max(1, round(h * factor)), max(1, round(w * factor))]
    x = normalise(TF.resize(image.float().div(255)[None], size, antialias=True), mean, std)[0]
    return F.pad(x, (0, pad_to - size[1], 0, pad_to - size[0])), factor


class WeakSet(Dataset):
    """Images on S×S canvases (or squashed to the net's input for FULL IMAGES) with ±1 class labels
    and the boxes (canvas px, padded with label 0) that masked pooling needs."""

    def __init__(self, split: dict[str, list], num_classes: int, side: int, mean: list[float], std: list[float], max_objects: int, full_image: bool):
        xs, ys, boxes, labels = [], [], [], []
        for image, target in zip(split["images"], split["targets"], strict=True):
            if full_image:
                x = normalise(TF.resize(image.float().div(255)[None], [side, side], antialias=True), mean, std)[0]
                factor = 0.0
            else:
                x, factor = canvas(image, side, mean, std, side)
            xs.append(x)
            y = -torch.ones(num_classes)
            y[target["labels"] - 1] = 1.0  # difficult objects are still objects when training
            ys.append(y)
            n = len(target["labels"])
            b, lab = torch.zeros(max_objects, 4), torch.zeros(max_objects, dtype=torch.int64)
            b[:n], lab[:n] = target["boxes"] * factor, target["labels"]
            boxes.append(b)
            labels.append(lab)
        self.x, self.y, self.boxes, self.labels = torch.stack(xs), torch.stack(ys), torch.stack(boxes), torch.stack(labels)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.x[i], {"y": self.y[i], "boxes": self.boxes[i], "labels": self.labels[i]}


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def weak_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§4.2.3: Σ_k log(1 + exp(−y_k f_k(x))), averaged over the batch."""
    return F.soft_margin_loss(scores, y, reduction="sum") / len(scores)


def _global_loss(maps: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    return weak_loss(global_max_pool(maps)[0], t["y"])


def _masked_loss(maps: torch.Tensor, t: dict[str, torch.Tensor], stride: float, first: float) -> torch.Tensor:
    mask = box_mask(t["boxes"], t["labels"], maps.shape[1], maps.shape[2], maps.shape[3], stride, first)
    return weak_loss(masked_max_pool(maps, mask)[0], t["y"])


def _errors(maps: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Share of the image's classes whose score has the wrong sign."""
    return (global_max_pool(maps)[0].sign() != t["y"]).float().mean(dim=1)


def _rescale(x: torch.Tensor, t: dict[str, torch.Tensor], low: float, high: float, min_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """§4.3: the whole mini-batch resized by s ~ U[low, high] (global torch RNG, saved by checkpoints)."""
    s = low + (high - low) * float(torch.rand(()))
    x, boxes = rescale_batch(x, t["boxes"], s, min_size)
    return x, {**t, "boxes": boxes}


def _max_objects(sets: dict[str, Any]) -> int:
    return max(1, *(len(t["labels"]) for s in ("train", "val", "test") for t in sets[s]["targets"]))


def train_variant(
    sets: dict[str, Any],
    source_bundle: dict[str, Any],
    checkpointer: Checkpointer,
    params: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    *,
    dataset: str,
    variant: str,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Recast the pretrained net, add Ca/Cb and train one variant from image-level labels."""
    cfg, prof = _profile(params, profile)
    set_threads(prof.torch_threads)
    seed_everything(seed)
    trunk = from_bundle(source_bundle)
    if not isinstance(trunk, AlexNet):
        raise TypeError("weak.source must name a pretrained AlexNet bundle (stage pretrain@<source>)")
    classes, mean, std = sets["classes"], source_bundle["mean"], source_bundle["std"]
    model = from_alexnet(trunk, len(classes), prof.hidden_dim, prof.dropout)
    freeze(model, prof.frozen)
    model = model.to(memory_format=torch.channels_last)
    stride, first = model.geometry()
    input_size = trunk.spec.input_size
    full = variant == "full_images"
    side = input_size if full else prof.image_size
    m = _max_objects(sets)
    data = {s: WeakSet(sets[s], len(classes), side, mean, std, m, full) for s in ("train", "val")}
    if full:  # no search over positions: one window, one scale
        objective = Objective(_global_loss, _errors)
    else:
        loss = partial(_masked_loss, stride=stride, first=first) if variant == "masked_pool" else _global_loss
        objective = Objective(loss, _errors, partial(_rescale, low=cfg.train_scales[0], high=cfg.train_scales[1], min_size=input_size))
    o = prof.optim
    train_cfg = TrainConfig(o.lr, o.momentum, o.weight_decay, o.lr_factor, o.patience, o.max_reductions, prof.max_epochs, prof.batch_size, 0, seed, o.plateau_on)
    settings = {"weak": params, "profile": profile, "dataset": dataset, "variant": variant, "seed": seed, "data": [sets[s]["ids"] for s in ("train", "val")]}
    tic = time.perf_counter()
    history = fit(model, data["train"], data["val"], train_cfg, resolve_device(device), checkpointer, desc=f"weak {dataset} {variant}", run_id=fingerprint(settings, source_bundle["state_dict"]), objective=objective)
    stats = {
        "train_images": len(data["train"]),
        "val_images": len(data["val"]),
        "epochs": len(history),
        "val_loss": float(history.val_loss.iloc[-1]),
        "val_error": float(history.val_error.iloc[-1]),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_seconds": time.perf_counter() - tic,
    }
    return fcn_to_bundle(model.cpu(), classes, mean, std), history, stats


# ---------------------------------------------------------------------------------------------
# testing
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def score_maps(model: FullyConvNet, images: list[torch.Tensor], side: int, mean: list[float], std: list[float], min_size: int) -> tuple[torch.Tensor, list[float]]:
    """Score maps (N × K × n × m) of images rescaled to largest side ``side`` (padded to a square)."""
    pad = max(side, min_size)
    batch, factors = zip(*(canvas(im, side, mean, std, pad) for im in images), strict=True)
    return model(torch.stack(batch)), list(factors)


def _shared_features(models: dict[str, FullyConvNet]) -> torch.nn.Module | None:
    """C1–C5 of the models when all have the same weights (frozen pretrained layers), else None."""
    states = [{k: v for k, v in m.state_dict().items() if k.startswith("features.")} for m in models.values()]
    same = all(s.keys() == states[0].keys() and all(torch.equal(s[k], states[0][k]) for k in s) for s in states[1:])
    return next(iter(models.values())).features if same else None


@torch.no_grad()
def score_test(sets: dict[str, Any], params: dict[str, Any], profile: str, device: str, **bundles: dict[str, Any]) -> dict[str, Any]:
    """§4.3.3: per variant, test image and class, the score (per scale max over positions, mean over
    scales), the maximal response across scales and its location in original image pixels.

    FULL IMAGES scores each image squashed to one window. The searching variants share each
    scale's canvases, and their C1–C5 outputs when those layers are the same frozen pretrained
    ones (mini), which is most of the cost.
    """
    cfg, prof = _profile(params, profile)
    set_threads(prof.torch_threads)
    dev = resolve_device(device)
    models = {v: fcn_from_bundle(b).to(dev, memory_format=torch.channels_last).eval() for v, b in bundles.items()}
    mean, std, input_size = bundles["weak_sup"]["mean"], bundles["weak_sup"]["std"], bundles["weak_sup"]["spec"]["input_size"]
    test = sets["test"]
    sizes = torch.tensor([im.shape[1:] for im in test["images"]], dtype=torch.float32)  # N × (h, w)
    centres = (sizes.flip(1) / 2).numpy()
    out: dict[str, Any] = {}
    tic = time.perf_counter()
    x = torch.stack([normalise(TF.resize(im.float().div(255)[None], [input_size] * 2, antialias=True), mean, std)[0] for im in test["images"]])
    full = torch.cat([models["full_images"](chunk.to(dev)).amax(dim=(2, 3)).cpu() for chunk in x.split(64)])
    out["full_images"] = {"scores": full.numpy(), "responses": full.numpy(), "points": np.repeat(centres[:, None], full.shape[1], axis=1), "centres": centres}
    out["seconds_full_images"] = time.perf_counter() - tic
    tic = time.perf_counter()
    dense = {v: m for v, m in models.items() if v != "full_images"}
    shared = _shared_features(dense)
    stride, first = next(iter(dense.values())).geometry()
    per_scale: dict[str, list] = {v: [] for v in dense}
    pts: dict[str, list] = {v: [] for v in dense}
    for s in cfg.test_scales:
        side = round(s * prof.image_size)
        sc: dict[str, list] = {v: [] for v in dense}
        loc: dict[str, list] = {v: [] for v in dense}
        for start in range(0, len(test["images"]), 32):
            pad = max(side, input_size)
            batch, factors = zip(*(canvas(im.to(dev), side, mean, std, pad) for im in test["images"][start : start + 32]), strict=True)
            batch = torch.stack(batch).contiguous(memory_format=torch.channels_last)
            feats = shared(batch) if shared is not None else None
            for v, model in dense.items():
                maps = (model.head(feats) if feats is not None else model(batch)).cpu()
                pooled, index = global_max_pool(maps)
                m = maps.shape[3]
                xy = torch.stack([first + stride * (index % m), first + stride * (index // m)], dim=-1).float()
                sc[v].append(pooled)
                loc[v].append(xy / torch.tensor(factors)[:, None, None])
        for v in dense:
            per_scale[v].append(torch.cat(sc[v]))
            pts[v].append(torch.cat(loc[v]))
    for v in dense:
        stacked = torch.stack(per_scale[v])  # scales × N × K
        responses, best = stacked.max(dim=0)
        points = torch.stack(pts[v]).gather(0, best[None, ..., None].expand(1, *best.shape, 2))[0]
        out[v] = {"scores": stacked.mean(dim=0).numpy(), "responses": responses.numpy(), "points": points.numpy(), "centres": centres}
    out["seconds_search"] = time.perf_counter() - tic
    out["shared_trunk"] = shared is not None
    return out


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def _truth(test: dict[str, list], num_classes: int) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    labels = np.stack([classification_labels(t["labels"], t["difficult"], num_classes) for t in test["targets"]])
    boxes = [[t["boxes"][t["labels"] == k + 1].numpy() for k in range(num_classes)] for t in test["targets"]]
    return labels, boxes


def evaluate(sets: dict[str, Any], tests: dict[str, Any], params: dict[str, Any], profile: str, **train_stats: dict[str, Any]) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables 4.1–4.3 shaped: classification AP (FULL IMAGES, WEAK SUP, MASKED POOL) and location AP
    (WEAK SUP, MASKED POOL, CENTER PRED), per class and mean, in %; mean PR curves for the plots.

    ``tests`` is :func:`score_test`'s result, ``train_stats`` each variant's training stats.
    """
    outputs = tests
    _, prof = _profile(params, profile)
    classes = sets["classes"]
    labels, boxes = _truth(sets["test"], len(classes))
    present = [k for k in range(len(classes)) if (labels[:, k] > 0).any()]
    if len(present) < len(classes):
        log.warning("Classes without a positive test image are left out of mAP: %s", [classes[k] for k in range(len(classes)) if k not in present])
    names = [classes[k] for k in present]
    lab = labels[:, present]
    box = [[b[k] for k in present] for b in boxes]
    tol = prof.location_tolerance
    weak = outputs["weak_sup"]
    cls_runs = {v: outputs[v]["scores"][:, present] for v in ("full_images", "weak_sup", "masked_pool")}
    loc_runs = {
        "weak_sup": (weak["responses"][:, present], weak["points"][:, present]),
        "masked_pool": (outputs["masked_pool"]["responses"][:, present], outputs["masked_pool"]["points"][:, present]),
        "center_pred": (weak["scores"][:, present], np.repeat(weak["centres"][:, None, :], len(present), axis=1)),
    }
    cls_ap = {v: per_class_ap(s, lab, names, AP_METHOD) for v, s in cls_runs.items()}
    loc_ap = {v: dict(zip(names, location_ap(c, p, lab, box, tol, AP_METHOD).tolist(), strict=True)) for v, (c, p) in loc_runs.items()}
    positives = (lab > 0).sum(axis=0)
    pr_cls = pd.DataFrame({"recall": RECALL_GRID, **{v: mean_pr_curve(s, lab, positives) for v, s in cls_runs.items()}})
    pr_loc = pd.DataFrame({"recall": RECALL_GRID, **{v: mean_pr_curve(c, location_outcomes(p, lab, box, tol), positives) for v, (c, p) in loc_runs.items()}})
    cls_map = {v: 100 * mean_ap(a) for v, a in cls_ap.items()}
    loc_map = {v: 100 * mean_ap(a) for v, a in loc_ap.items()}
    n_test = len(sets["test"]["ids"])
    metrics = {
        "classification_map": cls_map,
        "location_map": loc_map,
        "classification_ap": {v: {c: 100 * a for c, a in aps.items()} for v, aps in cls_ap.items()},
        "location_ap": {v: {c: 100 * a for c, a in aps.items()} for v, aps in loc_ap.items()},
        "findings": {
            "weak_minus_full_images": cls_map["weak_sup"] - cls_map["full_images"],
            "weak_ge_full_images": bool(cls_map["weak_sup"] >= cls_map["full_images"]),
            "location_weak_minus_center": loc_map["weak_sup"] - loc_map["center_pred"],
        },
        "train": train_stats,
        "test": {
            "images": n_test,
            "full_images_seconds": tests["seconds_full_images"],
            "search_seconds": tests["seconds_search"],  # WEAK SUP + MASKED POOL, all scales
            "search_shared_trunk": tests["shared_trunk"],
        },
        "classes": len(names),
        "location_tolerance_px": tol,
        "ap_method": AP_METHOD,
    }

    def table(aps: dict[str, dict[str, float]]) -> pd.DataFrame:
        return pd.DataFrame([{"row": ROWS[v], **{c: 100 * a[c] for c in names}, "mAP": 100 * mean_ap(a)} for v, a in aps.items()])

    return metrics, table(cls_ap), table(loc_ap), pr_cls, pr_loc


def plot_locations(sets: dict[str, Any], bundle: dict[str, Any], tests: dict[str, Any], params: dict[str, Any], profile: str) -> Figure:
    """Fig. 4-1 / 4-6 style: test images with their boxes and the predicted locations (crosses) of two
    classes (the best-scoring ones present in the image), and their score maps at scale 1 (jet, over
    the grey image; the map covers the cells' footprints, not the outermost border)."""
    _, prof = _profile(params, profile)
    set_threads(prof.torch_threads)
    weak = tests["weak_sup"]
    model = fcn_from_bundle(bundle).eval()
    stride, first = model.geometry()
    classes, test = sets["classes"], sets["test"]
    n = prof.figure_images
    fig, axes = new_figure(n, 3, size=2.6)
    colours = ("red", "cyan")
    for row, i in enumerate(np.linspace(0, len(test["ids"]) - 1, n).astype(int)):
        image, target = test["images"][i], test["targets"][i]
        maps, (factor,) = score_maps(model, [image], prof.image_size, bundle["mean"], bundle["std"], bundle["spec"]["input_size"])
        present = sorted(set((target["labels"] - 1).tolist()), key=lambda k: -weak["scores"][i, k])
        top = (present + [k for k in np.argsort(-weak["scores"][i]) if k not in present])[:2]
        _, h, w = image.shape
        m, nrows = maps.shape[3], maps.shape[2]
        extent = [(first - stride / 2) / factor, (first + stride * (m - 0.5)) / factor, (first + stride * (nrows - 0.5)) / factor, (first - stride / 2) / factor]
        truth = sorted({classes[k - 1] for k in target["labels"].tolist()})
        for col in range(3):
            ax = axes[row, col]
            pixels = image.permute(1, 2, 0).numpy()
            if col:  # grey image under the coloured map
                ax.imshow(pixels.mean(axis=2), cmap="gray")
                k = top[col - 1]
                ax.imshow(maps[0, k].numpy(), cmap="jet", alpha=0.5, extent=extent)
                ax.set_title(f"{classes[k]} map (score {weak['scores'][i, k]:.1f})", fontsize=7)
            else:
                ax.imshow(pixels)
                ax.set_title(f"{test['ids'][i]}: {', '.join(truth)}", fontsize=7)
                for b, lab in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
                    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, edgecolor="white", linewidth=1))
                    ax.text(b[0], b[1], classes[lab - 1], color="white", fontsize=5, va="bottom")
            for k, colour in zip(top, colours, strict=True):
                x, y = weak["points"][i, k]
                ax.plot([x], [y], marker="x", color=colour, markersize=9, mew=2.5, label=classes[k])
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.axis("off")
        axes[row, 0].legend(fontsize=5, loc="lower right")
    return fig

