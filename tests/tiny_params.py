"""Tiny Ch. 3 params sections (a 4-channel AlexNet on 16-px inputs), shared by the transfer and the
action tests, in the shape params.yaml gives them."""

from __future__ import annotations

from typing import Any

from oquab_repro.params import PRETRAIN_SOURCES

CONV = [
    {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p}
    for p in (2, 2, 0, 0, 2)
]
OPTIM = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "lr_factor": 0.1, "patience": 1}
OPTIM |= {"max_reductions": 3, "plateau_on": "train"}
FROZEN_TRUNK = ["c1", "c2", "c3", "c4", "c5", "fc6", "fc7"]
VARIANTS = {
    "nopre": {"source": "none", "frozen": [], "adaptation_layers": 2},
    "pre_in1512": {"source": "in1512", "frozen": FROZEN_TRUNK, "adaptation_layers": 2},
    "pre_in1512u": {"source": "in1512", "frozen": FROZEN_TRUNK[:5], "adaptation_layers": 2},
}


def pretrain(dropout: float) -> dict[str, Any]:
    """The ``pretrain`` section: the net of both profiles (transfer reads only the net)."""
    net = {"input_size": 16, "conv": CONV, "dropout": dropout, "mean": [0.5] * 3, "std": [0.25] * 3}
    scale = {"net": net, "fc_dim": dict.fromkeys(PRETRAIN_SOURCES, 8), "max_epochs": 1}
    scale |= {"batch_size": 4, "num_workers": 0, "crop_scale_min": 0.5, "flip": False}
    scale |= {"cache_images": True, "torch_threads": 0}
    return {"optim": OPTIM, "mini": scale, "full": scale}


def transfer(
    variants: list[str], epochs: int, flip: bool, scratch_fc_dim: int, test_set: str
) -> dict[str, Any]:
    """The ``transfer`` section with the named :data:`VARIANTS`."""
    scale = {
        "hidden_dim": 8,
        "scratch_fc_dim": scratch_fc_dim,
        "max_epochs": epochs,
        "batch_size": 16,
    }
    scale |= {"num_workers": 0, "flip": flip, "cache_crops": True, "torch_threads": 0}
    scale |= {"heatmap_images": 1, "heatmap_classes": 1}
    sets = {"train_set": "train", "val_set": "val", "test_set": test_set}
    chosen = {v: VARIANTS[v] for v in variants}
    return {"k": 5, **sets, "optim": OPTIM, "variants": chosen, "mini": scale, "full": scale}
