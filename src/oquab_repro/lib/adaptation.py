"""Ch. 3 adaptation (§3.2.3): one transfer variant's network and the part of it that SGD trains.

Shared by the transfer stage (Tables 3.1/3.2, trained on patches) and the action stage
(Table 3.3, trained on persons): a variant copies C1–FC7 of its source network, or draws them at
random when its source is ``none`` (NO PRETRAIN), freezes some of them and adds FCa…FCb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from oquab_repro.lib.models.alexnet import (
    TransferNet,
    frozen_prefix,
    spec_from_params,
    transfer_network,
)
from oquab_repro.lib.training import precompute, precompute_on_disk
from oquab_repro.params import NO_SOURCE


def variant_network(
    source: dict[str, Any] | None, variant: Any, net: Any, scale: Any, num_outputs: int, seed: int
) -> tuple[TransferNet, list[float], list[float]]:
    """The network of a transfer ``variant`` (params ``transfer.variants.<name>``) and the input
    normalisation it expects: its source bundle's, or ``net``'s (pretrain.<profile>.net) when it
    starts from scratch with FC6/FC7 of ``scale.scratch_fc_dim`` (``scale``: transfer.<profile>,
    whose ``hidden_dim`` is each hidden adaptation layer's width)."""
    scratch = None
    if source is None:
        conv = [c.model_dump() for c in net.conv]
        scratch = spec_from_params(net.input_size, conv, scale.scratch_fc_dim, net.dropout)
    hidden = [scale.hidden_dim] * (variant.adaptation_layers - 1)
    model = transfer_network(source, scratch, variant.frozen, hidden, num_outputs, seed)
    if source is None:
        return model, list(net.mean), list(net.std)
    return model, source["mean"], source["std"]


def trainable_part(
    model: TransferNet,
    sets: dict[str, Dataset],
    *,
    jitter: bool,
    cache_inputs: bool,
    batch_size: int,
    device: torch.device,
    on_disk: Path | None = None,
) -> tuple[nn.Module, dict[str, Dataset], int]:
    """What to train and on which data, and how many leading layers are frozen.

    Without ``jitter`` (random transforms drawn every epoch) the frozen prefix's outputs never
    change, so they are computed once and only the rest of the network is trained on them: the
    same optimisation, several times cheaper. With no frozen layer this still pays when
    ``cache_inputs`` asks to keep the (cropped) inputs in memory. The outputs are kept in memory,
    or with ``on_disk`` (a folder named after the run's inputs) in files there, one subfolder per
    set (the full profile: no image set is held in memory).
    """
    prefix, rest = frozen_prefix(model)
    if jitter or not (len(prefix) or cache_inputs):
        return model, sets, len(prefix)
    if on_disk is None:
        cached = {k: precompute(prefix, v, batch_size, device) for k, v in sets.items()}
    else:
        cached = {
            k: precompute_on_disk(prefix, v, batch_size, device, on_disk / k)
            for k, v in sets.items()
        }
    return rest, cached, len(prefix)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pretraining_findings(
    maps: dict[str, float], sources: dict[str, str], method: str
) -> dict[str, Any]:
    """Each pretrained variant's mAP gain over the first variant trained from scratch (NO
    PRETRAIN), whether it is positive, and the best pretrained mAP (``maps``: variant → mAP,
    ``sources``: variant → its source network)."""
    scratch = [v for v, s in sources.items() if s == NO_SOURCE]
    pretrained = [v for v, s in sources.items() if s != NO_SOURCE]
    findings: dict[str, Any] = {}
    if pretrained:
        findings[f"best_pretrained_map_{method}"] = max(maps[v] for v in pretrained)
    if scratch:
        gains = {v: maps[v] - maps[scratch[0]] for v in pretrained}
        findings[f"pretraining_gain_{method}"] = gains
        findings["pretraining_helps"] = {v: bool(g > 0) for v, g in gains.items()}
    return findings
