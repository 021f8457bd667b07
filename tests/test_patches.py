"""Patch grid, the labelling rule (clause by clause), crops, k-power aggregation and heat maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oquab_repro.lib.patches import (
    aggregate_scores,
    crop_patches,
    grid_overlap,
    heat_map,
    label_patches,
    patch_grid,
    sample_training_patches,
)

THESIS_SCALES = (1, 1.3, 1.6, 2, 2.4, 2.8, 3.2, 3.6, 4)
P = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # |P| = 100


def _label(objects: list[list[float]], classes: list[int] | None = None) -> int:
    boxes = torch.tensor(objects, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor(classes or list(range(1, len(objects) + 1)))
    return int(label_patches(P, boxes, labels, 0.2, 0.6)[0])


def test_positive_when_all_clauses_hold() -> None:
    assert _label([[2, 2, 8, 7]], [7]) == 7  # |P∩B| = 30 ≥ 20 and = |B|


def test_clause_i_patch_fraction() -> None:
    assert _label([[1, 1, 5, 6]]) == 1  # 20 = 0.2|P|: boundary is positive
    assert _label([[1, 1, 3, 3]]) == 0  # 4 < 0.2|P| although the object is inside


def test_clause_ii_object_fraction() -> None:
    assert _label([[0, 0, 30, 30]]) == 0  # covers P but |P∩B| = 100 < 0.6 × 900
    assert _label([[4, 0, 14, 10]]) == 1  # 60 = 0.6|B|: boundary is positive
    assert _label([[5, 0, 15, 10]]) == 0  # 50 < 0.6|B|


def test_clause_iii_single_object() -> None:
    assert _label([[2, 2, 8, 7], [9, 9, 12, 12]]) == 0  # a second object barely overlapping
    assert _label([[0, 0, 5, 10], [5, 0, 10, 10]]) == 0  # two objects both satisfying (i), (ii)
    assert _label([[2, 2, 8, 7], [10, 0, 12, 12]], [3, 4]) == 3  # touching the border is no overlap


def test_vectorised_over_patches() -> None:
    patches = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15]])
    boxes = torch.tensor([[2.0, 2, 8, 7], [21, 21, 29, 29]])
    out = label_patches(patches, boxes, torch.tensor([4, 9]), 0.2, 0.6)
    assert out.tolist() == [4, 9, 0]
    assert label_patches(
        patches, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 0.2, 0.6
    ).tolist() == [0, 0, 0]


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (333, 333), (128, 96), (97, 150)])
def test_grid_covers_image_with_half_overlap(size: tuple[int, int]) -> None:
    w, h = size
    boxes, scale_ids = patch_grid(w, h, THESIS_SCALES, 0.5)
    assert len(boxes) == len(scale_ids)
    assert boxes.min() >= 0
    assert boxes[:, 2].max() <= w + 1e-4 and boxes[:, 3].max() <= h + 1e-4
    for i, lam in enumerate(THESIS_SCALES):
        b = boxes[scale_ids == i].numpy()
        np.testing.assert_allclose(b[:, 2] - b[:, 0], min(w, h) / lam, rtol=1e-5)
        np.testing.assert_allclose(b[:, 3] - b[:, 1], min(w, h) / lam, rtol=1e-5)
        assert grid_overlap(b) >= 0.5 - 1e-6
        assert b[:, 0].min() == 0 and b[:, 2].max() == pytest.approx(
            w, rel=1e-5
        )  # border to border
        assert b[:, 1].min() == 0 and b[:, 3].max() == pytest.approx(h, rel=1e-5)
    # the thesis' ≈500 patches per image at full scale (our grid: a few hundred on VOC sizes)
    if size == (500, 375):
        assert 200 <= len(boxes) <= 800


def test_grid_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="step_fraction"):
        patch_grid(100, 100, THESIS_SCALES, 0.0)
    with pytest.raises(ValueError, match="scales"):
        patch_grid(100, 100, (0.5,), 0.5)


def test_background_sampling_is_seeded_and_keeps_positives() -> None:
    labels = torch.zeros(10_000, dtype=torch.int64)
    labels[:50] = 3
    a = sample_training_patches(labels, 0.1, torch.Generator().manual_seed(1))
    b = sample_training_patches(labels, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert set(range(50)) <= set(a.tolist())
    assert 0.08 < (len(a) - 50) / 9950 < 0.12


def test_crop_matches_pixels() -> None:
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    crops = crop_patches(image, torch.tensor([[2.0, 4.0, 6.0, 8.0], [0, 0, 8, 8]]), 4)
    assert crops.shape == (2, 3, 4, 4)
    torch.testing.assert_close(crops[0], image[:, 4:8, 2:6])  # same size: an exact copy
    # halving: each output pixel is the mean of its 2×2 block
    torch.testing.assert_close(crops[1], image.reshape(3, 4, 2, 4, 2).mean(dim=(2, 4)))


def test_k_power_aggregation() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.5], [0.2, 0.4]])
    torch.testing.assert_close(aggregate_scores(probs, 1), probs.mean(0))
    torch.testing.assert_close(aggregate_scores(probs, 5), (probs**5).mean(0))
    assert aggregate_scores(probs, 5)[0] == pytest.approx((0.9**5 + 0.1**5 + 0.2**5) / 3)
    # a large k ranks by the max: one confident patch beats many lukewarm ones
    many = torch.tensor([[0.95, 0.6], [0.0, 0.6], [0.0, 0.6]])
    assert aggregate_scores(many, 1)[0] < aggregate_scores(many, 1)[1]
    assert aggregate_scores(many, 5)[0] > aggregate_scores(many, 5)[1]


def test_heat_map_averages_covering_patches() -> None:
    boxes = torch.tensor([[0.0, 0, 4, 4], [2, 2, 6, 6]])
    values = torch.tensor([[1.0], [3.0]])
    m = heat_map(boxes, values, height=6, width=6)[0]
    assert m[0, 0] == 1 and m[5, 5] == 3 and m[3, 3] == 2  # overlap: mean of both
    assert m[0, 5] == 0  # uncovered


def test_patch_crops_match_whole_image_crops() -> None:
    import pandas as pd

    from oquab_repro.lib.patches import PatchCrops, normalise

    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 40, 50, generator=g) * 255).to(torch.uint8)
    boxes, _ = patch_grid(50, 40, (1, 2, 3.6), 0.5)
    table = pd.DataFrame(boxes.numpy(), columns=["x0", "y0", "x1", "y1"]).assign(
        image_id="a", label=1
    )
    ds = PatchCrops({"a": image}, table, 8, [0.5] * 3, [0.25] * 3, flip=False)
    expected = normalise(crop_patches(image.float() / 255, boxes, 8), [0.5] * 3, [0.25] * 3)
    got = torch.stack([ds[i][0] for i in range(len(ds))])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_score_image_batches_per_scale() -> None:
    from oquab_repro.lib.patches import score_image

    calls = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)

    image = torch.full((3, 30, 40), 128, dtype=torch.uint8)
    boxes, probs = score_image(
        Probe(), image, THESIS_SCALES, 0.5, 8, [0.5] * 3, [0.25] * 3, torch.device("cpu")
    )
    assert len(calls) == len(THESIS_SCALES) and sum(calls) == len(boxes) == len(probs)
    torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))


def test_score_images_shares_the_trunk_and_matches_scoring_each_network_alone() -> None:
    from oquab_repro.lib.models.alexnet import (
        AlexNet,
        spec_from_params,
        split_at,
        to_bundle,
        transfer_network,
    )
    from oquab_repro.lib.patches import score_image, score_images

    conv = [
        {"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p}
        for p in (2, 2, 0, 0, 2)
    ]
    torch.manual_seed(0)
    source = to_bundle(
        AlexNet(spec_from_params(16, conv, 8, 0.5), 5), list("abcde"), [0.5] * 3, [0.25] * 3
    )
    frozen = ["c1", "c2", "c3", "c4", "c5"]
    nets = {
        "a": transfer_network(source, None, [*frozen, "fc6", "fc7"], [6], 3, seed=1).eval(),
        "u": transfer_network(source, None, frozen, [], 3, seed=2).eval(),
    }
    trunk, _ = split_at(nets["a"], 5)
    heads = {k: split_at(n, 5)[1] for k, n in nets.items()}
    g = torch.Generator().manual_seed(0)
    images = [
        (f"i{j}", (torch.rand(3, 30 + 7 * j, 41, generator=g) * 255).to(torch.uint8))
        for j in range(5)
    ]
    shared = score_images(
        iter(images),
        trunk,
        heads,
        THESIS_SCALES,
        0.5,
        16,
        [0.5] * 3,
        [0.25] * 3,
        5,
        torch.device("cpu"),
        batch_patches=50,
    )
    for name, net in nets.items():
        for image_id, image in images:
            _, probs = score_image(
                net, image, THESIS_SCALES, 0.5, 16, [0.5] * 3, [0.25] * 3, torch.device("cpu")
            )
            torch.testing.assert_close(
                shared[name][image_id], aggregate_scores(probs, 5), atol=1e-6, rtol=1e-5
            )
