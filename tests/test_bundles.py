"""Trained weights are safetensors: the same tensors give the same bytes, so DVC sees no change
when a finished stage is rerun (e.g. resumed from its last checkpoint)."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from oquab_repro.lib.bundles import read_bundle, read_generators, write_bundle, write_generators
from oquab_repro.lib.models.alexnet import (
    AlexNet,
    TransferNet,
    from_bundle,
    spec_from_params,
    to_bundle,
)

CONV = [
    {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p}
    for p in (2, 2, 0, 0, 2)
]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _bundle(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    trunk = AlexNet(spec_from_params(16, CONV, 8, 0.5), 0)
    return to_bundle(TransferNet(trunk, [6], 4, 0.5), list("abcd"), [0.5] * 3, [0.25] * 3)


def test_saving_the_same_tensors_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    bundle = _bundle()
    write_bundle(bundle, tmp_path / "a.safetensors")
    # the same weights again, as a rerun gets them: loaded back into a fresh network
    again = from_bundle(read_bundle(tmp_path / "a.safetensors"))
    write_bundle(to_bundle(again, list("abcd"), [0.5] * 3, [0.25] * 3), tmp_path / "b.safetensors")
    assert _md5(tmp_path / "a.safetensors") == _md5(tmp_path / "b.safetensors")
    write_bundle(_bundle(seed=1), tmp_path / "c.safetensors")
    assert _md5(tmp_path / "c.safetensors") != _md5(tmp_path / "a.safetensors")


def test_bytes_do_not_depend_on_the_process(tmp_path: Path) -> None:
    """A second interpreter writes the file byte for byte (no hash-seeded ordering)."""
    write_bundle(_bundle(), tmp_path / "here.safetensors")
    (tmp_path / "bundle.pkl").write_bytes(pickle.dumps(_bundle()))
    code = (
        "import pickle, sys; from pathlib import Path; from oquab_repro.lib.bundles import"
        " write_bundle; write_bundle(pickle.loads(Path(sys.argv[1]).read_bytes()),"
        " Path(sys.argv[2]))"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "bundle.pkl"),
            str(tmp_path / "there.safetensors"),
        ],
        check=True,
    )
    assert _md5(tmp_path / "here.safetensors") == _md5(tmp_path / "there.safetensors")


def test_a_bundle_round_trips_and_rebuilds_the_network(tmp_path: Path) -> None:
    bundle = _bundle()
    write_bundle(bundle, tmp_path / "w.safetensors")
    back = read_bundle(tmp_path / "w.safetensors")
    assert (back["classes"], back["mean"], back["std"]) == (
        bundle["classes"],
        bundle["mean"],
        bundle["std"],
    )
    assert back["spec"]["fc_dim"] == 8 and back["head"] == {
        "hidden": [6],
        "outputs": 4,
        "dropout": 0.5,
    }
    assert all(torch.equal(v, back["state_dict"][k]) for k, v in bundle["state_dict"].items())
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(from_bundle(back).eval()(x), from_bundle(bundle).eval()(x))


def test_a_file_that_is_not_a_bundle_names_itself(tmp_path: Path) -> None:
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable network bundle"):
        read_bundle(tmp_path / "junk.safetensors")


def test_generator_snapshots_round_trip_with_stable_bytes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    snapshots = {
        f"{g}_{d}": {
            e: {"net.0.weight": torch.randn(3, 2), "net.1.num_batches_tracked": torch.tensor(e)}
            for e in (1, 10)
        }
        for g in ("small", "large")
        for d in ("small", "large")
    }
    write_generators(snapshots, tmp_path / "a.safetensors")
    back = read_generators(tmp_path / "a.safetensors")
    assert sorted(back) == sorted(snapshots) and sorted(back["small_large"]) == [1, 10]
    assert all(
        torch.equal(v, back[c][e][k])
        for c, by in snapshots.items()
        for e, st in by.items()
        for k, v in st.items()
    )
    write_generators(back, tmp_path / "b.safetensors")
    assert _md5(tmp_path / "a.safetensors") == _md5(tmp_path / "b.safetensors")
