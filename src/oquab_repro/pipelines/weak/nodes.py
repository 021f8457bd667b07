"""Kedro nodes of the weak stage (Ch. 4): train the fully-convolutional net from image labels only
(WEAK SUP), on whole images (FULL IMAGES) or with the max restricted to the objects (MASKED POOL);
score the test images over scales; measure classification and location-prediction AP."""

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

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import (
    VOC_CLASSES,
    capped,
    coco_detection,
    skip_summary,
    voc_detection,
)
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
from oquab_repro.lib.models.fcn import FullyConvNet, fcn_from_bundle, fcn_to_bundle, from_alexnet
from oquab_repro.lib.plots import new_figure
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.lib.training import (
    TrainConfig,
    capped_run,
    fingerprint,
    fit,
    set_threads,
    step_timings,
)
from oquab_repro.lib.weak import (
    CENTER_PRED,
    VARIANTS,
    WeakSet,
    index_detection,
    max_objects,
    objective,
    read_detection,
    score_full_images,
    score_maps,
    search_scales,
    shared_features,
    subset,
)
from oquab_repro.params import WeakCocoSet, WeakParams, cap, with_profile

log = logging.getLogger(__name__)

# Table rows of the thesis (the report and the reference file use these names)
ROWS: dict[str, str] = {**{v: w.label for v, w in VARIANTS.items()}, CENTER_PRED[0]: CENTER_PRED[1]}
AP_METHOD = "voc10"  # VOC 2012 / COCO-era definition (area under the precision envelope)


def load_sets(
    voc_root: Path,
    coco_root: Path,
    params: dict[str, Any],
    profile: str,
    seed: int,
    skip_corrupt: bool,
    images_cap: int | None,
    *,
    dataset: str,
) -> dict[str, Any]:
    """Train / val (held out from train, seeded) / test images as uint8 tensors with their boxes
    and sizes: decoded into memory (``weak.<profile>.preload``) or :class:`DecodedImages` read
    per item by the DataLoader's workers. ``images_cap`` (``caps.images_per_set``) keeps a seeded
    choice of the train and test sets. Unreadable images (``data.skip_corrupt``) are left out and
    counted in ``skipped`` on both paths.

    Labels are 1..K over the set's classes (VOC's 20; COCO's categories in id order).
    """
    cfg, prof = with_profile(WeakParams, params, profile)
    spec = prof.datasets[dataset]
    if isinstance(spec, WeakCocoSet):

        def make(split: str) -> Any:
            annotations = Path(coco_root) / "annotations" / f"instances_{split}.json"
            return coco_detection(Path(coco_root) / split, annotations, skip_corrupt=skip_corrupt)

        train_ds, test_ds = make(spec.train_set), make(spec.test_set)
        cat_ids = sorted(train_ds.categories)
        classes = [train_ds.categories[c] for c in cat_ids]
        label_map = {c: i + 1 for i, c in enumerate(cat_ids)}
    else:
        train_ds, test_ds = (
            voc_detection(voc_root, spec.year, s, skip_corrupt=skip_corrupt)
            for s in (spec.train_set, spec.test_set)
        )
        classes = list(VOC_CLASSES)
        label_map = {i: i for i in range(1, len(classes) + 1)}

    def read(ds: Any, split: str) -> dict[str, Any]:
        ds, desc = capped(ds, images_cap, seed), f"{dataset} {split}"
        if prof.preload:
            return read_detection(ds, label_map, desc)
        return index_detection(ds, label_map, desc, prof.num_workers)

    trainval = read(train_ds, spec.train_set)
    order = np.random.default_rng(seed).permutation(len(trainval["ids"]))
    n_val = max(1, round(cfg.val_fraction * len(order)))
    return {
        "classes": classes,
        "train": subset(trainval, np.sort(order[n_val:])),
        "val": subset(trainval, np.sort(order[:n_val])),
        "test": read(test_ds, spec.test_set),
        "skipped": skip_summary(train_ds, test_ds),
    }


