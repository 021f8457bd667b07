"""Pascal AP (both definitions, as the official devkit computes them) and top-k error against
hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oquab_repro.lib.metrics import (
    RECALL_GRID,
    VOC07_THRESHOLDS,
    ap_from_curve,
    average_precision,
    matlab_colon,
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
    assert average_precision(SCORES, LABELS, "voc07") == pytest.approx(
        (4 + 3 * 2 / 3 + 4 * 0.6) / 11
    )


def test_voc10_area_under_envelope() -> None:
    # envelope: 1 on (0,1/3], 2/3 on (1/3,2/3], 3/5 on (2/3,1]
    assert average_precision(SCORES, LABELS, "voc10") == pytest.approx(1 / 3 + 2 / 9 + 1 / 5)


def test_definitions_differ_and_agree_on_perfect_ranking() -> None:
    assert average_precision(SCORES, LABELS, "voc07") != pytest.approx(
        average_precision(SCORES, LABELS, "voc10")
    )
    perfect = np.array([1, 1, -1, -1, -1])
    for method in ("voc07", "voc10"):
        assert average_precision(SCORES, perfect, method) == pytest.approx(1.0)


def test_difficult_images_are_ignored() -> None:
    scores = np.concatenate([[0.95, 0.85], SCORES])
    labels = np.concatenate([[0, 0], LABELS])  # difficult-only images ranked first change nothing
    for method in ("voc07", "voc10"):
        assert average_precision(scores, labels, method) == pytest.approx(
            average_precision(SCORES, LABELS, method)
        )


def test_missing_positive_and_unknown_method_are_errors() -> None:
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

    out = classification_labels(
        torch.tensor([1, 3, 3, 4]), torch.tensor([False, True, False, True]), 5
    )
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
        brute.append(
            [
                precision[recall >= r - 1e-12].max() if (recall >= r - 1e-12).any() else 0.0
                for r in RECALL_GRID
            ]
        )
    np.testing.assert_allclose(curve, np.mean(brute, axis=0))
    voc07 = np.mean([average_precision(scores[:, k], labels[:, k], "voc07") for k in range(3)])
    assert np.isclose(curve[::10].mean(), voc07)


def _devkit_11_point(points: list[float]) -> float:
    """VOCevalcls.m's accumulation of hand-worked interpolated precisions: ap=ap+p/11, in order."""
    ap = 0.0
    for p in points:
        ap = ap + p / 11
    return ap


def test_matlab_colon_is_built_from_both_ends() -> None:
    t = matlab_colon(0.0, 0.1, 1.0)
    assert len(t) == 11 and t[0] == 0.0 and t[-1] == 1.0
    assert t[3] == 0.30000000000000004 and t[3] > 3 / 10  # left half: 0 + 3*0.1
    assert t[5] == 0.5  # the middle of an even count is (start + last) / 2
    assert t[6] == 0.6 == 6 / 10  # right half: 1 - 4*0.1 (linspace: 0.6000000000000001)
    assert t[7] == 0.7 == 1 - 3 * 0.1 and np.linspace(0, 1, 11)[7] != t[7]
    np.testing.assert_array_equal(VOC07_THRESHOLDS, t)
    assert matlab_colon(0.0, 0.1, 0.95).tolist()[-1] == 0.9  # a step past stop is not taken
    assert matlab_colon(1.0, -0.5, -1.0).tolist() == [1.0, 0.5, 0.0, -0.5, -1.0]
    assert matlab_colon(0.0, 2.5, 7.5).tolist() == [0.0, 2.5, 5.0, 7.5]  # n = 3: odd, no middle
    assert matlab_colon(1.0, 0.1, 0.0).size == 0  # empty range, as in MATLAB
    np.testing.assert_array_equal(RECALL_GRID[::10], VOC07_THRESHOLDS)
    assert np.all(np.diff(RECALL_GRID) > 0) and len(RECALL_GRID) == 101


