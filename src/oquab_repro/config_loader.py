"""Kedro config loader that serves ``parameters`` from the repository's ``params.yaml``.

DVC tracks ``params.yaml`` key by key, so Kedro must read exactly that file rather than a
copy under ``conf/``. Runtime overrides (``kedro run --params``) are merged in before
validation so they are checked like any other value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import OmegaConf

from oquab_repro.params import read_params_file, validate_params

PARAMS_FILE = "params.yaml"


class ParamsYamlConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose ``parameters`` are the validated contents of ``params.yaml``."""

    @property
    def params_path(self) -> Path:
        return Path(self.conf_source).resolve().parent / PARAMS_FILE

    def __getitem__(self, key: str) -> dict[str, Any]:
        if key != "parameters":
            return super().__getitem__(key)
        raw = read_params_file(self.params_path)
        if self.runtime_params:
            merged = OmegaConf.merge(OmegaConf.create(raw), OmegaConf.create(self.runtime_params))
            raw = OmegaConf.to_container(merged, resolve=True)
        return validate_params(raw, self.params_path).model_dump()
