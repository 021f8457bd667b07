"""Run by tests/test_distributed.py, alone or under torchrun: trains a tiny AlexNet with
:func:`oquab_repro.lib.training.fit` and writes its final weights and history (rank 0).

Usage: ``ddp_probe.py OUT CHECKPOINTS [STOP_EPOCH]``. No dropout (p = 0), so 1 and 2 ranks run the
same optimisation: 65 training items in global batches of 16 leave a last batch of one item, which
one rank trains while the other waits in DDP's Join. With STOP_EPOCH, rank 0 dies right after
writing that epoch's checkpoint (as a killed job would); a rerun resumes from it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from oquab_repro.lib import distributed
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params
from oquab_repro.lib.training import TrainConfig, fit, set_threads

CONV = [
    {"channels": c, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p}
    for c, p in ((4, 2), (6, 2), (6, 0), (6, 0), (4, 2))
]
CFG = TrainConfig(
    lr=0.05, momentum=0.9, weight_decay=5e-4, lr_factor=0.1, patience=1, max_reductions=3,
    max_epochs=5, batch_size=16, num_workers=0, seed=0, plateau_on="train",
)  # fmt: skip


class DyingCheckpointer(Checkpointer):
    """Saves, then kills the process after ``stop`` (rank 0 is the only one that saves)."""

    def __init__(self, folder: Path, stop: int) -> None:
        super().__init__(folder)
        self.stop = stop

    def save(self, epoch: int, state: dict) -> Path:
        path = super().save(epoch, state)
        if epoch == self.stop:
            os._exit(3)
        return path


def main(out: str, checkpoints: str, stop: int = 0) -> None:
    w = distributed.init("cpu")
    set_threads(1)
    g = torch.Generator().manual_seed(123)
    x, y = torch.rand(96, 3, 16, 16, generator=g), torch.randint(0, 5, (96,), generator=g)
    torch.manual_seed(0)
    net = AlexNet(spec_from_params(16, CONV, fc_dim=12, dropout=0.0), 5)
    checkpointer = DyingCheckpointer(Path(checkpoints), stop) if stop else Checkpointer(checkpoints)
    train, val = TensorDataset(x[:65], y[:65]), TensorDataset(x[65:], y[65:])
    history = fit(net, train, val, CFG, torch.device("cpu"), checkpointer)
    if w.is_main:
        torch.save(net.state_dict(), out)
        records = history.drop(columns="seconds").to_dict("list")
        Path(out).with_suffix(".json").write_text(json.dumps({"size": w.size, **records}))
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:]))
