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


def precision_recall(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each item, ranked by decreasing score (ties keep input order).

    ``labels`` uses the devkit convention (+1 / −1 / 0); items labelled 0 are dropped.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-D of equal length")
    keep = labels != 0
    scores, positive = scores[keep], labels[keep] > 0
    n_pos = int(positive.sum())
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


def topk_errors(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k error rates (fraction of items whose target is not among the k highest logits).

    k is capped at the number of classes, so top-5 on a 4-class problem is 0 by definition.
    """
    if len(targets) == 0:
        raise ValueError("top-k error of an empty batch")
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hit = top == targets[:, None]
    return {k: float(1.0 - hit[:, :k].any(dim=1).float().mean()) for k in ks}
