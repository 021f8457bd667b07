"""A resumable on-disk cache of finished work units, and the Kedro dataset that hands it to a node.

Long stages made of independent units (the causal stage: one Tübingen pair's 2E CGANs and their
tests) save each unit's result as soon as it is finished, so an interrupted run resumes unit by
unit and a run can be done in pieces. Results live under ``<folder>/<fingerprint>/<unit>.pt``: the
fingerprint hashes every setting and the source of every module that computes a result, so a
changed parameter or edited code never reuses a stale result, and settings that differ (mini and
full) keep their own results side by side. Each file also records a hash of its unit's input data,
checked on load. Writes are atomic (a killed process leaves no half-written result). The folder is
local resume state, git- and dvc-ignored and no DVC out (a ``persist`` out would keep the stage out
of DVC's run-cache): DVC never touches it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kedro.io import AbstractDataset, DatasetError

from oquab_repro.lib.checkpoint import atomic_torch_save


def fingerprint(settings: dict[str, Any], modules: list[Any]) -> str:
    """Hash of ``settings`` (JSON) and of the source files of ``modules``."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def data_hash(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


class UnitCache:
    """Results of finished units of one fingerprint, one file per unit."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str, unit: str) -> Path:
        return self.folder / key / f"{unit}.pt"

    def load(self, key: str, unit: str, inputs: str) -> dict[str, Any] | None:
        """The saved result of ``unit``, or None when absent or computed from other input data."""
        path = self._path(key, unit)
        if not path.is_file():
            return None
        result = torch.load(path, weights_only=False)
        return result if result.get("inputs") == inputs else None

    def save(self, key: str, unit: str, inputs: str, result: dict[str, Any]) -> None:
        atomic_torch_save({**result, "inputs": inputs}, self._path(key, unit))

    def count(self, key: str) -> int:
        return len(list((self.folder / key).glob("*.pt")))


class UnitCacheFolder(AbstractDataset[None, UnitCache]):
    """``load()`` returns the :class:`UnitCache` on ``folder``; read-only,
    like a checkpoint folder."""

    def __init__(self, folder: str) -> None:
        self._path = Path(folder)

    def load(self) -> UnitCache:
        return UnitCache(self._path)

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{self._path}: unit results are written by the UnitCache, not saved as outputs"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"folder": str(self._path)}
