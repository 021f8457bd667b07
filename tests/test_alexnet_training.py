"""AlexNet variants, layer freezing for transfer, and the resumable training loop."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.models.alexnet import AlexNet, TransferNet, freeze, full_spec, spec_from_params
from oquab_repro.lib.training import TrainConfig, fit

TINY = [
    {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "lrn": True, "pool": 2},
    {"channels": 6, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 2},
    {"channels": 6, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 0},
    {"channels": 6, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 0},
    {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 2},
]


def tiny_net(num_classes: int = 5) -> AlexNet:
    return AlexNet(spec_from_params(16, TINY, fc_dim=12, dropout=0.5), num_classes)


def test_full_alexnet_shapes() -> None:
    net = AlexNet(full_spec(4096), 1000)
    assert net.conv_shape == (256, 6, 6)  # Krizhevsky's 6×6×256 C5 output on 224 px
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    assert AlexNet(full_spec(6144), 1512).layer("fc7")[0].out_features == 6144


def test_drop_fc8_and_fc7_features() -> None:
    net = tiny_net().eval()
    x = torch.rand(2, 3, 16, 16)
    feats = net.fc7_features(x)
    assert feats.shape == (2, 12)
    net.drop_fc8()
    torch.testing.assert_close(net(x), feats)
    with pytest.raises(KeyError, match="no layer 'fc8'"):
        net.layer("fc8")
    with pytest.raises(ValueError, match="drop FC8"):
        TransferNet(tiny_net(), [8], 3, 0.5)


def test_freezing_keeps_trunk_fixed_and_trains_head() -> None:
    torch.manual_seed(0)
    trunk = tiny_net().drop_fc8()
    freeze(trunk, ["c1", "c2", "c3", "c4", "c5", "fc6", "fc7"])
    net = TransferNet(trunk, [10], 4, dropout=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    x = torch.rand(8, 3, 16, 16)
    torch.testing.assert_close(net.trunk(x), net.trunk(x))  # frozen FC dropout is off in train mode
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    net(x).logsumexp(1).sum().backward()
    opt.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("trunk."))
    assert all(
        not torch.equal(before[k], after[k])
        for k in before
        if k.startswith("head.") and k.endswith("weight")
    )


def test_partial_freeze_like_pre1512u() -> None:
    trunk = tiny_net().drop_fc8()
    freeze(trunk, ["c1", "c2", "c3", "c4", "c5"])
    trainable = {n.split(".")[0] for n, p in trunk.named_parameters() if p.requires_grad}
    assert trainable == {"fc6", "fc7"}


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (n,), generator=g)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.2 + y[:, None, None, None] * 0.2
    return TensorDataset(x, y)


def _cfg(max_epochs: int) -> TrainConfig:
    return TrainConfig(
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        lr_factor=0.1,
        patience=0,
        max_reductions=3,
        max_epochs=max_epochs,
        batch_size=16,
        num_workers=0,
        seed=3,
    )


def test_resume_reproduces_uninterrupted_run(tmp_path) -> None:
    train, val = _data(64, 0), _data(32, 1)
    torch.manual_seed(0)
    full = tiny_net()
    hist_full = fit(
        full, train, val, _cfg(5), torch.device("cpu"), Checkpointer(tmp_path / "a", keep=10)
    )
    assert list(hist_full.step) == list(range(1, len(hist_full) + 1))
    # simulate a crash after epoch 2: only the first two checkpoints survive
    ckpt = Checkpointer(tmp_path / "a", keep=10)
    for epoch, path in ckpt._epochs():
        if epoch > 2:
            path.unlink()
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = tiny_net()
    hist_resumed = fit(resumed, train, val, _cfg(5), torch.device("cpu"), ckpt)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    pd.testing.assert_frame_equal(
        hist_full.drop(columns="seconds"), hist_resumed.drop(columns="seconds")
    )


def test_plateau_schedule_divides_lr_and_stops() -> None:
    train = _data(32, 0)
    val = TensorDataset(torch.rand(16, 3, 16, 16), torch.randint(0, 5, (16,)))  # unlearnable
    torch.manual_seed(0)
    cfg = TrainConfig(
        lr=0.01,
        momentum=0.0,
        weight_decay=0.0,
        lr_factor=0.1,
        patience=0,
        max_reductions=3,
        max_epochs=40,
        batch_size=16,
        num_workers=0,
        seed=0,
    )
    hist = fit(tiny_net(), train, val, cfg, torch.device("cpu"), None)
    lrs = sorted(set(hist.lr.round(12)), reverse=True)
    assert lrs[0] == pytest.approx(0.01) and len(lrs) <= 4
    assert all(b == pytest.approx(a * 0.1) for a, b in zip(lrs, lrs[1:], strict=False))
    assert len(hist) < 40  # the fourth plateau ends training


def test_plateaus_of_the_training_loss_drive_the_schedule_when_asked() -> None:
    """§3.3: the lr is divided when the *training* cross-entropy stabilises; a held-out set whose
    loss rises (here: labels flipped) must then not cut training short, as it does with ``val``."""
    x = torch.randn(32, 2)
    y = (x[:, 0] > 0).long()
    train, val = TensorDataset(x, y), TensorDataset(x, 1 - y)
    runs = {}
    for rule in ("train", "val"):
        torch.manual_seed(0)
        cfg = TrainConfig(
            lr=0.1,
            momentum=0.0,
            weight_decay=0.0,
            lr_factor=0.1,
            patience=0,
            max_reductions=3,
            max_epochs=8,
            batch_size=32,
            num_workers=0,
            seed=0,
            plateau_on=rule,
        )
        runs[rule] = fit(torch.nn.Linear(2, 2), train, val, cfg, torch.device("cpu"), None)
    assert (
        runs["train"].train_loss.diff().dropna() < 0
    ).all()  # full-batch descent on a convex loss
    assert len(runs["train"]) == 8 and set(runs["train"].lr) == {0.1}
    assert (
        len(runs["val"]) < 8
    )  # the rising held-out loss divided the lr four times and stopped training


def test_bundle_round_trip() -> None:
    from oquab_repro.lib.models.alexnet import from_bundle, to_bundle

    torch.manual_seed(0)
    net = tiny_net().eval()
    x = torch.rand(2, 3, 16, 16)
    again = from_bundle(to_bundle(net, list("abcde"), [0.5] * 3, [0.2] * 3)).eval()
    torch.testing.assert_close(again(x), net(x))
    transfer = TransferNet(tiny_net().drop_fc8(), [7, 6], 4, 0.3).eval()
    bundle = to_bundle(transfer, list("abc"), [0.5] * 3, [0.2] * 3)
    assert bundle["head"] == {"hidden": [7, 6], "outputs": 4, "dropout": 0.3}
    torch.testing.assert_close(from_bundle(bundle).eval()(x), transfer(x))


@pytest.mark.parametrize(
    ("frozen", "cut"),
    [
        (["c1", "c2", "c3", "c4", "c5", "fc6", "fc7"], 7),
        (["c1", "c2", "c3", "c4", "c5"], 5),
        ([], 0),
        (["c1", "c3"], 1),
    ],
)
def test_frozen_prefix_composes_to_the_model(frozen: list[str], cut: int) -> None:
    from oquab_repro.lib.models.alexnet import frozen_prefix

    torch.manual_seed(0)
    trunk = tiny_net().drop_fc8()
    freeze(trunk, frozen)
    net = TransferNet(trunk, [10], 4, dropout=0.5).eval()
    prefix, rest = frozen_prefix(net)
    assert len(prefix) == cut
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(rest(prefix(x)), net(x))
    assert all(p.requires_grad for p in rest[0].parameters()) or cut == 7


def test_checkpoints_of_other_settings_are_not_resumed(tmp_path) -> None:
    from oquab_repro.lib.training import fingerprint

    train, val = _data(32, 0), _data(16, 1)
    ckpt = Checkpointer(tmp_path / "c", keep=10)
    torch.manual_seed(0)
    fit(
        tiny_net(), train, val, _cfg(2), torch.device("cpu"), ckpt, run_id=fingerprint({"lr": 0.05})
    )
    torch.manual_seed(0)
    fresh = tiny_net()
    hist = fit(
        fresh, train, val, _cfg(3), torch.device("cpu"), ckpt, run_id=fingerprint({"lr": 0.06})
    )
    assert list(hist.step) == [1, 2, 3]  # trained from scratch, not resumed at epoch 2
    assert [e for e, _ in ckpt._epochs()] == [1, 2, 3]
    assert fingerprint({"a": 1}, {"w": torch.ones(2)}) != fingerprint(
        {"a": 1}, {"w": torch.zeros(2)}
    )


def test_a_finished_checkpoint_of_other_code_is_not_resumed(tmp_path, monkeypatch) -> None:
    """Checkpoint folders outlive code edits (they are no DVC outs): a finished run's checkpoint
    written by other training code must not stand in for what the current code trains."""
    from oquab_repro.lib import training

    train, val = _data(32, 0), _data(16, 1)
    ckpt = Checkpointer(tmp_path / "c", keep=10)
    torch.manual_seed(0)
    fit(tiny_net(), train, val, _cfg(2), torch.device("cpu"), ckpt, run_id="same-inputs")
    again = fit(tiny_net(), train, val, _cfg(2), torch.device("cpu"), ckpt, run_id="same-inputs")
    assert list(again.step) == [1, 2]  # unchanged code: the finished run is resumed as it is
    assert ckpt.latest()["finished"]
    monkeypatch.setattr(training, "code_digest", lambda *defined: "edited-code")
    messages = []
    monkeypatch.setattr(training.log, "warning", lambda msg, *args: messages.append(msg % args))
    torch.manual_seed(0)
    fit(tiny_net(), train, val, _cfg(2), torch.device("cpu"), ckpt, run_id="same-inputs")
    assert any("other settings, data or code" in m for m in messages), messages
    assert ckpt.latest()["run_id"] == "same-inputs/edited-code"


def _frozen_transfer_net() -> TransferNet:
    torch.manual_seed(0)
    trunk = tiny_net().drop_fc8()
    freeze(trunk, ["c1", "c2", "c3", "c4", "c5", "fc6", "fc7"])
    return TransferNet(trunk, [10], 4, dropout=0.5)


def test_frozen_outputs_on_disk_are_the_in_memory_ones(tmp_path) -> None:
    """The full profile's on-disk outputs of the frozen C1–FC7 (``on_disk``) give the very tensors
    the mini profile keeps in memory, item by item and through DataLoader workers; a finished
    folder is read back, not recomputed."""
    from torch.utils.data import DataLoader

    from oquab_repro.lib.adaptation import trainable_part
    from oquab_repro.lib.training import FeatureFile, precompute_on_disk

    sets = {"train": _data(21, 1), "val": _data(9, 2)}  # 21: a last batch of 5
    common = {
        "jitter": False,
        "cache_inputs": False,
        "batch_size": 8,
        "device": torch.device("cpu"),
    }
    rest, memory, cut = trainable_part(_frozen_transfer_net(), sets, **common)
    rest_d, disk, cut_d = trainable_part(_frozen_transfer_net(), sets, **common, on_disk=tmp_path)
    assert cut == cut_d == 7 and str(rest) == str(rest_d)
    for name in sets:
        assert isinstance(disk[name], FeatureFile) and len(disk[name]) == len(sets[name])
        for a, b in zip(memory[name], disk[name], strict=True):
            assert all(torch.equal(u, v) and u.dtype == v.dtype for u, v in zip(a, b, strict=True))
        streamed = list(DataLoader(disk[name], batch_size=4, num_workers=1))
        torch.testing.assert_close(torch.cat([x for x, _ in streamed]), memory[name].tensors[0])
    again = precompute_on_disk(
        torch.nn.Identity(), sets["val"], 8, torch.device("cpu"), tmp_path / "val"
    )
    assert torch.equal(again[3][0], memory["val"][3][0])  # read back: Identity would give pixels


class _DiesAt(torch.utils.data.Dataset):
    """A dataset whose reading process dies at item ``at`` (a killed run)."""

    def __init__(self, base: TensorDataset, at: int):
        self.base, self.at = base, at

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        if i == self.at:
            raise KeyboardInterrupt
        return self.base[i]


def test_a_killed_run_leaves_no_feature_folder_that_reads_as_finished(
    tmp_path, monkeypatch
) -> None:
    """Outputs are written in a temporary folder renamed into place when complete: a run killed
    mid-way (no clean-up, as under SIGKILL) leaves only that temporary folder, and the next run
    computes every item afresh."""
    from oquab_repro.lib import training
    from oquab_repro.lib.models.alexnet import frozen_prefix

    prefix, _ = frozen_prefix(_frozen_transfer_net())
    data, cpu, folder = _data(21, 1), torch.device("cpu"), tmp_path / "train"
    monkeypatch.setattr(training.shutil, "rmtree", lambda *a, **k: None)  # SIGKILL: no clean-up
    with pytest.raises(KeyboardInterrupt):
        training.precompute_on_disk(prefix, _DiesAt(data, 17), 8, cpu, folder)
    monkeypatch.undo()
    assert not folder.exists()
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and (left[0] / "features.npy").is_file()
    disk = training.precompute_on_disk(prefix, data, 8, cpu, folder)
    memory = training.precompute(prefix, data, 8, cpu)
    assert torch.equal(torch.stack([x for x, _ in disk]), memory.tensors[0])
