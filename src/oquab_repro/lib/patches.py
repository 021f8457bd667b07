"""Multi-scale square patches (§3.2.2): the grid, the labelling rule, crops, and image-level scores.

Patches are kept as coordinates (x0, y0, x1, y1 in continuous pixel units, boxes' convention)
and cropped on the fly with ``torchvision.ops.roi_align``, so a dataset of ~500 patches per image
never exists as pixels on disk. Everything here is vectorised over patches and objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from torchvision.ops import box_area, roi_align

BACKGROUND = 0


@lru_cache(maxsize=4096)
def _grid(
    width: int, height: int, scales: tuple[float, ...], step_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, scale_ids = [], []
    for i, lam in enumerate(scales):
        side = min(width, height) / lam
        axes = []
        for extent in (width, height):
            span = extent - side
            n = math.ceil(span / (step_fraction * side) - 1e-9) + 1 if span > 0 else 1
            axes.append(torch.linspace(0.0, max(span, 0.0), n))
        ys, xs = torch.meshgrid(axes[1], axes[0], indexing="ij")
        x0, y0 = xs.reshape(-1), ys.reshape(-1)
        boxes.append(torch.stack([x0, y0, x0 + side, y0 + side], dim=1))
        scale_ids.append(torch.full((len(x0),), i, dtype=torch.int64))
    return torch.cat(boxes), torch.cat(scale_ids)


def patch_grid(
    width: int, height: int, scales: Sequence[float], step_fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square patches of side min(w, h)/λ for each λ, on a regular grid covering the image.

    Along each axis the patches are evenly spaced from one border to the other with a step of at
    most ``step_fraction`` × side (0.5 → neighbours overlap by ≥ 50%). Returns the boxes (N × 4,
    XYXY) and the index of each box's scale. Cached per image size: VOC has few distinct sizes.
    """
    if not 0 < step_fraction <= 1:
        raise ValueError(f"patches.step_fraction must be in (0, 1], got {step_fraction}")
    if min(scales) < 1:
        raise ValueError(
            f"patches.scales must be ≥ 1 (a patch side is min(w, h)/λ), got {list(scales)}"
        )
    return _grid(int(width), int(height), tuple(float(s) for s in scales), float(step_fraction))


