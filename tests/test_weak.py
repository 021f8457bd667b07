"""Chapter 4: FC→conv recast, global / masked max pooling, the location metric and the weak loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.metrics import (
    ap_from_curve,
    inside_boxes,
    location_ap,
    location_outcomes,
    precision_recall,
)
from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params
from oquab_repro.lib.models.fcn import (
    box_mask,
    cell_centres,
    fcn_from_bundle,
    fcn_to_bundle,
    from_alexnet,
    global_max_pool,
    masked_max_pool,
)
from oquab_repro.lib.training import Objective, TrainConfig, fit
from oquab_repro.lib.weak import canvas, weak_loss

MINI_CONV = [
    {"channels": 8, "kernel": 5, "stride": 1, "padding": 2, "lrn": False, "pool": 2},
    {"channels": 8, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 2},
    {"channels": 8, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 0},
    {"channels": 8, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 0},
    {"channels": 8, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 2},
]


def _trunk(seed: int = 0) -> AlexNet:
    torch.manual_seed(seed)
    return AlexNet(spec_from_params(24, MINI_CONV, 16, 0.2), 5).eval()


def test_fc_to_conv_gives_the_classifiers_outputs_on_a_mini_input() -> None:
    trunk = _trunk()
    x = torch.randn(3, 3, 24, 24)
    expected = trunk.fc7_features(x)
    fcn = from_alexnet(trunk, num_classes=4, hidden=8, dropout=0.5).eval()
    got = fcn.fc7(fcn.fc6(fcn.features(x)))
    assert got.shape == (3, 16, 1, 1)
    torch.testing.assert_close(got.flatten(1), expected, rtol=0, atol=1e-5)
    stride, first = fcn.geometry()
    assert (stride, first) == (8, pytest.approx(12.0))  # centre of the first window [0, 24]


def test_dense_cells_are_the_classifier_on_windows_without_padding() -> None:
    """Without zero padding (which crops see at their borders, dense maps do not), each cell of the
    dense map is exactly the classifier applied to one window."""
    torch.manual_seed(0)
    conv = [{**c, "padding": 0} for c in MINI_CONV]
    trunk = AlexNet(spec_from_params(44, conv, 16, 0.2), 5).eval()
    fcn = from_alexnet(trunk, 4, 8, 0.5).eval()
    big = torch.randn(1, 3, 76, 92)
    dense = fcn.fc7(fcn.fc6(fcn.features(big)))
    assert fcn.geometry()[0] == 8 and dense.shape[2:] == (5, 7)
    torch.testing.assert_close(
        dense[0, :, 2, 3], trunk.fc7_features(big[:, :, 16:60, 24:68])[0], rtol=0, atol=1e-5
    )


def test_fcn_bundle_round_trip() -> None:
    fcn = from_alexnet(_trunk(), 4, 8, 0.5).eval()
    again = fcn_from_bundle(fcn_to_bundle(fcn, list("abcd"), [0.5] * 3, [0.25] * 3)).eval()
    x = torch.randn(2, 3, 40, 32)
    torch.testing.assert_close(again(x), fcn(x))


def test_global_max_pool_routes_gradient_only_to_the_argmax_cell() -> None:
    maps = torch.randn(2, 3, 5, 6, requires_grad=True)
    scores, index = global_max_pool(maps)
    scores.sum().backward()
    grad = maps.grad.flatten(2)
    assert torch.equal(grad.argmax(dim=2), index)
    assert torch.equal((grad != 0).sum(dim=2), torch.ones(2, 3, dtype=torch.long))
    torch.testing.assert_close(scores, maps.detach().flatten(2).amax(dim=2))


def test_masked_pool_never_picks_a_cell_outside_the_mask() -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        maps = torch.randn(4, 3, 6, 7, generator=gen)
        mask = torch.rand(4, 3, 6, 7, generator=gen) < 0.3
        mask[..., 0, 0] = True  # every (image, class) has a cell
        scores, index = masked_max_pool(maps, mask)
        assert mask.flatten(2).gather(2, index[..., None]).all()
        best = maps.masked_fill(~mask, float("-inf")).flatten(2).amax(dim=2)
        torch.testing.assert_close(scores, best)
    with pytest.raises(ValueError, match="no cell"):
        masked_max_pool(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.bool))


def test_box_mask_covers_the_class_boxes_and_leaves_absent_classes_free() -> None:
    # stride 8, first centre 12: cell centres 12, 20, 28, ... ;
    # a box x∈[30, 45], y∈[0, 10] of class 2
    boxes = torch.tensor([[[30.0, 0.0, 45.0, 10.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[2, 0]])
    mask = box_mask(boxes, labels, num_classes=3, n=4, m=6, stride=8.0, first=12.0)
    ys, xs = cell_centres(4, 6, 8.0, 12.0)
    assert xs.tolist()[:4] == [12, 20, 28, 36]
    # footprints [c−4, c+4] meeting [30, 45]: centres 28, 36, 44 → columns 2, 3, 4;
    # rows: [8, 16] meets [0, 10] → row 0
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[0, 2:5] = True
    assert torch.equal(mask[0, 1], expected)
    assert mask[0, 0].all() and mask[0, 2].all()  # classes 1 and 3 absent: full maps


def test_location_metric_tolerance_edge() -> None:
    box = np.array([[10.0, 20.0, 30.0, 40.0]])
    assert inside_boxes([[20, 30]], box, 0.0)[0]
    assert inside_boxes([[30, 40]], box, 0.0)[0]  # on the border
    assert inside_boxes([[34.9, 30]], box, 5.0)[0]  # just inside the tolerance
    assert not inside_boxes([[35.1, 30]], box, 5.0)[0]  # just outside
    assert not inside_boxes([[20, 14.9]], box, 5.0)[0]
    assert inside_boxes([[5.0, 45.0]], box, 5.0)[0]  # corner, exactly at the tolerance
    assert not inside_boxes([[20, 30]], np.zeros((0, 4)), 5.0)[0]


def test_location_ap_on_hand_made_predictions() -> None:
    # 4 images, 1 class; present in images 0, 1, 2 (image 3: absent)
    labels = np.array([[1], [1], [1], [-1]])
    boxes = [
        [np.array([[0.0, 0.0, 10.0, 10.0]])],
        [np.array([[50.0, 50.0, 60.0, 60.0]])],
        [np.array([[0.0, 0.0, 4.0, 4.0]])],
        [np.zeros((0, 4))],
    ]
    points = np.array([[[5.0, 5.0]], [[5.0, 5.0]], [[6.0, 6.0]], [[5.0, 5.0]]])
    confidence = np.array([[0.9], [0.8], [0.7], [0.6]])
    outcomes = location_outcomes(points, labels, boxes, tolerance=2.0)
    assert outcomes[:, 0].tolist() == [1, -1, 1, -1]  # image 1 mislocated: FP (and a missed object)
    # ranking: TP, FP, TP, FP over 3 positives → precision 1, 1/2, 2/3, 2/4 at
    # recall 1/3, 1/3, 2/3, 2/3
    precision, recall = precision_recall(confidence[:, 0], outcomes[:, 0], n_positives=3)
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    expected = ap_from_curve(precision, recall, "voc10")
    assert expected == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert location_ap(confidence, points, labels, boxes, 2.0, "voc10")[0] == pytest.approx(
        expected
    )
    # one pixel less tolerance and image 2's prediction (6, 6) misses its 4-px box: AP drops
    assert location_ap(confidence, points, labels, boxes, 1.0, "voc10")[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="positives"):
        precision_recall(np.ones(3), np.array([1, 1, 1]), n_positives=2)


def test_weak_loss_is_the_sum_of_softplus_over_classes() -> None:
    f = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, -1.0]])
    expected = torch.nn.functional.softplus(-y * f).sum(dim=1).mean()
    torch.testing.assert_close(weak_loss(f, y), expected)


def test_canvas_keeps_the_aspect_ratio_and_zero_pads() -> None:
    image = torch.full((3, 40, 80), 255, dtype=torch.uint8)
    x, factor = canvas(image, 32, [0.5] * 3, [0.25] * 3, 32)
    assert x.shape == (3, 32, 32) and factor == pytest.approx(0.4)
    assert torch.allclose(x[:, :16], torch.tensor(2.0)) and torch.all(x[:, 16:] == 0)


def test_fit_with_the_weak_objective_learns(tmp_path) -> None:
    """A class present iff a bright square is somewhere in the image:
    learnable only through the max."""

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 32, 32, generator=gen) * 0.1
    y = -torch.ones(32, 1)
    for i in range(0, 32, 2):
        r, c = torch.randint(0, 20, (2,), generator=gen).tolist()
        x[i, :, r : r + 12, c : c + 12] += 2.0
        y[i] = 1.0
    data = torch.utils.data.TensorDataset(x, y)

    def loss(maps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return weak_loss(global_max_pool(maps)[0], t)

    def errors(maps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (global_max_pool(maps)[0].sign() != t).float().mean(dim=1)

    objective = Objective.per_item(loss, errors)
    cfg = TrainConfig(
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        lr_factor=0.1,
        patience=5,
        max_reductions=1,
        max_epochs=5,
        batch_size=8,
        num_workers=0,
        seed=0,
    )

    torch.manual_seed(0)
    model = from_alexnet(_trunk(), 1, 8, 0.0)
    history = fit(
        model,
        data,
        data,
        cfg,
        torch.device("cpu"),
        Checkpointer(tmp_path / "ck"),
        run_id="w",
        objective=objective,
    )
    assert (
        list(history.columns[:4]) == ["step", "lr", "train_loss", "train_error"]
        and "val_error" in history
    )
    assert history.val_loss.iloc[-1] < 0.8 * history.val_loss.iloc[0]
    assert history.val_error.iloc[-1] < history.val_error.iloc[0]


def test_scoring_shares_c1_c5_only_when_they_are_the_same() -> None:
    from oquab_repro.lib.weak import shared_features

    a, b = from_alexnet(_trunk(0), 4, 8, 0.0).eval(), from_alexnet(_trunk(0), 4, 8, 0.0).eval()
    x = torch.randn(2, 3, 40, 48)
    shared = shared_features({"a": a, "b": b})
    assert shared is not None
    torch.testing.assert_close(b.head(shared(x)), b(x))
    assert shared_features({"a": a, "c": from_alexnet(_trunk(1), 4, 8, 0.0)}) is None


def test_weak_training_with_rescaled_batches_resumes_exactly(tmp_path) -> None:
    """Killed mid-run, fit resumes from its checkpoint and ends with the uninterrupted run's
    weights, although every batch is rescaled by a random factor (global RNG,
    saved in the checkpoints)."""
    from oquab_repro.lib.models.fcn import rescale_batch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 32, 32, generator=gen)
    data = torch.utils.data.TensorDataset(
        x, torch.where(torch.rand(16, 2, generator=gen) < 0.5, 1.0, -1.0)
    )

    def loss(maps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return weak_loss(global_max_pool(maps)[0], t)

    def errors(maps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (global_max_pool(maps)[0].sign() != t).float().mean(dim=1)

    calls = {"n": 0}

    def rescale(
        batch: torch.Tensor, t: torch.Tensor, fail_at: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise KeyboardInterrupt
        out, _ = rescale_batch(
            batch, torch.zeros(len(batch), 1, 4), 0.8 + 0.6 * float(torch.rand(())), 24
        )
        return out, t

    cfg = TrainConfig(
        lr=0.01,
        momentum=0.9,
        weight_decay=0.0,
        lr_factor=0.1,
        patience=5,
        max_reductions=1,
        max_epochs=4,
        batch_size=8,
        num_workers=0,
        seed=0,
    )

    def run(folder: str, fail_at: int | None) -> torch.nn.Module:
        torch.manual_seed(0)
        model = from_alexnet(_trunk(), 2, 8, 0.5)
        fit(
            model,
            data,
            data,
            cfg,
            torch.device("cpu"),
            Checkpointer(tmp_path / folder),
            run_id="r",
            objective=Objective.per_item(loss, errors, lambda b, t: rescale(b, t, fail_at)),
        )
        return model

    reference = run("a", None)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        run("b", fail_at=6)  # dies in epoch 3 (2 batches per epoch)
    assert [p.name for p in sorted((tmp_path / "b").iterdir())][-1] == "epoch-0002.pt"
    resumed = run("b", None)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
