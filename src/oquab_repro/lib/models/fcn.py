"""The Chapter 4 network (§4.2): the pretrained AlexNet recast as a fully-convolutional net.

FC6/FC7 become convolutions with the *same* weights (a linear layer on a C×h×w map is a h×w
convolution), so on an input of the training size the net computes exactly what the classifier
did, and on a larger image it slides that classifier over every position at once. Adaptation
layers Ca, Cb are 1×1 convolutions with SpatialDropout (whole feature maps dropped); Cb outputs
one score map per class, reduced to image scores by a global (or masked) max pool.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from oquab_repro.lib.models.alexnet import CONV_LAYERS, AlexNet, _init, _spec_from_dict


def conv_from_linear(linear: nn.Linear, in_channels: int, height: int, width: int) -> nn.Conv2d:
    """A ``height×width`` convolution computing ``linear`` on every window
    (weights copied, not retrained)."""
    if linear.in_features != in_channels * height * width:
        raise ValueError(
            f"a Linear of {linear.in_features} inputs cannot read a"
            f" {in_channels}×{height}×{width} map"
        )
    conv = nn.Conv2d(in_channels, linear.out_features, (height, width))
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, height, width))
        conv.bias.copy_(linear.bias)
    return conv


class FullyConvNet(nn.Module):
    """C1–C5 of a pretrained AlexNet, FC6/FC7 as convolutions, then Ca
    (ReLU, SpatialDropout) and Cb.

    ``forward`` returns the K score maps (B × K × n × m); pooling is left to the loss / the scorer
    so that global and masked max pooling share one network.
    """

    def __init__(self, trunk: AlexNet, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        channels, height, width = trunk.conv_shape
        fc_dim = trunk.spec.fc_dim
        self.spec = trunk.spec
        self.features = trunk.features
        self.fc6 = nn.Sequential(
            conv_from_linear(trunk.fc6[1], channels, height, width),
            nn.ReLU(inplace=True),
            nn.Dropout2d(trunk.spec.dropout),
        )
        self.fc7 = nn.Sequential(
            conv_from_linear(trunk.fc7[0], fc_dim, 1, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(trunk.spec.dropout),
        )
        self.ca = nn.Sequential(
            nn.Conv2d(fc_dim, hidden, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout)
        )
        self.cb = nn.Conv2d(hidden, num_classes, 1)
        self.ca.apply(_init)
        # small initial scores: with He-scaled Cb, the max over many cells starts far from 0 and the
        # first epochs are spent undoing it
        nn.init.normal_(self.cb.weight, std=0.01)
        nn.init.zeros_(self.cb.bias)
        self.hidden, self.dropout = hidden, dropout

    def layer(self, name: str) -> nn.Module:
        """The module of a thesis layer name (c1…c5, fc6, fc7, ca, cb); lets
        alexnet.freeze work here."""
        if name in CONV_LAYERS:
            return getattr(self.features, name)
        if name in ("fc6", "fc7", "ca", "cb"):
            return getattr(self, name)
        raise KeyError(
            f"no layer '{name}' (known: {', '.join((*CONV_LAYERS, 'fc6', 'fc7', 'ca', 'cb'))})"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last runs these small CPU convolutions about twice as fast
        # (benchmarks/bench_weak.py)
        return self.head(self.features(x.contiguous(memory_format=torch.channels_last)))

    def head(self, c5: torch.Tensor) -> torch.Tensor:
        """FC6 … Cb on C5 outputs (lets nets that share frozen C1–C5 compute them once)."""
        return self.cb(self.ca(self.fc7(self.fc6(c5))))

    def geometry(self) -> tuple[float, float]:
        """(stride, centre of the first output cell) in input pixels (pixel i spans [i, i+1]).

        Composed layer by layer: a k×k layer with stride s and padding p moves the first centre
        by ((k−1)/2 − p) × the incoming stride and multiplies the stride by s.
        """
        jump, centre = 1.0, 0.5
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.MaxPool2d):
                k, s, p = (
                    v if isinstance(v, int) else v[0]
                    for v in (module.kernel_size, module.stride, module.padding)
                )
                centre += ((k - 1) / 2 - p) * jump
                jump *= s
        return jump, centre


def from_alexnet(trunk: AlexNet, num_classes: int, hidden: int, dropout: float) -> FullyConvNet:
    """The Ch. 4 net on a pretrained AlexNet (its FC8 is not used)."""
    return FullyConvNet(trunk, num_classes, hidden, dropout)


def fcn_to_bundle(
    model: FullyConvNet, classes: list[str], mean: list[float], std: list[float]
) -> dict[str, Any]:
    """A self-describing snapshot (as alexnet.to_bundle) from which
    :func:`fcn_from_bundle` rebuilds the net."""
    return {
        "kind": "fcn",
        "spec": asdict(model.spec),
        "num_classes": model.cb.out_channels,
        "hidden": model.hidden,
        "dropout": model.dropout,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "mean": list(mean),
        "std": list(std),
    }


def fcn_from_bundle(bundle: dict[str, Any]) -> FullyConvNet:
    if bundle.get("kind") != "fcn":
        raise ValueError("not a fully-convolutional bundle (written by fcn_to_bundle)")
    model = FullyConvNet(
        AlexNet(_spec_from_dict(bundle["spec"]), 0),
        bundle["num_classes"],
        bundle["hidden"],
        bundle["dropout"],
    )
    model.load_state_dict(bundle["state_dict"])
    return model


def global_max_pool(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image scores (B × K) and the flat index of the arg-max cell; the
    gradient reaches that cell only."""
    pooled, index = F.adaptive_max_pool2d(maps, 1, return_indices=True)
    return pooled.flatten(1), index.flatten(1)


