"""Pretraining data path: the batched jitter (random-resized crops in one roi_align per batch)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.ops import roi_align

from oquab_repro.lib.patches import normalise
from oquab_repro.params import NetParams

CONV = [
    {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p}
    for p in (2, 2, 0, 0, 2)
]
NET = NetParams.model_validate(
    {"input_size": 8, "conv": CONV, "dropout": 0.2, "mean": [0.5] * 3, "std": [0.25] * 3}
)


def _items(n: int, size: int = 20) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    return [
        ((torch.rand(3, size, size, generator=g) * 255).to(torch.uint8), i % 3) for i in range(n)
    ]


def test_full_scale_jitter_is_the_whole_image_resized() -> None:
    from oquab_repro.pipelines.pretrain.nodes import JitteredBatches

    items = _items(6)
    ds = JitteredBatches(
        items, NET, 1.0, flip=False
    )  # area 100%: torchvision falls back to the whole (square) image
    x, y = next(iter(DataLoader(ds, batch_size=4)))  # the loader fetches through __getitems__
    images = torch.stack([i for i, _ in items[:4]]).float() / 255
    boxes = torch.tensor([[b, 0, 0, 20, 20] for b in range(4)], dtype=torch.float32)
    expected = normalise(
        roi_align(images, boxes, output_size=8, sampling_ratio=0, aligned=True), NET.mean, NET.std
    )
    torch.testing.assert_close(x, expected)
    assert y.tolist() == [0, 1, 2, 0]


def test_jitter_is_random_and_seeded() -> None:
    from oquab_repro.pipelines.pretrain.nodes import JitteredBatches

    ds = JitteredBatches(_items(64), NET, 0.3, flip=True)
    torch.manual_seed(1)
    a = torch.stack([x for x, _ in ds.__getitems__(list(range(64)))])
    torch.manual_seed(1)
    b = torch.stack([x for x, _ in ds.__getitems__(list(range(64)))])
    c = torch.stack([x for x, _ in ds.__getitems__(list(range(64)))])
    assert torch.equal(a, b) and not torch.equal(a, c)  # global torch RNG: restored by checkpoints
    assert a.shape == (64, 3, 8, 8)
    with pytest.raises(ValueError, match="one size"):
        JitteredBatches([*_items(2), *_items(1, size=16)], NET, 0.5, flip=False)
