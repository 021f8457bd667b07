"""Pascal AP (both definitions) and top-k error against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oquab_repro.lib.metrics import (
    RECALL_GRID,
    average_precision,
    mean_ap,
    mean_pr_curve,
    per_class_ap,
    precision_recall,
    topk_errors,
)

# ranked: +, −, +, −, +  → precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
LABELS = np.array([1, -1, 1, -1, 1])


def test_precision_recall_curve() -> None:
    p, r = precision_recall(SCORES, LABELS)
    np.testing.assert_allclose(p, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(r, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])


def test_voc07_eleven_point() -> None:
    # t ∈ {0,.1,.2,.3} → 1; {.4,.5,.6} → 2/3; {.7,.8,.9,1} → 3/5
    assert average_precision(SCORES, LABELS, "voc07") == pytest.approx((4 + 3 * 2 / 3 + 4 * 0.6) / 11)


def test_voc10_area_under_envelope() -> None:
    # envelope: 1 on (0,1/3], 2/3 on (1/3,2/3], 3/5 on (2/3,1]
    assert average_precision(SCORES, LABELS, "voc10") == pytest.approx(1 / 3 + 2 / 9 + 1 / 5)


def test_definitions_differ_and_agree_on_perfect_ranking() -> None:
    assert average_precision(SCORES, LABELS, "voc07") != pytest.approx(average_precision(SCORES, LABELS, "voc10"))
    perfect = np.array([1, 1, -1, -1, -1])
    for method in ("voc07", "voc10"):
        assert average_precision(SCORES, perfect, method) == pytest.approx(1.0)


def test_difficult_images_are_ignored() -> None:
    scores = np.concatenate([[0.95, 0.85], SCORES])
    labels = np.concatenate([[0, 0], LABELS])  # difficult-only images ranked first change nothing
    for method in ("voc07", "voc10"):
        assert average_precision(scores, labels, method) == pytest.approx(average_precision(SCORES, LABELS, method))


def test_ties_keep_input_order_and_missing_positive_is_an_error() -> None:
    p, _ = precision_recall(np.array([0.5, 0.5]), np.array([-1, 1]))
    np.testing.assert_allclose(p, [0, 0.5])
    with pytest.raises(ValueError, match="no positive"):
        average_precision(SCORES, -np.ones(5), "voc07")
    with pytest.raises(ValueError, match="unknown AP method"):
        average_precision(SCORES, LABELS, "voc12")  # type: ignore[arg-type]


def test_per_class_and_mean() -> None:
    scores = np.stack([SCORES, SCORES[::-1]], axis=1)
    labels = np.stack([LABELS, np.array([1, 1, -1, -1, -1])], axis=1)
    aps = per_class_ap(scores, labels, ["a", "b"], "voc10")
    assert aps["a"] == pytest.approx(1 / 3 + 2 / 9 + 1 / 5)
    # b: ranked −, −, −, +, + → precision 1/4, 2/5 at recall 1/2, 1
    assert aps["b"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert mean_ap(aps) == pytest.approx((aps["a"] + aps["b"]) / 2)


def test_topk_errors() -> None:
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [0, 5, 4, 3, 2, 1]])
    targets = torch.tensor([0, 0, 5])
    err = topk_errors(logits, targets, ks=(1, 5))
    assert err[1] == pytest.approx(2 / 3)  # only the first is right at top-1
    assert err[5] == pytest.approx(1 / 3)  # the second's target is ranked last


def test_classification_labels_follow_the_devkit() -> None:
    from oquab_repro.lib.metrics import classification_labels

    out = classification_labels(torch.tensor([1, 3, 3, 4]), torch.tensor([False, True, False, True]), 5)
    assert out.tolist() == [1, -1, 1, 0, -1]  # class 3: one difficult + one normal → present
    with pytest.raises(ValueError, match="outside"):
        classification_labels(torch.tensor([6]), torch.tensor([False]), 5)


def test_mean_pr_curve_is_the_interpolated_precision_and_integrates_to_voc07_map() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice([-1, 1], size=(40, 3))
    labels[0] = 1
    scores = rng.normal(size=(40, 3)) + labels
    curve = mean_pr_curve(scores, labels)
    brute = []
    for k in range(3):
        precision, recall = precision_recall(scores[:, k], labels[:, k])
        brute.append([precision[recall >= r - 1e-12].max() if (recall >= r - 1e-12).any() else 0.0 for r in RECALL_GRID])
    np.testing.assert_allclose(curve, np.mean(brute, axis=0))
    voc07 = np.mean([average_precision(scores[:, k], labels[:, k], "voc07") for k in range(3)])
    assert np.isclose(curve[::10].mean(), voc07)