def test_voc07_recall_of_exactly_three_tenths_misses_the_fourth_threshold() -> None:
    # 10 positives: +,+,+ (recall .1 .2 .3, precision 1), −,− then 7 × + (recall .4 … 1,
    # precision 4/6 … 10/12). The 4th threshold 0.30000000000000004 > 3/10, so p there is the best
    # precision at recall ≥ 0.4, i.e. 10/12, not 1.
    labels = np.array([1, 1, 1, -1, -1, *[1] * 7])
    scores = -np.arange(len(labels), dtype=float)
    expected = _devkit_11_point([1, 1, 1, *[10 / 12] * 8])
    assert average_precision(scores, labels, "voc07") == expected  # bit for bit
    with_tolerance = _devkit_11_point([1, 1, 1, 1, *[10 / 12] * 7])  # a linspace/epsilon reading
    assert average_precision(scores, labels, "voc07") != pytest.approx(with_tolerance)


def test_voc07_recall_of_exactly_six_tenths_reaches_the_seventh_threshold() -> None:
    # 5 positives: +,+,+ (recall .2 .4 .6, precision 1), 4 × −, then +,+ (precision 4/8, 5/9).
    # MATLAB's 7th threshold is exactly 0.6 == 3/5, so p there is 1 (linspace's 0.6000000000000001
    # would miss it and give 5/9).
    labels = np.array([1, 1, 1, -1, -1, -1, -1, 1, 1])
    scores = np.linspace(1, 0, len(labels))
    assert average_precision(scores, labels, "voc07") == _devkit_11_point([1] * 7 + [5 / 9] * 4)


def test_ties_keep_the_input_order_as_matlabs_stable_sort_does() -> None:
    # [so,si]=sort(-out): equal confidences keep their input order.
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    # ranked +, −, +, −: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    p, r = precision_recall(scores, np.array([1, -1, 1, -1]))
    np.testing.assert_array_equal(p, [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_array_equal(r, [1 / 2, 1 / 2, 1, 1])
    # VOCap: envelope 1 on (0, 1/2], 2/3 on (1/2, 1]
    assert average_precision(scores, np.array([1, -1, 1, -1]), "voc10") == 0.5 * 1 + 0.5 * (2 / 3)
    swapped = np.array([1, 1, -1, -1])  # same scores, the tied pair in the other order
    assert average_precision(scores, swapped, "voc10") == 1.0
    eleven = _devkit_11_point([1] * 6 + [2 / 3] * 5)
    assert average_precision(scores, np.array([1, -1, 1, -1]), "voc07") == eleven


def test_voc10_sums_in_order_over_recall_changes() -> None:
    # duplicate recall points (a negative between positives) add no area; the sum runs left to right
    precision = np.array([1.0, 0.5, 2 / 3, 0.75, 0.6])
    recall = np.array([1 / 3, 1 / 3, 2 / 3, 1.0, 1.0])
    # envelope: 1 up to 1/3, then 0.75 (the best precision at any later recall) up to 1
    area = (0.0 + (1 / 3 - 0) * 1.0) + (2 / 3 - 1 / 3) * 0.75 + (1.0 - 2 / 3) * 0.75
    assert ap_from_curve(precision, recall, "voc10") == area


def test_nan_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([0.5, np.nan]), np.array([1, -1]), "voc07")


def test_many_ties_rank_in_input_order() -> None:
    # 60 images scored with only three distinct confidences: within each tie group the devkit keeps
    # the image-list order, so precision_recall must equal a ranking by (−score, input position).
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=60).astype(float)
    labels = rng.choice([-1, 1], size=60)
    labels[0] = 1
    order = sorted(range(60), key=lambda i: (-scores[i], i))
    tp = np.cumsum(labels[order] > 0)
    p, r = precision_recall(scores, labels)
    np.testing.assert_array_equal(p, tp / np.arange(1, 61))
    np.testing.assert_array_equal(r, tp / (labels > 0).sum())


def test_voc10_area_is_summed_left_to_right_as_the_devkit_does() -> None:
    # with 1000 recall steps, a pairwise sum (np.sum) differs from the devkit's in-order sum in the
    # last bit; the AP must be the in-order one
    rng = np.random.default_rng(1)
    n = 1000
    precision, recall = rng.random(n), np.arange(1, n + 1) / n
    envelope = np.maximum.accumulate(np.concatenate([precision, [0.0]])[::-1])[::-1][:-1]
    terms = np.diff(np.concatenate([[0.0], recall])) * envelope
    in_order = 0.0
    for term in terms:
        in_order = in_order + term
    assert in_order != np.sum(terms)  # the case distinguishes the two summations
    assert ap_from_curve(precision, recall, "voc10") == in_order