def masked_max_pool(maps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over the cells where ``mask`` (B × K × n × m, bool) is true; each
    (image, class) needs one."""
    if not mask.flatten(2).any(dim=2).all():
        raise ValueError(
            "masked max pool: an (image, class) mask has no cell; give absent classes a full mask"
        )
    return global_max_pool(maps.masked_fill(~mask, float("-inf")))


def cell_centres(n: int, m: int, stride: float, first: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel coordinates (y of the n rows, x of the m columns) of the score-map cells."""
    return first + stride * torch.arange(n, dtype=torch.float32), first + stride * torch.arange(
        m, dtype=torch.float32
    )


def box_mask(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    n: int,
    m: int,
    stride: float,
    first: float,
) -> torch.Tensor:
    """Masked pooling's cells (B × K × n × m): for a class present in an image, the cells whose
    stride×stride footprint meets one of its boxes; for an absent class, or a present one whose
    boxes meet no cell (an object cut off by a downscaled batch's border), every cell.

    ``boxes`` B × M × 4 (XYXY, input pixels), ``labels`` B × M in 1..K with 0 for padding.
    """
    ys, xs = cell_centres(n, m, stride, first)
    ys, xs, half = ys.to(boxes), xs.to(boxes), stride / 2
    b = boxes[..., None, None]
    inside = (xs + half > b[:, :, 0]) & (xs - half < b[:, :, 2])  # B × M × 1 × m
    inside = inside & (
        (ys[:, None] + half > b[:, :, 1]) & (ys[:, None] - half < b[:, :, 3])
    )  # B × M × n × m
    onehot = F.one_hot(labels, num_classes + 1)[..., 1:].to(boxes)  # B × M × K (padding → zeros)
    mask = torch.einsum("bmk,bmij->bkij", onehot, inside.to(boxes)) > 0
    covered = mask.flatten(2).any(dim=2)  # B × K
    return mask | ~covered[..., None, None]


def rescale_batch(
    x: torch.Tensor, boxes: torch.Tensor, factor: float, min_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a batch of square canvases by ``factor`` (at least ``min_size`` px), boxes alike."""
    size = max(round(x.shape[-1] * factor), min_size)
    out = F.interpolate(
        x, size=(size, size), mode="bilinear", antialias=factor < 1, align_corners=False
    )
    return out, boxes * (size / x.shape[-1])
