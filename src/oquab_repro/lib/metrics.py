"""Evaluation metrics shared by every chapter: Pascal VOC average precision and top-k error.

Pascal changed its AP definition in 2010, and the thesis compares with numbers published under
both, so both are implemented:

- ``voc07``: 11-point interpolated AP, the mean over recall thresholds t ∈ {0, 0.1, …, 1} of the
  best precision reached at recall ≥ t (0 when recall t is never reached);
- ``voc10``: the area under the monotone (non-increasing) envelope of the precision/recall curve.

Classification ground truth follows the devkit: +1 present, −1 absent, 0 "difficult only"
(ignored: neither a positive nor a negative).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

APMethod = Literal["voc07", "voc10"]
AP_METHODS: tuple[APMethod, ...] = ("voc07", "voc10")


def precision_recall(scores: np.ndarray, labels: np.ndarray, n_positives: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each item, ranked by decreasing score (ties keep input order).

    ``labels`` uses the devkit convention (+1 / −1 / 0); items labelled 0 are dropped. Recall is
    over ``n_positives`` when given (detection-style metrics, where a positive can be missed by
    every prediction), else over the items labelled +1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-D of equal length")
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] > 0
    n_pos = int(positive.sum()) if n_positives is None else n_positives
    if n_pos < positive.sum():
        raise ValueError(f"{int(positive.sum())} true positives but only {n_pos} positives")
    if n_pos == 0:
        raise ValueError("no positive example: average precision is undefined for this class")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(positive[order])
    fp = np.cumsum(~positive[order])
    return tp / np.maximum(tp + fp, 1), tp / n_pos


def ap_from_curve(precision: np.ndarray, recall: np.ndarray, method: APMethod) -> float:
    """Average precision of a precision/recall curve under one Pascal definition."""
    if method == "voc07":
        points = []
        for t in np.linspace(0.0, 1.0, 11):
            reached = recall >= t - 1e-12
            points.append(precision[reached].max() if reached.any() else 0.0)
        return float(np.mean(points))
    if method == "voc10":
        rec = np.concatenate([[0.0], recall, [1.0]])
        prec = np.concatenate([[0.0], precision, [0.0]])
        prec = np.maximum.accumulate(prec[::-1])[::-1]  # monotone envelope
        step = np.flatnonzero(rec[1:] != rec[:-1])
        return float(np.sum((rec[step + 1] - rec[step]) * prec[step + 1]))
    raise ValueError(f"unknown AP method '{method}': use one of {AP_METHODS}")


def average_precision(scores: np.ndarray, labels: np.ndarray, method: APMethod) -> float:
    """AP of one class from image scores and devkit labels (+1 / −1 / 0 ignored)."""
    precision, recall = precision_recall(scores, labels)
    return ap_from_curve(precision, recall, method)


RECALL_GRID = np.linspace(0, 1, 101)


def mean_pr_curve(scores: np.ndarray, labels: np.ndarray, n_positives: Sequence[int] | None = None) -> np.ndarray:
    """Mean over classes (columns) of the interpolated precision at each recall of :data:`RECALL_GRID`.

    Interpolated precision at r is the best precision reached at recall ≥ r (0 if never reached),
    the quantity both AP definitions integrate, so the curve's mean over the 11 points 0, 0.1, …
    is the VOC2007 mAP: one curve per method for a PR plot that matches the table.
    """
    curves = []
    for k in range(scores.shape[1]):
        precision, recall = precision_recall(scores[:, k], labels[:, k], None if n_positives is None else int(n_positives[k]))
        envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
        reach = np.searchsorted(recall, RECALL_GRID - 1e-12)  # first rank whose recall is ≥ r
        curves.append(np.where(reach < len(recall), envelope[np.minimum(reach, len(recall) - 1)], 0.0))
    return np.mean(curves, axis=0)


def per_class_ap(
    scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], method: APMethod
) -> dict[str, float]:
    """AP of every class: ``scores`` and ``labels`` are (images × classes)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape or scores.shape[1] != len(classes):
        raise ValueError(f"scores {scores.shape}, labels {labels.shape} and {len(classes)} classes disagree")
    return {c: average_precision(scores[:, i], labels[:, i], method) for i, c in enumerate(classes)}


def mean_ap(per_class: dict[str, float]) -> float:
    """Mean of the per-class APs (mAP)."""
    if not per_class:
        raise ValueError("mean AP of no class")
    return float(np.mean(list(per_class.values())))


def classification_labels(labels: torch.Tensor, difficult: torch.Tensor, num_classes: int) -> np.ndarray:
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
    """Whether each point (N × 2, x y) lies in at least one box (M × 4, XYXY) grown by ``tolerance`` px."""
    points, boxes = np.asarray(points, dtype=np.float64).reshape(-1, 2), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x, y = points[:, :1], points[:, 1:]
    hit = (x >= boxes[:, 0] - tolerance) & (x <= boxes[:, 2] + tolerance) & (y >= boxes[:, 1] - tolerance) & (y <= boxes[:, 3] + tolerance)
    return hit.any(axis=1)


def location_outcomes(points: np.ndarray, labels: np.ndarray, boxes: Sequence[Sequence[np.ndarray]], tolerance: float) -> np.ndarray:
    """Per (image, class) outcome of one predicted location (§4.6.1), in devkit labels for :func:`precision_recall`:

    +1 the class is present and the point falls in one of its boxes (± ``tolerance`` px); −1 the class
    is absent, or present and the point misses (a false positive; the missed object stays in the
    recall's denominator, the false negative); 0 ignored (difficult-only, as in classification).
    ``points`` is images × classes × 2, ``labels`` images × classes (+1/−1/0), ``boxes[i][k]`` the
    boxes of class k in image i.
    """
    points, labels = np.asarray(points), np.asarray(labels)
    out = np.where(labels == 0, 0, -1).astype(np.int8)
    for i, k in zip(*np.nonzero(labels > 0), strict=True):
        if inside_boxes(points[i, k], boxes[i][k], tolerance)[0]:
            out[i, k] = 1
    return out


def location_ap(confidences: np.ndarray, points: np.ndarray, labels: np.ndarray, boxes: Sequence[Sequence[np.ndarray]], tolerance: float, method: APMethod) -> np.ndarray:
    """Location-prediction AP per class (§4.6.1): one prediction per image and class, ranked by confidence;
    the positives are the images where the class is present (label +1)."""
    outcomes = location_outcomes(points, labels, boxes, tolerance)
    aps = []
    for k in range(labels.shape[1]):
        precision, recall = precision_recall(confidences[:, k], outcomes[:, k], n_positives=int((labels[:, k] > 0).sum()))
        aps.append(ap_from_curve(precision, recall, method))
    return np.array(aps)


def topk_errors(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k error rates (fraction of items whose target is not among the k highest logits).

    k is capped at the number of classes, so top-5 on a 4-class problem is 0 by definition.
    """
    if len(targets) == 0:
        raise ValueError("top-k error of an empty batch")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == targets[:, None]
    return {k: float(1.0 - hit[:, :k].any(dim=1).float().mean()) for k in ks}
