"""Seeding and device selection, shared by every stage so runs are reproducible and GPU-ready."""

from __future__ import annotations

import logging
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy generator for explicit randomness."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def resolve_device(spec: str) -> torch.device:
    """Map the ``device`` parameter to a torch device; ``auto`` prefers CUDA when present."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"params.yaml: device '{spec}' requested but CUDA is not available; set device: auto or"
            " cpu."
        )
    device = torch.device(spec)
    log.info("Using device %s", device)
    return device
