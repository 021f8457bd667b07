"""Evaluation metrics shared by every chapter: Pascal VOC average precision and top-k error.

Pascal changed its AP definition in 2010, and the thesis compares with numbers published under
both, so both are implemented, each exactly as the official MATLAB devkit computes it
(``VOCevalcls.m``), so that our numbers are comparable bit for bit with any devkit result:

- ``voc07`` (VOC2007 devkit): 11-point interpolated AP. For each threshold t of MATLAB's
  ``0:0.1:1`` the best precision at recall ≥ t (0 if recall t is never reached) is divided by 11
  and added to a running sum. MATLAB's colon is *not* ``linspace``: it builds the range from both
  ends (:func:`matlab_colon`), so its 4th threshold is 0.30000000000000004 and a recall of exactly
  3/10 does not reach it, while its 7th is exactly 0.6 (``linspace`` gives 0.6000000000000001).
- ``voc10`` (VOC2010+ devkit, ``VOCap.m``): the area under the monotone (non-increasing) envelope
  of the precision/recall curve, summed over the points where recall changes.

Ranking follows the devkit's ``[so,si]=sort(-out)``: MATLAB's ``sort`` is stable, so images with
equal confidence keep their input (image-list) order. Classification ground truth follows the
devkit too: +1 present, −1 absent, 0 "difficult only" (ranked, but neither a true nor a false
positive; dropping those items gives the same AP, as they only repeat the previous curve point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

APMethod = Literal["voc07", "voc10"]
AP_METHODS: tuple[APMethod, ...] = ("voc07", "voc10")


def matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """The values of MATLAB's ``start:step:stop`` for a non-integer step, bit for bit.

    MATLAB's documented algorithm (MathWorks' ``colonop`` description): the count n comes from
    rounding (stop − start)/step, dropping the last step if it overshoots by more than 2·eps of the
    endpoints; the left half is ``start + k·step``, the right half ``last − k·step`` counted back
    from the end, and for an even n the middle element is ``(start + last)/2``. Filling from both
    ends is why ``0:0.1:1`` differs from ``numpy.linspace(0, 1, 11)`` in the last bits.
    """
    if step == 0 or (stop - start) * step < 0:
        return np.empty(0)
    ratio = (stop - start) / step
    n = int(math.floor(abs(ratio) + 0.5))  # MATLAB's round: halves away from zero, not to even
    tol = 2.0 * np.finfo(float).eps * max(abs(start), abs(stop))
    sign = math.copysign(1.0, step)
    if sign * (start + n * step - stop) > tol:
        n -= 1
    last = start + n * step
    if sign * (last - stop) > -tol:
        last = stop
    out = np.zeros(n + 1)
    k = np.arange(n // 2 + 1)
    out[k] = start + k * step
    out[n - k] = last - k * step
    if n % 2 == 0:
        out[n // 2] = (start + last) / 2
    return out


VOC07_THRESHOLDS = matlab_colon(0.0, 0.1, 1.0)  # VOCevalcls.m (VOC2007): for t=0:0.1:1


def precision_recall(
    scores: np.ndarray, labels: np.ndarray, n_positives: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each item, ranked as the devkit ranks them.

    The devkit sorts ``-confidence`` with MATLAB's stable ``sort``: decreasing score, ties in input
    order. ``labels`` uses the devkit convention (+1 / −1 / 0); items labelled 0 are dropped (see
    the module docstring). Recall is over ``n_positives`` when given (detection-style metrics,
    where a positive can be missed by every prediction), else over the items labelled +1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(
            f"scores {scores.shape} and labels {labels.shape} must be 1-D of equal length"
        )
    if np.isnan(scores).any():
        raise ValueError(
            "a score is NaN: AP ranks every item by its score; check the model's outputs"
        )
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] > 0
    n_pos = int(positive.sum()) if n_positives is None else n_positives
    if n_pos < positive.sum():
        raise ValueError(f"{int(positive.sum())} true positives but only {n_pos} positives")
    if n_pos == 0:
        raise ValueError("no positive example: average precision is undefined for this class")
    order = np.argsort(-scores, kind="stable")  # MATLAB: [so,si]=sort(-out), a stable sort
    tp = np.cumsum(positive[order], dtype=np.float64)
    fp = np.cumsum(~positive[order], dtype=np.float64)
    return tp / (fp + tp), tp / n_pos


def _in_order_sum(terms: np.ndarray) -> float:
    """Left-to-right float64 sum, as the devkit accumulates; ``np.sum`` (pairwise) and Python
    3.12+'s ``sum`` (compensated) can differ from it in the last bit."""
    return float(np.cumsum(terms)[-1]) if len(terms) else 0.0


def ap_from_curve(precision: np.ndarray, recall: np.ndarray, method: APMethod) -> float:
    """AP of a precision/recall curve under one Pascal definition, as the devkit computes it."""
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if method == "voc07":
        ap = 0.0
        for t in VOC07_THRESHOLDS:  # ap=ap+p/11, with p=max(prec(rec>=t)) or 0
            reached = precision[recall >= t]
            ap = ap + (float(reached.max()) if reached.size else 0.0) / 11
        return ap
    if method == "voc10":  # VOCap.m
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # mpre(i)=max(mpre(i),mpre(i+1)) backwards
        i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
        return _in_order_sum((mrec[i] - mrec[i - 1]) * mpre[i])
    raise ValueError(f"unknown AP method '{method}': use one of {AP_METHODS}")


def average_precision(scores: np.ndarray, labels: np.ndarray, method: APMethod) -> float:
    """AP of one class from image scores and devkit labels (+1 / −1 / 0 ignored)."""
    precision, recall = precision_recall(scores, labels)
    return ap_from_curve(precision, recall, method)


