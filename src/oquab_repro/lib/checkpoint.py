"""Atomic checkpoints so interrupted training resumes, and partial files never look finished.

Every write goes to a temporary file in the destination folder and is renamed into place
(``os.replace`` is atomic on POSIX), so a crash leaves either the previous complete file
or the new complete file, never a truncated one.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_EPOCH_FILE = re.compile(r"epoch-(\d+)\.pt$")


def code_digest(*defined: Any) -> str:
    """A digest of the source files defining ``defined`` (functions, classes): part of a run's
    checkpoint key, so a checkpoint written by other code, a finished one included, is never
    resumed as if the current code had produced it (checkpoint folders outlive code changes)."""
    digest = hashlib.sha256()
    for path in sorted({inspect.getsourcefile(obj) or "" for obj in defined} - {""}):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Checkpointer:
    """Per-epoch checkpoints in one folder; :meth:`latest` returns what training resumes from.

    The folder must be no DVC out (DVC deletes outs before re-running a stage, and a ``persist``
    out keeps the stage out of the run-cache): ``dvc.yaml`` leaves it out, git and DVC ignore it.
    """

    def __init__(self, folder: Path, keep: int = 2):
        self.folder = Path(folder)
        self.keep = keep

    def _epochs(self) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.folder.iterdir() if (m := _EPOCH_FILE.search(p.name))
        ]
        return sorted(found)

    def save(self, epoch: int, state: dict[str, Any]) -> Path:
        path = self.folder / f"epoch-{epoch:04d}.pt"
        atomic_torch_save({"epoch": epoch, **state}, path)
        for _, old in self._epochs()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def clear(self) -> None:
        """Delete every epoch checkpoint (e.g. written by a run with other settings)."""
        for _, path in self._epochs():
            path.unlink(missing_ok=True)

    def latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest readable checkpoint, or None; an unreadable newest
        one is reported and skipped."""
        for epoch, path in reversed(self._epochs()):
            try:
                state = torch.load(path, map_location=map_location, weights_only=False)
            except Exception as exc:  # noqa: BLE001 - fall back to the previous checkpoint
                log.warning("Checkpoint %s is unreadable (%s); trying an older one.", path, exc)
                continue
            log.info("Resuming from %s (epoch %d)", path, epoch)
            return state
        return None
