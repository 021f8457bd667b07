"""Same params and seed, same results on one machine: the training loop in two fresh processes gives
identical histories and byte-identical weight files (README, "Determinism"). The end-to-end twin
of this test reruns the `actions` stage with DVC (tests/test_e2e_dvc.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from oquab_repro.lib.bundles import read_bundle, write_bundle

# A tiny AlexNet trained 3 epochs with dropout, shuffling and momentum, then its bundle pickled as
# the catalog writes weights.safetensors; prints the file's sha256 and the
# history without wall times.
TRAIN = """
import hashlib, json, sys, tempfile, torch
from pathlib import Path
from torch.utils.data import TensorDataset
from oquab_repro.lib.bundles import write_bundle
from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle
from oquab_repro.lib.runtime import seed_everything
from oquab_repro.lib.training import TrainConfig, fit, set_threads
seed = int(sys.argv[1])
set_threads(1)
g = torch.Generator().manual_seed(123)
x, y = torch.rand(96, 3, 16, 16, generator=g), torch.randint(0, 5, (96,), generator=g)
conv = [{"channels": c, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p}
        for c, p in ((4, 2), (6, 2), (6, 0), (6, 0), (4, 2))]
seed_everything(seed)
net = AlexNet(spec_from_params(16, conv, fc_dim=12, dropout=0.5), 5)
cfg = TrainConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, lr_factor=0.1, patience=1,
                  max_reductions=3, max_epochs=3, batch_size=16, num_workers=0, seed=seed)
history = fit(net, TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:]), cfg,
              torch.device("cpu"), None)
path = Path(tempfile.mkdtemp()) / "weights.safetensors"
write_bundle(to_bundle(net, [str(i) for i in range(5)], [0.5] * 3, [0.25] * 3), path)
blob = path.read_bytes()
print(json.dumps({"weights": hashlib.sha256(blob).hexdigest(),
                  "history": history.drop(columns="seconds").to_dict("list")}))
"""


def _train(seed: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN, str(seed)], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_training_twice_with_one_seed_gives_identical_history_and_weight_bytes() -> None:
    first, second, other = _train(0), _train(0), _train(1)
    assert first == second
    assert (
        other["weights"] != first["weights"] and other["history"] != first["history"]
    )  # the seed matters


def test_weight_files_depend_only_on_the_values(tmp_path: Path) -> None:
    state = {
        "w": torch.arange(12.0).reshape(3, 4),
        "b": torch.zeros(3, dtype=torch.int64),
        "s": torch.tensor(2.5),
    }
    copy = {
        k: v.clone() for k, v in reversed(state.items())
    }  # same values, other storages and order
    write_bundle(
        {"state_dict": state, "classes": ["a"], "spec": {"n": 1}}, tmp_path / "a.safetensors"
    )
    write_bundle(
        {"spec": {"n": 1}, "classes": ["a"], "state_dict": copy}, tmp_path / "b.safetensors"
    )
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded = read_bundle(tmp_path / "a.safetensors")
    assert loaded["classes"] == ["a"] and loaded["spec"] == {"n": 1}
    for k, v in state.items():
        assert torch.equal(loaded["state_dict"][k], v) and loaded["state_dict"][k].dtype == v.dtype
    (tmp_path / "a.safetensors").write_bytes(b"not a bundle")
    try:
        read_bundle(tmp_path / "a.safetensors")
    except ValueError as err:
        assert "a.safetensors" in str(err) and "dvc repro" in str(err)
    else:
        raise AssertionError("a corrupt weight file must not load")
