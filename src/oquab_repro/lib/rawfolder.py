"""Kedro dataset for a raw data folder that is replaced atomically, never left half-written.

A node builds (or downloads and extracts) a dataset into a staging folder and returns its path;
saving moves it into place with ``os.replace`` — a rename, so readers see either the previous
complete folder or the new complete one. Loading returns the folder's path, which the loaders of
:mod:`oquab_repro.lib.datasets` take as their root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

STAGING_PREFIX = "oquab-staging-"


def replace_folder(staged: Path, target: Path) -> None:
    """Move ``staged`` onto ``target`` atomically (copying first when
    they are on different disks)."""
    staged, target = Path(staged), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.stat(staged).st_dev != os.stat(target.parent).st_dev:
        sibling = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
        shutil.copytree(staged, sibling, dirs_exist_ok=True)
        shutil.rmtree(staged)
        staged = sibling
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)


class RawFolder(AbstractDataset[Path, Path]):
    """A folder under ``data/01_raw``: ``save(staged_path)`` moves it in,
    ``load()`` returns the path."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self.metadata = metadata  # e.g. kedro-viz's layer
        self._filepath = Path(filepath)

    def load(self) -> Path:
        if not self._filepath.is_dir():
            raise DatasetError(
                f"{self._filepath}: raw data folder missing; run `dvc repro data` first."
            )
        return self._filepath

    def save(self, data: Path) -> None:
        staged = Path(data)
        if staged.resolve() == self._filepath.resolve():
            return
        replace_folder(staged, self._filepath)
        parent = staged.parent
        if parent.name.startswith(STAGING_PREFIX) and not any(parent.iterdir()):
            parent.rmdir()  # the node's staging area, emptied by the last folder moved out

    def _exists(self) -> bool:
        return self._filepath.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
