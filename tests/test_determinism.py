"""Same params and seed, same results on one machine: the training loop in two fresh processes gives
identical histories and byte-identical weight files (README, "Determinism"). The end-to-end twin
of this test reruns the `actions` stage with DVC (tests/test_e2e_dvc.py)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import torch

from oquab_repro.lib import tensor_pickle

# A tiny AlexNet trained 3 epochs with dropout, shuffling and momentum, then its bundle pickled as
# the catalog writes weights.pkl; prints the file's sha256 and the history without wall times.
TRAIN = """
import hashlib, json, sys, torch
from torch.utils.data import TensorDataset
from oquab_repro.lib import tensor_pickle
from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle
from oquab_repro.lib.runtime import seed_everything
from oquab_repro.lib.training import TrainConfig, fit, set_threads
seed = int(sys.argv[1])
set_threads(1)
g = torch.Generator().manual_seed(123)
x, y = torch.rand(96, 3, 16, 16, generator=g), torch.randint(0, 5, (96,), generator=g)
conv = [{"channels": c, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p} for c, p in ((4, 2), (6, 2), (6, 0), (6, 0), (4, 2))]
seed_everything(seed)
net = AlexNet(spec_from_params(16, conv, fc_dim=12, dropout=0.5), 5)
cfg = TrainConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, lr_factor=0.1, patience=1, max_reductions=3,
                  max_epochs=3, batch_size=16, num_workers=0, seed=seed)
history = fit(net, TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), cfg, torch.device("cpu"), None)
blob = tensor_pickle.dumps(to_bundle(net, [str(i) for i in range(5)], [0.5] * 3, [0.25] * 3))
print(json.dumps({"weights": hashlib.sha256(blob).hexdigest(), "history": history.drop(columns="seconds").to_dict("list")}))
"""


def _train(seed: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", TRAIN, str(seed)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_training_twice_with_one_seed_gives_identical_history_and_weight_bytes() -> None:
    first, second, other = _train(0), _train(0), _train(1)
    assert first == second
    assert other["weights"] != first["weights"] and other["history"] != first["history"]  # the seed matters


def test_weight_files_depend_only_on_the_values() -> None:
    state = {"w": torch.arange(12.0).reshape(3, 4), "b": torch.zeros(3, dtype=torch.int64), "s": torch.tensor(2.5)}
    copy = {k: v.clone() for k, v in state.items()}  # same values in other storages
    assert pickle.dumps(state) != pickle.dumps(copy)  # plain pickle names storages by memory address
    assert tensor_pickle.dumps(state) == tensor_pickle.dumps(copy)
    loaded = pickle.loads(tensor_pickle.dumps(state))  # readers need only pickle
    for k, v in state.items():
        assert torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
    bf16 = {"x": torch.ones(2, dtype=torch.bfloat16)}  # no numpy dtype: torch's own reduction
    assert pickle.loads(tensor_pickle.dumps(bf16))["x"].dtype == torch.bfloat16
