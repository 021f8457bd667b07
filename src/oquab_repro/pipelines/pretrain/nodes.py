"""Kedro nodes of the pretrain stage: one AlexNet per source class set, trained with jittering."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset, TensorDataset
from torchvision import transforms as v1
from torchvision.ops import roi_align
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm.auto import tqdm

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.datasets import capped, imagenet_folder, skip_summary
from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle
from oquab_repro.lib.patches import normalise
from oquab_repro.lib.runtime import resolve_device, seed_everything
from oquab_repro.lib.training import (
    TrainConfig,
    capped_run,
    fingerprint,
    fit,
    set_threads,
    step_timings,
)
from oquab_repro.params import NetParams, PretrainParams, PretrainProfile, cap, with_profile

log = logging.getLogger(__name__)


def transforms(net: NetParams, crop_scale_min: float, flip: bool) -> tuple[v2.Compose, v2.Compose]:
    """Training jitter (random-resized crops, optional mirror) and the
    deterministic evaluation view."""
    jitter = [
        v2.ToImage(),
        v2.RandomResizedCrop(net.input_size, scale=(crop_scale_min, 1.0), antialias=True),
    ]
    if flip:
        jitter.append(v2.RandomHorizontalFlip())
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(net.mean, net.std)]
    evaluation = [
        v2.ToImage(),
        v2.Resize(net.input_size, antialias=True),
        v2.CenterCrop(net.input_size),
    ]
    return v2.Compose(jitter + tail), v2.Compose(evaluation + tail)


def _file_ids(folder: Any) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every image: a rebuilt data folder invalidates old checkpoints."""
    out = []
    for path, _ in folder.folder.samples:
        st = os.stat(path)
        out.append((path, st.st_size, st.st_mtime_ns))
    return out


def _decoded(sample: tuple[Any, int]) -> tuple[torch.Tensor, int]:
    return pil_to_tensor(sample[0]), sample[1]


class InMemory(Dataset):
    """A labelled image dataset decoded once into uint8 tensors; the transform
    (jitter) runs per access."""

    def __init__(self, base: Dataset, transform: v2.Compose, desc: str):
        decoded = (
            (i, _decoded(base[i]))
            for i in tqdm(range(len(base)), desc=f"decode {desc}", unit="image", leave=False)
        )  # an unreadable image (data.skip_corrupt) is left out, not replaced by a neighbour
        self.items = [item for i, item in decoded if i not in getattr(base, "skipped", ())]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.items[index]
        return self.transform(image), label


class JitteredBatches(Dataset):
    """Same-size images decoded once, jittered a whole batch at a time: torchvision's
    random-resized-crop parameters per image, then all crops resized in one ``roi_align`` call.

    The DataLoader fetches a batch through ``__getitems__``; per-image transform pipelines cost
    more than the mini network's forward and backward passes. Randomness comes from torch's
    global generator, which the training checkpoints save and restore.
    """

    def __init__(
        self,
        items: list[tuple[torch.Tensor, int]],
        net: NetParams,
        crop_scale_min: float,
        flip: bool,
    ):
        shapes = {tuple(image.shape) for image, _ in items}
        if len(shapes) != 1:
            raise ValueError(
                f"batched jitter needs images of one size, got {sorted(shapes)[:3]}; set"
                " pretrain.<profile>.cache_images: false"
            )
        self.images = torch.stack([image for image, _ in items])
        self.labels = torch.tensor([label for _, label in items])
        self.net, self.scale, self.flip = net, (crop_scale_min, 1.0), flip
        self.ratio = (3 / 4, 4 / 3)  # v2.RandomResizedCrop's default aspect-ratio range

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        images = self.images[indices].float().div_(255)
        boxes = []
        for b in range(len(indices)):
            top, left, h, w = v1.RandomResizedCrop.get_params(images[b], self.scale, self.ratio)
            boxes.append([b, left, top, left + w, top + h])
        size = self.net.input_size
        crops = roi_align(
            images,
            torch.tensor(boxes, dtype=images.dtype),
            output_size=size,
            sampling_ratio=0,
            aligned=True,
        )
        if self.flip:
            mirror = torch.rand(len(crops)) < 0.5
            crops[mirror] = crops[mirror].flip(-1)
        crops = normalise(crops, self.net.mean, self.net.std)
        return list(zip(crops, self.labels[indices], strict=True))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([index])[0]


def _evaluation_view(items: list[tuple[torch.Tensor, int]], transform: v2.Compose) -> TensorDataset:
    """The deterministic validation view, computed once instead of every epoch."""
    return TensorDataset(
        torch.stack([transform(image) for image, _ in items]),
        torch.tensor([label for _, label in items]),
    )