def _recall_grid() -> np.ndarray:
    """0:0.01:1 with every tenth point replaced by the devkit's 11-point threshold (they differ in
    the last bit, e.g. 0.3 vs 0.30000000000000004), so the PR plot's samples at 0, 0.1, … are
    exactly the points VOC2007 AP averages."""
    grid = matlab_colon(0.0, 0.01, 1.0)
    grid[::10] = VOC07_THRESHOLDS
    return grid


RECALL_GRID = _recall_grid()


def mean_pr_curve(
    scores: np.ndarray, labels: np.ndarray, n_positives: Sequence[int] | None = None
) -> np.ndarray:
    """Mean over classes (columns) of the interpolated precision at each recall of
    :data:`RECALL_GRID`.

    Interpolated precision at r is the best precision reached at recall ≥ r (0 if never reached),
    the quantity both AP definitions integrate, so the curve's mean over the 11 points 0, 0.1, …
    is the VOC2007 mAP: one curve per method for a PR plot that matches the table.
    """
    curves = []
    for k in range(scores.shape[1]):
        precision, recall = precision_recall(
            scores[:, k], labels[:, k], None if n_positives is None else int(n_positives[k])
        )
        envelope = np.maximum.accumulate(precision[::-1])[
            ::-1
        ]  # best precision at this recall or beyond
        reach = np.searchsorted(recall, RECALL_GRID, side="left")  # first rank whose recall is ≥ r
        curves.append(
            np.where(reach < len(recall), envelope[np.minimum(reach, len(recall) - 1)], 0.0)
        )
    return np.mean(curves, axis=0)


def per_class_ap(
    scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], method: APMethod
) -> dict[str, float]:
    """AP of every class: ``scores`` and ``labels`` are (images × classes)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape or scores.shape[1] != len(classes):
        raise ValueError(
            f"scores {scores.shape}, labels {labels.shape} and {len(classes)} classes disagree"
        )
    return {c: average_precision(scores[:, i], labels[:, i], method) for i, c in enumerate(classes)}


def mean_ap(per_class: dict[str, float]) -> float:
    """Mean of the per-class APs (mAP)."""
    if not per_class:
        raise ValueError("mean AP of no class")
    return float(np.mean(list(per_class.values())))


def classification_labels(
    labels: torch.Tensor, difficult: torch.Tensor, num_classes: int
) -> np.ndarray:
    """Devkit image labels from one image's objects: +1 if a non-difficult object of the class is
    present, 0 if only difficult ones are, −1 otherwise. ``labels`` are 1..K (0 is background)."""
    out = -np.ones(num_classes, dtype=np.int8)
    for label, hard in zip(labels.tolist(), difficult.tolist(), strict=True):
        if not 1 <= label <= num_classes:
            raise ValueError(f"object label {label} outside 1..{num_classes}")
        if not hard:
            out[label - 1] = 1
        elif out[label - 1] < 0:
            out[label - 1] = 0
    return out


def inside_boxes(points: np.ndarray, boxes: np.ndarray, tolerance: float) -> np.ndarray:
    """Whether each point (N × 2, x y) lies in at least one box (M × 4, XYXY)
    grown by ``tolerance`` px."""
    points, boxes = (
        np.asarray(points, dtype=np.float64).reshape(-1, 2),
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
    )
    x, y = points[:, :1], points[:, 1:]
    hit = (
        (x >= boxes[:, 0] - tolerance)
        & (x <= boxes[:, 2] + tolerance)
        & (y >= boxes[:, 1] - tolerance)
        & (y <= boxes[:, 3] + tolerance)
    )
    return hit.any(axis=1)


def location_outcomes(
    points: np.ndarray, labels: np.ndarray, boxes: Sequence[Sequence[np.ndarray]], tolerance: float
) -> np.ndarray:
    """Per (image, class) outcome of one predicted location (§4.6.1), in devkit labels for
    :func:`precision_recall`:

    +1 the class is present and the point falls in one of its boxes (± ``tolerance`` px); −1 the
    class is absent, or present and the point misses (a false positive; the missed object stays in
    the recall's denominator, the false negative); 0 ignored (difficult-only, as in classification).
    ``points`` is images × classes × 2, ``labels`` images × classes (+1/−1/0), ``boxes[i][k]`` the
    boxes of class k in image i.
    """
    points, labels = np.asarray(points), np.asarray(labels)
    out = np.where(labels == 0, 0, -1).astype(np.int8)
    for i, k in zip(*np.nonzero(labels > 0), strict=True):
        if inside_boxes(points[i, k], boxes[i][k], tolerance)[0]:
            out[i, k] = 1
    return out


def location_ap(
    confidences: np.ndarray,
    points: np.ndarray,
    labels: np.ndarray,
    boxes: Sequence[Sequence[np.ndarray]],
    tolerance: float,
    method: APMethod,
) -> np.ndarray:
    """Location-prediction AP per class (§4.6.1): one prediction per image and class, ranked by
    confidence; the positives are the images where the class is present (label +1)."""
    outcomes = location_outcomes(points, labels, boxes, tolerance)
    aps = []
    for k in range(labels.shape[1]):
        precision, recall = precision_recall(
            confidences[:, k], outcomes[:, k], n_positives=int((labels[:, k] > 0).sum())
        )
        aps.append(ap_from_curve(precision, recall, method))
    return np.array(aps)


def topk_errors(
    logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Top-k error rates (fraction of items whose target is not among the k highest logits).

    k is capped at the number of classes, so top-5 on a 4-class problem is 0 by definition.
    """
    if len(targets) == 0:
        raise ValueError("top-k error of an empty batch")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == targets[:, None]
    return {k: float(1.0 - hit[:, :k].any(dim=1).float().mean()) for k in ks}
