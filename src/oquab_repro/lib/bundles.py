"""Trained networks on disk as safetensors: the same tensors always give the same bytes.

A bundle (see :func:`oquab_repro.lib.models.alexnet.to_bundle`) is a network's weights with what
rebuilds it (shapes, classes, input normalisation). Pickles of equal tensors can differ byte for
byte (so a stage resumed from its last checkpoint looked changed to DVC, and reran everything
downstream); safetensors writes the tensors in a fixed order with a JSON header, and the rest of
the bundle goes in that header as sorted JSON. Files are written atomically.

The Kedro datasets :class:`BundleFile` and :class:`GeneratorsFile` wrap these functions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

_BUNDLE_KEY = "bundle"  # the header entry holding everything but the tensors


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata
        )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bundle(bundle: dict[str, Any], path: Path) -> None:
    """Save a bundle: ``state_dict`` as tensors, every other entry as JSON in the header."""
    rest = {k: v for k, v in bundle.items() if k != "state_dict"}
    _atomic_save(bundle["state_dict"], {_BUNDLE_KEY: json.dumps(rest, sort_keys=True)}, Path(path))


def read_bundle(path: Path) -> dict[str, Any]:
    """Load a bundle written by :func:`write_bundle`; a file that is not one names itself and
    the fix."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = (handle.metadata() or {}).get(_BUNDLE_KEY)
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path}: not a readable network bundle ({err}); "
            "rebuild it with the stage that writes it (`dvc repro`)."
        ) from err
    if header is None:
        raise ValueError(
            f"{path}: a safetensors file without a network bundle header; "
            "rebuild it with `dvc repro`."
        )
    return {**json.loads(header), "state_dict": tensors}


def write_generators(snapshots: dict[str, dict[int, dict[str, torch.Tensor]]], path: Path) -> None:
    """Save generator snapshots ``{cell: {epoch: state_dict}}`` as tensors
    ``<cell>/<epoch>/<name>``."""
    tensors = {
        f"{cell}/{epoch}/{k}": v
        for cell, by_epoch in snapshots.items()
        for epoch, state in by_epoch.items()
        for k, v in state.items()
    }
    _atomic_save(tensors, {}, Path(path))


def read_generators(path: Path) -> dict[str, dict[int, dict[str, torch.Tensor]]]:
    snapshots: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key, tensor in load_file(str(path)).items():
        cell, epoch, name = key.split("/", 2)
        snapshots.setdefault(cell, {}).setdefault(int(epoch), {})[name] = tensor
    return snapshots


class BundleFile(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A network bundle in one ``.safetensors`` file (:func:`write_bundle`, :func:`read_bundle`)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self.metadata = metadata  # e.g. kedro-viz's layer
        self._filepath = Path(filepath)

    def load(self) -> dict[str, Any]:
        return read_bundle(self._filepath)

    def save(self, data: dict[str, Any]) -> None:
        write_bundle(data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class GeneratorsFile(BundleFile):
    """A GAN grid's generator snapshots ``{cell: {epoch: state_dict}}`` in one safetensors file."""

    def load(self) -> dict[str, Any]:
        return read_generators(self._filepath)

    def save(self, data: dict[str, Any]) -> None:
        write_generators(data, self._filepath)
