"""Ch. 4 (§4.2–4.3): the weakly supervised network's data, losses and multi-scale scoring.

The Ch. 4 counterpart of :mod:`oquab_repro.lib.patches` (Ch. 3's patches, crops and image
scores). Images are rescaled so their largest side is S and zero-padded to S×S canvases; a
variant (:data:`VARIANTS`) says how it is trained: on canvases with the max over every position
(WEAK SUP), over the positions inside the object boxes (MASKED POOL), or on the whole image
squashed to one window (FULL IMAGES). At test time the searching variants score every image at
several scales, per scale the max over positions, then the mean over scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from oquab_repro.lib.datasets import mark_skipped
from oquab_repro.lib.models.fcn import (
    FullyConvNet,
    box_mask,
    global_max_pool,
    masked_max_pool,
    rescale_batch,
)
from oquab_repro.lib.patches import normalise
from oquab_repro.lib.training import Objective

# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _target(target: dict[str, Any], label_map: dict[int, int]) -> dict[str, torch.Tensor]:
    """An image's boxes (float), labels (1..K through ``label_map``) and difficult flags."""
    labels = torch.tensor([label_map[int(v)] for v in target["labels"].tolist()], dtype=torch.int64)
    difficult = target.get("difficult", torch.zeros(len(labels), dtype=torch.bool))
    boxes = target["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)
    return {"boxes": boxes, "labels": labels, "difficult": difficult}


def read_detection(dataset: Any, label_map: dict[int, int], desc: str) -> dict[str, list]:
    """Every readable image of a detection dataset as a uint8 tensor, with its boxes, labels (1..K
    through ``label_map``), difficult flags, id and size (the mini profile: decoded once, kept in
    memory)."""
    images, targets, ids = [], [], []
    for i in tqdm(range(len(dataset)), desc=f"load {desc}", unit="image", leave=False):
        image, target = dataset[i]
        if i in getattr(dataset, "skipped", ()):
            continue  # unreadable (data.skip_corrupt): left out, not replaced by a neighbour
        images.append(TF.pil_to_tensor(image))
        targets.append(_target(target, label_map))
        ids.append(str(target["image_id"]))
    sizes = [tuple(im.shape[1:]) for im in images]
    return {"images": images, "targets": targets, "ids": ids, "sizes": sizes}


class DecodedImages(Dataset):
    """A detection set's images as uint8 tensors, each decoded when it is read (in the DataLoader's
    workers): what the full profile holds instead of the decoded images, which for COCO 2014 train
    at 500 px would be ~60 GB. ``take`` selects images without reading any."""

    def __init__(self, dataset: Any, index: Sequence[int] | None = None):
        self.dataset = dataset
        self.index = list(range(len(dataset))) if index is None else list(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        return TF.pil_to_tensor(self.dataset[self.index[i]][0])

    def take(self, index: Sequence[int]) -> DecodedImages:
        return DecodedImages(self.dataset, [self.index[int(i)] for i in index])


class _Annotations(Dataset):
    """An image's annotation and size as plain Python values (no tensors: thousands of tensors
    received from workers would each hold a file descriptor), or ``None`` for an image the
    worker found unreadable (data.skip_corrupt: the item it read is a neighbour's)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[tuple[int, int], dict[str, Any]] | None:
        image, target = self.dataset[i]
        if i in getattr(self.dataset, "skipped", ()):
            return None
        plain = {k: target[k].tolist() for k in ("boxes", "labels", "difficult") if k in target}
        return (image.height, image.width), {**plain, "image_id": str(target["image_id"])}


def index_detection(
    dataset: Any, label_map: dict[int, int], desc: str, workers: int
) -> dict[str, Any]:
    """:func:`read_detection`'s result with :class:`DecodedImages` for the images: one pass in
    ``workers`` DataLoader processes reads the annotations and sizes; pixels are not kept. The
    images a worker found unreadable are left out of the set, as :func:`read_detection` leaves
    them out, and recorded in this process's ``dataset.skipped`` so that the stage counts them."""
    kept, targets, ids, sizes = [], [], [], []
    loader = DataLoader(_Annotations(dataset), batch_size=None, num_workers=workers)
    for i, item in enumerate(tqdm(loader, desc=f"index {desc}", unit="image", leave=False)):
        if item is None:
            mark_skipped(dataset, i)
            continue
        size, plain = item
        target = {k: torch.tensor(v) for k, v in plain.items() if k != "image_id"}
        target["boxes"] = target["boxes"].float().reshape(-1, 4)
        targets.append(_target({**target, "labels": target["labels"].long()}, label_map))
        ids.append(plain["image_id"])
        sizes.append(tuple(size))
        kept.append(i)
    images = DecodedImages(dataset, kept)
    return {"images": images, "targets": targets, "ids": ids, "sizes": sizes}


def subset(split: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
    """The images ``index`` of a split (decoded or not) with their annotations."""
    return {
        k: v.take(index) if isinstance(v, DecodedImages) else [v[i] for i in index]
        for k, v in split.items()
    }


def image_chunks(images: Sequence[torch.Tensor] | Dataset, size: int, workers: int) -> DataLoader:
    """Consecutive lists of ``size`` images, decoded in ``workers`` processes when they are
    :class:`DecodedImages` (a list of decoded images is read as it is)."""
    return DataLoader(images, batch_size=size, collate_fn=list, num_workers=workers)


def canvas(
    image: torch.Tensor, side: int, mean: list[float], std: list[float], pad_to: int
) -> tuple[torch.Tensor, float]:
    """§4.3: rescale so the largest side is ``side``, normalise, zero-pad (bottom/right) to
    ``pad_to``².

    Returns the canvas and the rescaling factor (canvas px per image px).
    """
    _, h, w = image.shape
    factor = side / max(h, w)
    size = [max(1, round(h * factor)), max(1, round(w * factor))]
    x = normalise(TF.resize(image.float().div(255)[None], size, antialias=True), mean, std)[0]
    return F.pad(x, (0, pad_to - size[1], 0, pad_to - size[0])), factor


def squash(image: torch.Tensor, side: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """FULL IMAGES: the whole image resized to one ``side``² window (aspect ratio not kept)."""
    return normalise(
        TF.resize(image.float().div(255)[None], [side, side], antialias=True), mean, std
    )[0]


def max_objects(sets: dict[str, Any]) -> int:
    """The most objects in one image of the train, val and test splits (box padding size)."""
    return max(1, *(len(t["labels"]) for s in ("train", "val", "test") for t in sets[s]["targets"]))


class WeakSet(Dataset):
    """Images on S×S canvases (or squashed to the net's input for FULL IMAGES), ±1 class labels
    and the boxes (canvas px, padded with label 0) that masked pooling needs.

    A split of decoded images (the mini profile) is prepared once and kept; a split of
    :class:`DecodedImages` (the full profile) is prepared item by item as the DataLoader's workers
    read it, so memory does not grow with the set. Both give the same items."""

    def __init__(
        self,
        split: dict[str, Any],
        num_classes: int,
        side: int,
        mean: list[float],
        std: list[float],
        max_objects: int,
        full_image: bool,
    ):
        self.images, self.targets = split["images"], split["targets"]
        self.num_classes, self.side, self.mean, self.std = num_classes, side, mean, std
        self.max_objects, self.full_image = max_objects, full_image
        self.prepared: list | None = None
        if not isinstance(self.images, DecodedImages):
            self.prepared = [self._prepare(i) for i in range(len(self.targets))]

    def _prepare(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image, target = self.images[i], self.targets[i]
        if self.full_image:
            x, factor = squash(image, self.side, self.mean, self.std), 0.0
        else:
            x, factor = canvas(image, self.side, self.mean, self.std, self.side)
        y = -torch.ones(self.num_classes)
        y[target["labels"] - 1] = 1.0  # difficult objects are still objects when training
        n = len(target["labels"])
        b = torch.zeros(self.max_objects, 4)
        lab = torch.zeros(self.max_objects, dtype=torch.int64)
        b[:n], lab[:n] = target["boxes"] * factor, target["labels"]
        return x, {"y": y, "boxes": b, "labels": lab}

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.prepared[i] if self.prepared is not None else self._prepare(i)


# ---------------------------------------------------------------------------------------------
# losses and the trained variants
# ---------------------------------------------------------------------------------------------


def weak_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """§4.2.3: Σ_k log(1 + exp(−y_k f_k(x))), averaged over the batch."""
    return F.soft_margin_loss(scores, y, reduction="sum") / len(scores)


def global_loss(maps: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weak loss of the global max over every position (WEAK SUP, FULL IMAGES)."""
    return weak_loss(global_max_pool(maps)[0], t["y"])


def masked_loss(
    maps: torch.Tensor, t: dict[str, torch.Tensor], stride: float, first: float
) -> torch.Tensor:
    """The weak loss of the max over the cells meeting the class's boxes (MASKED POOL)."""
    mask = box_mask(
        t["boxes"], t["labels"], maps.shape[1], maps.shape[2], maps.shape[3], stride, first
    )
    return weak_loss(masked_max_pool(maps, mask)[0], t["y"])


def sign_errors(maps: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Share of the image's classes whose score has the wrong sign."""
    return (global_max_pool(maps)[0].sign() != t["y"]).float().mean(dim=1)


def rescale(
    x: torch.Tensor, t: dict[str, torch.Tensor], low: float, high: float, min_size: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """§4.3: the whole mini-batch resized by s ~ U[low, high] (global torch RNG, which
    checkpoints save)."""
    s = low + (high - low) * float(torch.rand(()))
    x, boxes = rescale_batch(x, t["boxes"], s, min_size)
    return x, {**t, "boxes": boxes}


@dataclass(frozen=True)
class WeakVariant:
    """How a Ch. 4 network is trained (Tables 4.1–4.3 rows)."""

    label: str  # the thesis' row
    full_image: bool  # the whole image squashed to one window: no search over positions or scales
    masked: bool  # the max is taken inside the object boxes only (needs boxes when training)


VARIANTS: dict[str, WeakVariant] = {
    "full_images": WeakVariant("FULL IMAGES", full_image=True, masked=False),
    "weak_sup": WeakVariant("WEAK SUP", full_image=False, masked=False),
    "masked_pool": WeakVariant("MASKED POOL", full_image=False, masked=True),
}
"""The trained variants in Table 4.1's order (stages weak@<dataset> train one network each)."""
CENTER_PRED = ("center_pred", "CENTER PRED")
"""Location baseline: WEAK SUP's scores with the image centre as every predicted location."""


def objective(
    variant: WeakVariant, stride: float, first: float, train_scales: Sequence[float], min_size: int
) -> Objective:
    """What a variant minimises: the weak loss of its max pool, on batches rescaled by a random
    factor in ``train_scales`` unless it sees whole images."""
    if variant.full_image:  # no search over positions: one window, one scale
        return Objective.per_item(global_loss, sign_errors)
    loss = partial(masked_loss, stride=stride, first=first) if variant.masked else global_loss
    augment = partial(rescale, low=train_scales[0], high=train_scales[1], min_size=min_size)
    return Objective.per_item(loss, sign_errors, augment)


# ---------------------------------------------------------------------------------------------
# multi-scale scoring
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def score_maps(
    model: FullyConvNet,
    images: list[torch.Tensor],
    side: int,
    mean: list[float],
    std: list[float],
    min_size: int,
) -> tuple[torch.Tensor, list[float]]:
    """Score maps (N × K × n × m) of images rescaled to largest side ``side``, padded square."""
    pad = max(side, min_size)
    batch, factors = zip(*(canvas(im, side, mean, std, pad) for im in images), strict=True)
    return model(torch.stack(batch)), list(factors)


def shared_features(models: dict[str, FullyConvNet]) -> torch.nn.Module | None:
    """C1–C5 of the models when all have the same weights (frozen pretrained layers), or None."""
    states = [
        {k: v for k, v in m.state_dict().items() if k.startswith("features.")}
        for m in models.values()
    ]
    same = all(
        s.keys() == states[0].keys() and all(torch.equal(s[k], states[0][k]) for k in s)
        for s in states[1:]
    )
    return next(iter(models.values())).features if same else None


@torch.no_grad()
def score_full_images(
    model: FullyConvNet,
    images: Sequence[torch.Tensor] | Dataset,
    side: int,
    mean: list[float],
    std: list[float],
    device: torch.device,
    workers: int = 0,
) -> np.ndarray:
    """FULL IMAGES' class scores (N × K): each image squashed to one ``side``² window, 64 at a
    time (decoded in ``workers`` processes)."""
    scores = []
    for chunk in image_chunks(images, 64, workers):
        x = torch.stack([squash(im, side, mean, std) for im in chunk])
        scores.append(model(x.to(device)).amax(dim=(2, 3)).cpu())
    return torch.cat(scores).numpy()


@torch.no_grad()
def _scale_pass(
    models: dict[str, FullyConvNet],
    shared: torch.nn.Module | None,
    images: Sequence[torch.Tensor] | Dataset,
    side: int,
    pad: int,
    mean: list[float],
    std: list[float],
    device: torch.device,
    workers: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per model, every image's class scores at one scale (max over positions, N × K) and the
    arg-max positions in original image pixels (N × K × 2)."""
    stride, first = next(iter(models.values())).geometry()
    scores: dict[str, list] = {v: [] for v in models}
    points: dict[str, list] = {v: [] for v in models}
    for chunk in image_chunks(images, 32, workers):
        batch, factors = zip(
            *(canvas(im.to(device), side, mean, std, pad) for im in chunk), strict=True
        )
        batch = torch.stack(batch).contiguous(memory_format=torch.channels_last)
        feats = shared(batch) if shared is not None else None
        for v, model in models.items():
            maps = (model.head(feats) if feats is not None else model(batch)).cpu()
            pooled, index = global_max_pool(maps)
            m = maps.shape[3]
            xy = torch.stack(
                [first + stride * (index % m), first + stride * (index // m)], dim=-1
            ).float()
            scores[v].append(pooled)
            points[v].append(xy / torch.tensor(factors)[:, None, None])
    return {v: (torch.cat(scores[v]), torch.cat(points[v])) for v in models}


def search_scales(
    models: dict[str, FullyConvNet],
    images: Sequence[torch.Tensor] | Dataset,
    sides: Sequence[int],
    min_size: int,
    mean: list[float],
    std: list[float],
    device: torch.device,
    workers: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """§4.3.3: per model, image and class, the score (per scale the max over positions, then the
    mean over the scales of largest side ``sides``), the maximal response across scales and its
    location in original image pixels. Models with the same frozen C1–C5 share their outputs."""
    shared = shared_features(models)
    passes = [
        _scale_pass(models, shared, images, side, max(side, min_size), mean, std, device, workers)
        for side in sides
    ]
    out = {}
    for v in models:
        stacked = torch.stack([p[v][0] for p in passes])  # scales × N × K
        responses, best = stacked.max(dim=0)
        located = torch.stack([p[v][1] for p in passes])
        points = located.gather(0, best[None, ..., None].expand(1, *best.shape, 2))[0]
        out[v] = {
            "scores": stacked.mean(dim=0).numpy(),
            "responses": responses.numpy(),
            "points": points.numpy(),
        }
    return out
