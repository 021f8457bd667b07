"""Full-profile loading streams (issue 12, item 4) and the rehearsal caps apply (item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from oquab_repro.params import CapsParams, cap

PROBE = Path(__file__).with_name("rss_probe.py")


def _peak_mb(tmp_path: Path, stage: str, images: int, *extra: str) -> float:
    root = tmp_path / f"{stage}_{images}_{'_'.join(extra)}"
    out = subprocess.run(
        [sys.executable, str(PROBE), stage, str(root), str(images), *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


@pytest.mark.slow  # ~4 min: five probe processes decoding 500×375 JPEGs
@pytest.mark.parametrize("stage", ["weak", "pretrain"])
def test_peak_rss_does_not_grow_with_the_number_of_images(tmp_path: Path, stage: str) -> None:
    """4× the images, 500×375 JPEGs, the full profile's loaders and one capped epoch: the peak RSS
    stays under 1.25× (issue 12). For weak the mini profile's in-memory path is the control: with
    4× the images it exceeds that bound, so the probe sees a loader that keeps the pixels."""
    small, large = _peak_mb(tmp_path, stage, 16), _peak_mb(tmp_path, stage, 64)
    assert large < 1.25 * small, f"{stage}: {small:.0f} MB → {large:.0f} MB"
    if stage == "weak":
        preloaded = _peak_mb(tmp_path, stage, 64, "--preload")
        assert preloaded > 1.25 * small, f"control: {small:.0f} MB → {preloaded:.0f} MB"


def test_streamed_weak_items_are_the_preloaded_ones(tmp_path: Path) -> None:
    """The full profile's decoded-per-item sets give exactly the mini profile's items and scores."""
    from oquab_repro.lib.datasets import voc_detection
    from oquab_repro.lib.weak import (
        DecodedImages,
        WeakSet,
        index_detection,
        read_detection,
        score_full_images,
        subset,
    )
    from tests.rss_probe import write_voc

    write_voc(tmp_path, 5)
    labels = {i: i for i in range(1, 21)}
    ds = voc_detection(tmp_path, "2012", "train")
    kept, streamed = read_detection(ds, labels, "t"), index_detection(ds, labels, "t", 1)
    assert isinstance(streamed["images"], DecodedImages)
    assert kept["ids"] == streamed["ids"] and kept["sizes"] == streamed["sizes"] == [(375, 500)] * 5
    index = torch.tensor([4, 1, 3]).numpy()
    kept, streamed = subset(kept, index), subset(streamed, index)
    mean, std = [0.5] * 3, [0.25] * 3
    for full_image in (False, True):
        a = WeakSet(kept, 20, 64, mean, std, 3, full_image)
        b = WeakSet(streamed, 20, 64, mean, std, 3, full_image)
        assert a.prepared is not None and b.prepared is None
        for i in range(len(a)):
            torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
            for k in ("y", "boxes", "labels"):
                assert torch.equal(a[i][1][k], b[i][1][k])

    class Mean(torch.nn.Module):  # a stand-in scorer: any deterministic net will do
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=1, keepdim=True).expand(-1, 4, -1, -1)

    args = (32, mean, std, torch.device("cpu"))
    expected = score_full_images(Mean(), kept["images"], *args)
    assert (
        expected.shape == (3, 4)
        and (expected == score_full_images(Mean(), streamed["images"], *args, 2)).all()
    )


def test_streamed_weak_sets_skip_and_count_unreadable_images_as_preloaded_ones(
    tmp_path: Path,
) -> None:
    """data.skip_corrupt on both weak paths, capped or not: the unreadable image is left out (not
    replaced by its neighbour) and counted once, also when a DataLoader worker met it."""
    from oquab_repro.lib.datasets import capped, skip_summary, voc_detection
    from oquab_repro.lib.weak import index_detection, read_detection
    from tests.rss_probe import write_voc

    write_voc(tmp_path, 6)
    labels = {i: i for i in range(1, 21)}
    probe = voc_detection(tmp_path, "2012", "train")
    bad = capped(probe, 4, 0).indices[1]  # inside the capped choice too
    Path(probe._path(bad)).write_bytes(b"not a JPEG")
    for limit, readable in ((None, 5), (4, 3)):
        one, two = (
            capped(voc_detection(tmp_path, "2012", "train", skip_corrupt=True), limit, 0)
            for _ in range(2)
        )
        kept, streamed = read_detection(one, labels, "t"), index_detection(two, labels, "t", 1)
        assert len(kept["ids"]) == readable and kept["ids"] == streamed["ids"]
        assert kept["sizes"] == streamed["sizes"] and len(streamed["images"]) == readable
        for a, b in zip(kept["images"], streamed["images"], strict=True):
            assert torch.equal(a, b)
        counted = {"skipped_images": 1, "skipped_first": [Path(probe._path(bad)).name]}
        assert skip_summary(one) == skip_summary(two) == counted


def test_caps_validate_and_cap() -> None:
    none = dict.fromkeys(CapsParams.model_fields)
    assert CapsParams.model_validate(none).epochs is None
    with pytest.raises(ValueError, match="greater than 0"):
        CapsParams.model_validate({**none, "epochs": 0})
    assert cap(90, None) == 90 and cap(90, 2) == 2 and cap(1, 2) == 1


def test_steps_per_epoch_cap_stops_each_epoch(tmp_path: Path) -> None:
    from oquab_repro.lib.training import TrainConfig, fit, step_timings

    seen: list[int] = []
    net = torch.nn.Linear(3, 2)
    net.register_forward_hook(lambda m, i, o: seen.append(len(i[0])) if m.training else None)
    data = TensorDataset(torch.randn(40, 3), torch.randint(0, 2, (40,)))
    optim = dict(lr=0.1, momentum=0.0, weight_decay=0.0, lr_factor=0.1, patience=5)
    cfg = TrainConfig(**optim, max_reductions=3, max_epochs=2, batch_size=4, num_workers=0,
                      seed=0, max_steps=3)  # fmt: skip
    history = fit(net, data, data, cfg, torch.device("cpu"), None)
    assert seen == [4] * 6 and len(history) == 2
    assert step_timings(history, len(data), cfg)["train_steps"] == 6


def test_gan_and_causal_caps() -> None:
    import yaml

    from oquab_repro.pipelines.causal.nodes import _config
    from oquab_repro.pipelines.gan.nodes import capped_profile

    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    _, p = capped_profile(raw["gan"], "full", 16, 1)
    assert (p.snapshot_epochs, p.train_images, p.eval_samples, p.batch_size) == ([1], 16, 16, 16)
    assert p.widths == {"small": 32, "medium": 64, "large": 96} and p.image_size == 64
    _, p = capped_profile(raw["gan"], "full", None, None)
    assert p.snapshot_epochs == [1, 10, 50, 100, 200] and p.eval_samples == 10000
    _, scale = _config(raw["causal"], "full", 2, 1)
    assert (scale.ensemble_size, scale.ensemble_curve, scale.epochs) == (2, [1], 1)
    assert scale.hidden == 128  # the networks keep their size