def _network(source_bundle: dict[str, Any], classes: int, prof: Any) -> FullyConvNet:
    """The pretrained AlexNet recast as convolutions, with Ca/Cb and the profile's frozen layers."""
    trunk = from_bundle(source_bundle)
    if not isinstance(trunk, AlexNet):
        raise TypeError(
            "weak.source must name a pretrained AlexNet bundle (stage pretrain@<source>)"
        )
    model = from_alexnet(trunk, classes, prof.hidden_dim, prof.dropout)
    freeze(model, prof.frozen)
    return model.to(memory_format=torch.channels_last)


def train_variant(
    sets: dict[str, Any],
    source_bundle: dict[str, Any],
    checkpointer: Checkpointer,
    params: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    steps_cap: int | None,
    epochs_cap: int | None,
    *,
    dataset: str,
    variant: str,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], dict[str, float]]:
    """Recast the pretrained net, add Ca/Cb and train one variant from image-level labels; return
    its bundle, history, training facts and timings. ``steps_cap`` / ``epochs_cap``:
    ``caps.steps_per_epoch`` / ``caps.epochs`` (None: no cap)."""
    cfg, prof = with_profile(WeakParams, params, profile)
    set_threads(prof.torch_threads)
    seed_everything(seed)
    classes, mean, std = sets["classes"], source_bundle["mean"], source_bundle["std"]
    model = _network(source_bundle, len(classes), prof)
    spec, input_size = VARIANTS[variant], source_bundle["spec"]["input_size"]
    side = input_size if spec.full_image else prof.image_size
    data = [
        WeakSet(sets[s], len(classes), side, mean, std, max_objects(sets), spec.full_image)
        for s in ("train", "val")
    ]
    goal = objective(spec, *model.geometry(), cfg.train_scales, input_size)
    loop = {
        "max_epochs": cap(prof.max_epochs, epochs_cap),
        "batch_size": prof.batch_size,
        "num_workers": prof.num_workers,
        "max_steps": steps_cap,
    }
    train_cfg = TrainConfig.from_optim(prof.optim, **loop, seed=seed)
    settings = {
        **capped_run(steps=steps_cap, epochs=epochs_cap),
        "weak": params,
        "profile": profile,
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
    }
    settings["data"] = [sets[s]["ids"] for s in ("train", "val")]
    tic = time.perf_counter()
    run_id = fingerprint(settings, source_bundle["state_dict"])
    desc = f"weak {dataset} {variant}"
    history = fit(
        model,
        *data,
        train_cfg,
        resolve_device(device),
        checkpointer,
        desc=desc,
        run_id=run_id,
        objective=goal,
    )
    stats = {
        "train_images": len(data[0]),
        "val_images": len(data[1]),
        "epochs": len(history),
        "val_loss": float(history.val_loss.iloc[-1]),
        "val_error": float(history.val_error.iloc[-1]),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    timings = {"train_seconds": time.perf_counter() - tic}
    timings |= step_timings(history, len(data[0]), train_cfg)
    return fcn_to_bundle(model.cpu(), classes, mean, std), history, stats, timings


# ---------------------------------------------------------------------------------------------
# testing
# ---------------------------------------------------------------------------------------------


def score_test(
    sets: dict[str, Any],
    params: dict[str, Any],
    profile: str,
    device: str,
    *bundles: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """§4.3.3: per variant (``bundles`` in :data:`VARIANTS` order), test image and class: score,
    the maximal response and its location in original image pixels (:func:`search_scales`), and
    the timings. FULL IMAGES scores each image squashed to one window; the searching variants
    share each scale's canvases, and their C1–C5 outputs when those are the same frozen layers."""
    cfg, prof = with_profile(WeakParams, params, profile)
    set_threads(prof.torch_threads)
    dev = resolve_device(device)
    models = {
        v: fcn_from_bundle(b).to(dev, memory_format=torch.channels_last).eval()
        for v, b in zip(VARIANTS, bundles, strict=True)
    }
    first = bundles[0]  # every variant recasts the same source network: one normalisation
    mean, std, input_size = first["mean"], first["std"], first["spec"]["input_size"]
    images = sets["test"]["images"]
    centres = (torch.tensor(sets["test"]["sizes"], dtype=torch.float32).flip(1) / 2).numpy()
    out: dict[str, Any] = {"centres": centres}
    tic = time.perf_counter()
    full = {v: m for v, m in models.items() if VARIANTS[v].full_image}
    for v, model in full.items():
        scores = score_full_images(model, images, input_size, mean, std, dev, prof.num_workers)
        out[v] = {
            "scores": scores,
            "responses": scores,
            "points": np.repeat(centres[:, None], scores.shape[1], axis=1),
        }
    timings = {"full_images_seconds": time.perf_counter() - tic}
    tic = time.perf_counter()
    dense = {v: m for v, m in models.items() if v not in full}
    sides = [round(s * prof.image_size) for s in cfg.test_scales]
    out |= search_scales(dense, images, sides, input_size, mean, std, dev, prof.num_workers)
    timings["search_seconds"] = time.perf_counter() - tic  # WEAK SUP + MASKED POOL, all scales
    out["shared_trunk"] = shared_features(dense) is not None
    return out, timings


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def _truth(sets: dict[str, Any]) -> tuple[np.ndarray, list[list[np.ndarray]], list[str]]:
    """Devkit labels (images × classes) and boxes of the test images, restricted to classes with
    a positive test image (the others have no AP), and those classes' names."""
    classes, targets = sets["classes"], sets["test"]["targets"]
    labels = np.stack(
        [classification_labels(t["labels"], t["difficult"], len(classes)) for t in targets]
    )
    present = [k for k in range(len(classes)) if (labels[:, k] > 0).any()]
    if len(present) < len(classes):
        log.warning(
            "Classes without a positive test image are left out of mAP: %s",
            [classes[k] for k in range(len(classes)) if k not in present],
        )
    boxes = [[t["boxes"][t["labels"] == k + 1].numpy() for k in present] for t in targets]
    return labels[:, present], boxes, [classes[k] for k in present]


def _runs(
    tests: dict[str, Any], present: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """What Tables 4.1/4.3 rank (every variant's class scores) and what Tables 4.2/4.3 locate
    (the searching variants' responses and points, and CENTER PRED: WEAK SUP's scores at the
    centre)."""
    cls_runs = {v: tests[v]["scores"][:, present] for v in ROWS if v in VARIANTS}
    loc_runs = {
        v: (tests[v]["responses"][:, present], tests[v]["points"][:, present])
        for v, w in VARIANTS.items()
        if not w.full_image
    }
    centres = np.repeat(tests["centres"][:, None, :], len(present), axis=1)
    loc_runs[CENTER_PRED[0]] = (tests["weak_sup"]["scores"][:, present], centres)
    return cls_runs, loc_runs


def _pr_curves(
    cls_runs: dict, loc_runs: dict, lab: np.ndarray, box: list, tol: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean interpolated precision per recall of every classification and location run."""
    positives = (lab > 0).sum(axis=0)
    cls = {v: mean_pr_curve(s, lab, positives) for v, s in cls_runs.items()}
    loc = {
        v: mean_pr_curve(c, location_outcomes(p, lab, box, tol), positives)
        for v, (c, p) in loc_runs.items()
    }
    return pd.DataFrame({"recall": RECALL_GRID, **cls}), pd.DataFrame(
        {"recall": RECALL_GRID, **loc}
    )


def _table(aps: dict[str, dict[str, float]], names: list[str]) -> pd.DataFrame:
    """A Table 4.x block: per-class AP and mAP (%) of each run."""
    return pd.DataFrame(
        [
            {"row": ROWS[v], **{c: 100 * a[c] for c in names}, "mAP": 100 * mean_ap(a)}
            for v, a in aps.items()
        ]
    )


def evaluate(
    sets: dict[str, Any],
    tests: dict[str, Any],
    params: dict[str, Any],
    profile: str,
    *train_stats: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables 4.1–4.3 shaped: classification AP (FULL IMAGES, WEAK SUP, MASKED POOL) and location AP
    (WEAK SUP, MASKED POOL, CENTER PRED), per class and mean, in %; mean PR curves for the plots.

    ``tests`` is :func:`score_test`'s result, ``train_stats`` each variant's in
    :data:`VARIANTS` order.
    """
    _, prof = with_profile(WeakParams, params, profile)
    lab, box, names = _truth(sets)
    tol = prof.location_tolerance
    cls_runs, loc_runs = _runs(
        tests, np.array([sets["classes"].index(c) for c in names], dtype=int)
    )
    cls_ap = {v: per_class_ap(s, lab, names, AP_METHOD) for v, s in cls_runs.items()}
    loc_ap = {
        v: dict(zip(names, location_ap(c, p, lab, box, tol, AP_METHOD).tolist(), strict=True))
        for v, (c, p) in loc_runs.items()
    }
    cls_map = {v: 100 * mean_ap(a) for v, a in cls_ap.items()}
    loc_map = {v: 100 * mean_ap(a) for v, a in loc_ap.items()}
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
        "train": dict(zip(VARIANTS, train_stats, strict=True)),
        "test": {"images": len(sets["test"]["ids"]), "search_shared_trunk": tests["shared_trunk"]},
        "classes": len(names),
        "location_tolerance_px": tol,
        "ap_method": AP_METHOD,
        **sets["skipped"],
    }
    return (
        metrics,
        _table(cls_ap, names),
        _table(loc_ap, names),
        *_pr_curves(cls_runs, loc_runs, lab, box, tol),
    )


def _top_classes(scores: np.ndarray, labels: torch.Tensor) -> list[int]:
    """The two classes an image's figure row shows: the best-scoring ones present in it first."""
    present = sorted(set((labels - 1).tolist()), key=lambda k: -scores[k])
    return (present + [k for k in np.argsort(-scores) if k not in present])[:2]


def _draw_image(
    ax: Any, image: torch.Tensor, target: dict[str, Any], image_id: str, classes: list[str]
) -> None:
    """The test image with its annotated boxes and their class names."""
    truth = sorted({classes[k - 1] for k in target["labels"].tolist()})
    ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_title(f"{image_id}: {', '.join(truth)}", fontsize=7)
    for b, lab in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
        ax.add_patch(
            Rectangle(
                (b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, edgecolor="white", linewidth=1
            )
        )
        ax.text(b[0], b[1], classes[lab - 1], color="white", fontsize=5, va="bottom")


def plot_locations(
    sets: dict[str, Any],
    bundle: dict[str, Any],
    tests: dict[str, Any],
    params: dict[str, Any],
    profile: str,
) -> Figure:
    """Fig. 4-1 / 4-6 style: test images with their boxes and the predicted locations (crosses) of
    two classes (the best-scoring ones present in the image), and their score maps at scale 1 (jet,
    over the grey image; the map covers the cells' footprints, not the outermost border)."""
    _, prof = with_profile(WeakParams, params, profile)
    set_threads(prof.torch_threads)
    weak = tests["weak_sup"]
    model = fcn_from_bundle(bundle).eval()
    stride, first = model.geometry()
    classes, test = sets["classes"], sets["test"]
    fig, axes = new_figure(prof.figure_images, 3, size=2.6)
    for row, i in enumerate(np.linspace(0, len(test["ids"]) - 1, prof.figure_images).astype(int)):
        image, target = test["images"][i], test["targets"][i]
        maps, (factor,) = score_maps(
            model,
            [image],
            prof.image_size,
            bundle["mean"],
            bundle["std"],
            bundle["spec"]["input_size"],
        )
        top = _top_classes(weak["scores"][i], target["labels"])
        _, h, w = image.shape
        m, nrows = maps.shape[3], maps.shape[2]
        extent = [
            (first - stride / 2) / factor,
            (first + stride * (m - 0.5)) / factor,
            (first + stride * (nrows - 0.5)) / factor,
            (first - stride / 2) / factor,
        ]
        _draw_image(axes[row, 0], image, target, test["ids"][i], classes)
        for ax, k in zip(axes[row, 1:], top, strict=True):  # grey image under the coloured map
            ax.imshow(image.permute(1, 2, 0).numpy().mean(axis=2), cmap="gray")
            ax.imshow(maps[0, k].numpy(), cmap="jet", alpha=0.5, extent=extent)
            ax.set_title(f"{classes[k]} map (score {weak['scores'][i, k]:.1f})", fontsize=7)
        for ax in axes[row]:
            for k, colour in zip(top, ("red", "cyan"), strict=True):
                x, y = weak["points"][i, k]
                ax.plot([x], [y], marker="x", color=colour, markersize=9, mew=2.5, label=classes[k])
            ax.set(xlim=(0, w), ylim=(h, 0))
            ax.axis("off")
        axes[row, 0].legend(fontsize=5, loc="lower right")
    return fig
