"""Kedro dataset that hands a training node the :class:`Checkpointer` of its checkpoint folder.

The folder is local resume state, not a DVC out (a ``persist`` out would keep the stage out of
DVC's run-cache; see ``oquab_repro.dvc_yaml``): it survives between runs so an interrupted stage
resumes, every checkpoint carries its run's ``run_id`` so other inputs never resume from it, and
the catalog, not the node, decides where it lives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from oquab_repro.lib.checkpoint import Checkpointer


class CheckpointFolder(AbstractDataset[None, Checkpointer]):
    """``load()`` returns a :class:`Checkpointer` on ``folder`` (created on first save); read-only.

    The argument is ``folder``, not ``path``/``filepath``: the folder is the stage's own resume
    state, neither an input it depends on nor an output (``dvc.yaml`` is generated from this).
    """

    def __init__(self, folder: str, keep: int = 2, metadata: dict[str, Any] | None = None):
        self.metadata = metadata  # e.g. kedro-viz's layer
        self._path = Path(folder)
        self._keep = keep

    def load(self) -> Checkpointer:
        return Checkpointer(self._path, keep=self._keep)

    def save(self, data: None) -> None:
        raise DatasetError(
            f"{self._path}: checkpoint folders are written by the Checkpointer, not saved as"
            " outputs"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"folder": str(self._path), "keep": self._keep}