def intersection_areas(patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """|P ∩ B| for every patch/box pair (N × M), as in ``torchvision.ops.box_iou``'s internals."""
    lt = torch.maximum(patches[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(patches[:, None, 2:], boxes[None, :, 2:])
    return (rb - lt).clamp_(min=0).prod(dim=-1)


def label_patches(
    patches: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    min_patch_fraction: float,
    min_object_fraction: float,
) -> torch.Tensor:
    """The thesis' rule: a patch P is positive for the class of object B_o iff

    (i) |P ∩ B_o| ≥ ``min_patch_fraction`` |P|, (ii) |P ∩ B_o| ≥ ``min_object_fraction`` |B_o| and
    (iii) P overlaps (positive intersection area) no more than one object; otherwise background.
    Returns one label per patch (0 = background, else the object's label).
    """
    inter = intersection_areas(patches, boxes)
    # thresholds relaxed by 1e-6 relative so that an exact boundary case (e.g. 60 vs 0.6 × 100,
    # with 0.6 rounded up in float32) counts as satisfied, as the rule's "≥" intends
    tol = 1 - 1e-6
    ok = (inter >= tol * min_patch_fraction * box_area(patches)[:, None]) & (
        inter >= tol * min_object_fraction * box_area(boxes)[None, :]
    )
    ok &= (inter > 0).sum(dim=1, keepdim=True) == 1
    # at most one True per row once (iii) holds, so the row sum is that object's label (or 0)
    return (ok * labels[None, :]).sum(dim=1)


def sample_training_patches(
    labels: torch.Tensor, background_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """Indices of the patches kept for training: every positive and a
    random share of backgrounds."""
    keep = labels != BACKGROUND
    keep |= torch.rand(len(labels), generator=generator) < background_fraction
    return torch.nonzero(keep).squeeze(1)


def crop_patches(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop and resize patches of one image (C × H × W float) to ``size`` × ``size`` in one call.

    ``sampling_ratio=0`` lets roi_align average ⌈side/size⌉² samples per output pixel, so large
    patches are downscaled without aliasing and same-size crops copy the pixels exactly.
    """
    if len(boxes) == 0:
        return image.new_zeros((0, image.shape[0], size, size))
    return roi_align(
        image[None],
        [boxes.to(image)],
        output_size=size,
        spatial_scale=1.0,
        sampling_ratio=0,
        aligned=True,
    )


def square_around(box: Sequence[float], side_factor: float) -> tuple[int, int, int]:
    """Integer square (left, top, side) centred on an XYXY box, side =
    ``side_factor`` × its longer side.

    Table 3.3 classifies a person from one such square: the box's context is kept, its aspect
    ratio is not distorted, and the square may stick out of the image (see :func:`mirror_crop`).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty box {[x0, y0, x1, y1]}")
    side = max(1, round(side_factor * max(x1 - x0, y1 - y0)))
    return round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2), side


def mirror_crop(image: torch.Tensor, left: int, top: int, side: int) -> torch.Tensor:
    """The ``side`` × ``side`` window at (left, top) of a C × H × W image, mirror-padded where it
    leaves the image (``F.pad`` reflect mode, repeated when the overhang exceeds the image)."""
    _, h, w = image.shape
    pads = [max(0, -left), max(0, left + side - w), max(0, -top), max(0, top + side - h)]
    x = image.float()[None]
    origin = (pads[0], pads[2])
    while any(pads):
        ph, pw = x.shape[-2] - 1, x.shape[-1] - 1
        step = [min(pads[0], pw), min(pads[1], pw), min(pads[2], ph), min(pads[3], ph)]
        if not any(step):
            raise ValueError(f"cannot mirror-pad a {h}×{w} image")
        x = F.pad(x, step, mode="reflect")
        pads = [a - b for a, b in zip(pads, step, strict=True)]
    x0, y0 = left + origin[0], top + origin[1]
    return x[0, :, y0 : y0 + side, x0 : x0 + side]


def aggregate_scores(patch_probs: torch.Tensor, k: float) -> torch.Tensor:
    """Image score per class: the mean over patches of y^k (k = 1: mean, k → ∞: max)."""
    if len(patch_probs) == 0:
        raise ValueError("cannot score an image without patches")
    return patch_probs.pow(k).mean(dim=0)


def heat_map(boxes: torch.Tensor, values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-pixel mean of ``values`` (N × C) over the patches covering each pixel (C × H × W).

    Patch sums are accumulated in a 2-D difference array and integrated with cumulative sums,
    so the cost is O(N·C + H·W·C) rather than O(N·H·W·C).
    """
    x0 = boxes[:, 0].floor().long().clamp(0, width)
    y0 = boxes[:, 1].floor().long().clamp(0, height)
    x1 = boxes[:, 2].ceil().long().clamp(0, width)
    y1 = boxes[:, 3].ceil().long().clamp(0, height)
    ones = torch.ones(len(boxes), 1, dtype=values.dtype)
    vals = torch.cat([values, ones], dim=1)  # last channel counts covering patches
    diff = torch.zeros(height + 1, width + 1, vals.shape[1], dtype=values.dtype)
    for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        diff.index_put_((ys, xs), sign * vals, accumulate=True)
    total = diff.cumsum(0).cumsum(1)[:height, :width]
    return (total[..., :-1] / total[..., -1:].clamp(min=1)).permute(2, 0, 1)


def grid_overlap(boxes: np.ndarray) -> float:
    """Smallest overlap fraction between horizontally or vertically
    adjacent patches of one scale."""
    worst = 1.0
    for axis in (0, 1):
        starts = np.unique(boxes[:, axis])
        if len(starts) > 1:
            side = boxes[0, axis + 2] - boxes[0, axis]
            worst = min(worst, 1.0 - np.diff(starts).max() / side)
    return worst


def normalise(crops: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[0, 1] RGB crops → the network's input scale."""
    m = torch.as_tensor(mean, dtype=crops.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=crops.dtype).view(1, -1, 1, 1)
    return (crops - m) / s


class PatchCrops(Dataset):
    """Labelled patches cropped on the fly from images kept as uint8 tensors (C × H × W).

    Only the window around a patch is converted to float before ``roi_align``, so memory stays at
    one byte per image pixel whatever the number of patches. ``table`` needs the columns
    image_id, x0, y0, x1, y1 and label.
    """

    def __init__(
        self,
        images: dict[str, torch.Tensor],
        table: pd.DataFrame,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        flip: bool,
    ):
        missing = set(table.image_id) - set(images)
        if missing:
            raise KeyError(
                f"patch table refers to {len(missing)} images not loaded, e.g."
                f" {sorted(missing)[:3]}"
            )
        self.images = images
        self.ids = table.image_id.to_numpy()
        self.boxes = torch.tensor(table[["x0", "y0", "x1", "y1"]].to_numpy(np.float32))
        self.labels = torch.tensor(table.label.to_numpy(np.int64))
        self.size, self.mean, self.std, self.flip = size, mean, std, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[self.ids[index]]
        box = self.boxes[index]
        _, h, w = image.shape
        xa, ya = max(int(box[0]) - 1, 0), max(int(box[1]) - 1, 0)
        xb, yb = min(math.ceil(box[2]) + 1, w), min(math.ceil(box[3]) + 1, h)
        window = image[:, ya:yb, xa:xb].float().div_(255)
        shifted = box - torch.tensor([xa, ya, xa, ya], dtype=box.dtype)
        crop = crop_patches(window, shifted[None], self.size)
        if self.flip and torch.rand(()) < 0.5:
            crop = crop.flip(-1)
        return normalise(crop, self.mean, self.std)[0], self.labels[index]


@torch.no_grad()
def score_image(
    model: nn.Module,
    image: torch.Tensor,
    scales: Sequence[float],
    step_fraction: float,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs of every grid patch of one uint8 image: one batched forward per scale.

    Returns the boxes (N × 4) and the probabilities (N × outputs), on the CPU.
    """
    _, h, w = image.shape
    boxes, scale_ids = patch_grid(w, h, scales, step_fraction)
    pixels = image.to(device).float().div_(255)
    probs = []
    for i in range(len(scales)):
        crops = crop_patches(pixels, boxes[scale_ids == i].to(device), size)
        probs.append(model(normalise(crops, mean, std)).softmax(dim=1).cpu())
    return boxes, torch.cat(probs)


@torch.no_grad()
def score_images(
    images: Iterable[tuple[str, torch.Tensor]],
    trunk: nn.Module,
    heads: dict[str, nn.Module],
    scales: Sequence[float],
    step_fraction: float,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    k: float,
    device: torch.device,
    batch_patches: int = 256,
) -> dict[str, dict[str, torch.Tensor]]:
    """Image scores (mean over every grid patch of y^k, :func:`aggregate_scores`) of several
    networks that share a ``trunk`` (their common frozen layers): ``head(trunk(crops))``.

    The trunk, where nearly all the arithmetic is, runs once for all heads (bench_ch3_speed.py:
    ×2.8–3.8 for the four PRE-1512 variants). Patches are cropped in one ``roi_align`` per image
    and forwarded in batches of at least ``batch_patches``: a few hundred patches per batch run
    1.1–1.7× faster on a CPU than one small batch per scale, a few thousand slower again.
    Returns, per head, image id → scores over the network's outputs (softmax, to the power k).
    """
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in heads}
    pending: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        feats = trunk(normalise(torch.cat([c for _, c in pending]).to(device), mean, std))
        counts = [len(c) for _, c in pending]
        for name, head in heads.items():
            probs = head(feats).softmax(dim=1).cpu()
            for (image_id, _), part in zip(pending, probs.split(counts), strict=True):
                out[name][image_id] = aggregate_scores(part, k)
        pending.clear()

    for image_id, image in images:
        _, h, w = image.shape
        boxes, _ = patch_grid(w, h, scales, step_fraction)
        pending.append(
            (image_id, crop_patches(image.to(device).float().div_(255), boxes.to(device), size))
        )
        if sum(len(c) for _, c in pending) >= batch_patches:
            flush()
    if pending:
        flush()
    return out
