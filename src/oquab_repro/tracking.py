"""MLflow tracking that can never fail a stage.

A stage's scientific outputs (DVC metrics, figures) must not depend on the tracking store
being up. :class:`Tracker` forwards to :class:`mlflow.MlflowClient`; on the first error it
warns once, naming the URI and how to fix it, and ignores every later call.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys, as ``params.yaml`` keys are written."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_items(tree: Mapping[str, Any]) -> dict[str, float]:
    """The numeric leaves of a metrics mapping (booleans count as 0/1), ready for MLflow."""
    return {
        k: float(v)
        for k, v in flatten(tree).items()
        if isinstance(v, int | float) and v == v  # drop NaN, which MLflow charts cannot show
    }


def resolve_tracking_uri(configured: str, project_root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` wins; a relative ``sqlite:///file`` is anchored at the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((project_root / uri[len(prefix) :]).resolve())
    return uri


def _probe_http(uri: str, timeout: float) -> None:
    """Fail fast on an unreachable tracking server instead of MLflow's minutes of retries."""
    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # noqa: S310
        pass


class Tracker:
    """One MLflow run per stage; silent after the first failure, with a single clear warning."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        self.uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.run_id: str | None = None
        self._client: Any = None
        self._disabled = False

    @property
    def active(self) -> bool:
        return self.run_id is not None and not self._disabled

    def _fail(self, exc: BaseException) -> None:
        if not self._disabled:
            log.warning(
                "MLflow tracking store %s is unavailable (%s: %s). The stage goes on and still "
                "writes its DVC metrics and figures, but this run is not logged to MLflow. Start the "
                "server or point MLFLOW_TRACKING_URI at a reachable store to track runs.",
                self.uri,
                type(exc).__name__,
                exc,
            )
        self._disabled = True

    def start(self, run_name: str, tags: Mapping[str, str]) -> None:
        if self._disabled:
            return
        try:
            if self.uri.startswith(("http://", "https://")):
                _probe_http(self.uri, timeout=float(os.environ.get("OQUAB_MLFLOW_PROBE_TIMEOUT", 3)))
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
                exp_id = self._client.create_experiment(self.experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
            run = self._client.create_run(exp_id, run_name=run_name, tags=dict(tags))
            self.run_id = run.info.run_id
            log.info("MLflow run %s (%s) in experiment '%s' at %s", run_name, self.run_id, self.experiment, self.uri)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail the stage
            self._fail(exc)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in flatten(params).items()]
        self._batch(params=items)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        if not self.active:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in numeric_items(metrics).items()]
        self._batch(metrics=items)

    def _batch(self, **kwargs: Any) -> None:
        try:
            for key in ("params", "metrics"):
                entries = kwargs.get(key) or []
                for start in range(0, len(entries), 100):  # MLflow's per-request caps
                    self._client.log_batch(self.run_id, **{key: entries[start : start + 100]})
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        if not self.active:
            return
        try:
            for path in paths:
                if path.is_dir():
                    self._client.log_artifacts(self.run_id, str(path), artifact_path)
                elif path.is_file():
                    self._client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def end(self, status: str = "FINISHED") -> None:
        if not self.active:
            return
        try:
            self._client.set_terminated(self.run_id, status=status)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            self.run_id = None