def source_sets(
    imagenet_root: Path,
    classes: list[str],
    cfg: PretrainProfile,
    skip_corrupt: bool,
    images_cap: int | None = None,
    seed: int = 0,
) -> tuple[Dataset, Dataset, list[Dataset]]:
    """The jittered training images and the fixed validation view of one source set, and the
    image folders they come from (class order, skipped files): decoded once into memory
    (``cache_images``) or streamed from disk, decoded per item in the DataLoader's workers (the
    full profile: ImageNet never fits in memory). ``images_cap`` (``caps.images_per_set``) keeps
    a seeded choice of each split."""
    train_tf, eval_tf = transforms(cfg.net, cfg.crop_scale_min, cfg.flip)
    cached = cfg.cache_images
    folders = [
        imagenet_folder(
            imagenet_root, split, classes=classes, transform=None if cached else tf,
            skip_corrupt=skip_corrupt,
        )
        for split, tf in (("train", train_tf), ("val", eval_tf))
    ]  # fmt: skip
    chosen = [capped(folder, images_cap, seed) for folder in folders]
    if not cached:
        return chosen[0], chosen[1], folders
    train = JitteredBatches(
        InMemory(chosen[0], train_tf, "train").items, cfg.net, cfg.crop_scale_min, cfg.flip
    )
    val = _evaluation_view(InMemory(chosen[1], eval_tf, "val").items, eval_tf)
    return train, val, folders


def _classes(class_sets: dict[str, list[str]], source: str) -> list[str]:
    if source not in class_sets:
        raise KeyError(
            f"data/02_intermediate/data/class_sets.json has no class set '{source}' "
            f"(has {sorted(class_sets)}); rebuild it with `dvc repro data` "
            "(full profile: set data.full.wordnet_* paths)."
        )
    return class_sets[source]


def _run_id(
    imagenet_root: Path,
    params: dict[str, Any],
    profile: str,
    source: str,
    classes: list[str],
    seed: int,
    caps: dict[str, int],
) -> str:
    """What the checkpoints depend on: the settings, the caps in force and every image file (a
    rebuilt data folder invalidates them)."""
    files = [
        _file_ids(imagenet_folder(imagenet_root, split, classes=classes))
        for split in ("train", "val")
    ]
    settings = {"optim": params["optim"], "profile": params[profile], "source": source, **caps}
    return fingerprint({**settings, "classes": classes, "seed": seed, "data": files})


def pretrain(
    imagenet_root: Path,
    class_sets: dict[str, list[str]],
    checkpointer: Checkpointer,
    params: dict[str, Any],
    profile: str,
    seed: int,
    device: str,
    skip_corrupt: bool,
    images_cap: int | None,
    steps_cap: int | None,
    epochs_cap: int | None,
    *,
    source: str,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], dict[str, float]]:
    """Train the AlexNet of one source set; return its bundle, history, metrics and timings.

    The ``*_cap`` arguments are ``caps.images_per_set``, ``caps.steps_per_epoch`` and
    ``caps.epochs`` (None: the thesis' run)."""
    top, cfg = with_profile(PretrainParams, params, profile)
    classes = _classes(class_sets, source)
    set_threads(cfg.torch_threads)
    train, val, folders = source_sets(imagenet_root, classes, cfg, skip_corrupt, images_cap, seed)
    log.info(
        "Pretraining on %s: %d classes, %d train / %d val images",
        source,
        len(classes),
        len(train),
        len(val),
    )
    seed_everything(seed)
    conv = [c.model_dump() for c in cfg.net.conv]
    net = AlexNet(
        spec_from_params(cfg.net.input_size, conv, cfg.fc_dim[source], cfg.net.dropout),
        len(classes),
    )
    tic = time.perf_counter()
    caps = capped_run(images=images_cap, steps=steps_cap, epochs=epochs_cap)
    run_id = _run_id(imagenet_root, params, profile, source, classes, seed, caps)
    loop = {
        "max_epochs": cap(cfg.max_epochs, epochs_cap),
        "batch_size": cfg.batch_size,
        "num_workers": cfg.num_workers,
        "max_steps": steps_cap,
    }
    train_cfg = TrainConfig.from_optim(top.optim, **loop, seed=seed)
    history = fit(
        net,
        train,
        val,
        train_cfg,
        resolve_device(device),
        checkpointer,
        desc=f"pretrain {source}",
        run_id=run_id,
    )
    metrics = {"classes": len(classes), "train_images": len(train), "epochs": len(history)}
    metrics |= {
        f"val_{k}": float(history[f"val_{k}"].iloc[-1]) for k in ("top1_error", "top5_error")
    }
    # streamed images (cache_images: false) are skipped inside DataLoader workers: counted in
    # their log warnings, here only those the main process met
    metrics |= skip_summary(*folders)
    timings = {"train_seconds": time.perf_counter() - tic}
    timings |= step_timings(history, len(train), train_cfg)
    return (
        to_bundle(net.cpu(), folders[0].classes, cfg.net.mean, cfg.net.std),
        history,
        metrics,
        timings,
    )
