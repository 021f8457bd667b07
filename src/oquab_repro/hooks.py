"""Kedro hooks: every stage run becomes one MLflow run with params, metrics, artefacts and tags.

Conventions (so nodes stay pure and need no MLflow code):
- a dataset whose name ends in ``metrics`` holds a mapping; its numeric leaves become metrics;
- one ending in ``timings`` holds wall times (kept out of the DVC metrics so ``dvc metrics diff``
  shows results only): logged as metrics too, prefixed as histories are when a run has several;
- a dataset whose name ends in ``history`` is a table of per-step values (column ``step``);
- every file-backed dataset saved under ``data/08_reporting`` is logged as an artefact.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset

from oquab_repro.lib import distributed
from oquab_repro.lib.provenance import git_commit
from oquab_repro.tracking import Interrupts, Tracker, resolve_tracking_uri

log = logging.getLogger(__name__)

REPORTING_DIR = Path("data") / "08_reporting"


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def history_prefixes(names: list[str]) -> dict[str, str]:
    """Metric-name prefixes that keep several training histories of one run apart in MLflow.

    A run with one history logs its columns as they are (``val_loss``), so runs of different stages
    compare; with several (e.g. the three weak variants) each gets the part of its dataset name the
    others do not share: ``weak_voc_weak_sup_history`` → ``weak_sup.val_loss``.
    """
    if len(names) < 2:
        return {}
    common = os.path.commonprefix(names)
    common = common[: common.rfind("_") + 1]
    return {n: n[len(common) :].removesuffix("history").rstrip("_") + "." for n in names}


class MlflowTrackingHook:
    """Opens an MLflow run before a pipeline runs and closes it afterwards, whatever happens:
    FINISHED, FAILED on an exception, KILLED on SIGINT/SIGTERM (see :class:`Interrupts`)."""

    def __init__(self) -> None:
        self._tracker: Tracker | None = None
        self._root = Path.cwd()
        self._params: dict[str, Any] = {}
        self._config: dict[str, Any] = {}
        self._saved: list[str] = []
        self._history_prefix: dict[str, str] = {}
        self._timings_prefix: dict[str, str] = {}
        self._interrupts = Interrupts()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._root = Path(context.project_path)
        self._params = context.params
        self._config = context.config_loader["mlflow"]

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not distributed.is_main():
            self._tracker = None  # one MLflow run per stage, opened by rank 0
            return
        stage = "+".join(run_params.get("pipeline_names") or ["__default__"])
        uri = resolve_tracking_uri(self._config["tracking_uri"], self._root)
        self._tracker = Tracker(
            uri,
            self._config["experiment_name"],
            self._root / self._config["artifact_root"],
            probe_timeout=float(self._config["probe_timeout"]),
        )
        self._interrupts.install()
        self._saved = []
        tags = {
            "stage": stage,
            "profile": str(self._params.get("profile")),
            "git_commit": git_commit(self._root),
            "dvc_exp": os.environ.get("DVC_EXP_NAME", "workspace"),
            "dvc_stage": os.environ.get("DVC_STAGE", ""),
            "kedro_run_id": str(run_params.get("run_id", "")),
        }
        self._tracker.start(run_name=stage, tags=tags)
        self._history_prefix = history_prefixes(
            [o for o in pipeline.all_outputs() if o.endswith("history")]
        )
        timings = [o for o in pipeline.all_outputs() if o.endswith("timings")]
        self._timings_prefix = history_prefixes(timings)
        keys = sorted(
            i.removeprefix("params:") for i in pipeline.inputs() if i.startswith("params:")
        )
        self._tracker.log_params(
            {"profile": self._params.get("profile"), **{k: _lookup(self._params, k) for k in keys}}
        )

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        if self._tracker is None:
            return
        self._saved.append(dataset_name)
        if dataset_name.endswith("metrics") and isinstance(data, dict):
            self._tracker.log_metrics(data)
        elif dataset_name.endswith("timings") and isinstance(data, dict):
            prefix = self._timings_prefix.get(dataset_name, "")
            self._tracker.log_metrics({f"{prefix}{k}": v for k, v in data.items()})
        elif dataset_name.endswith("history") and isinstance(data, pd.DataFrame):
            for _, row in data.iterrows():
                prefix = self._history_prefix.get(dataset_name, "")
                values = {
                    f"{prefix}{k}": v for k, v in row.drop(labels=["step"], errors="ignore").items()
                }
                self._tracker.log_metrics(values, step=int(row.get("step", 0)))

    @hook_impl
    def after_pipeline_run(
        self, run_params: Any, run_result: Any, pipeline: Any, catalog: Any
    ) -> None:
        if self._tracker is None:
            return
        config = catalog.to_config()[0]
        reporting = (self._root / REPORTING_DIR).resolve()
        for name in dict.fromkeys(self._saved):
            filepath = config.get(name, {}).get("filepath")
            if not filepath:
                continue
            path = (self._root / filepath).resolve()
            if path.is_relative_to(reporting):
                sub = path.parent.relative_to(reporting).as_posix()
                self._tracker.log_artifacts([path], artifact_path=None if sub == "." else sub)
        self._tracker.end("FINISHED")
        self._interrupts.restore()

    @hook_impl
    def on_pipeline_error(
        self, error: Exception, run_params: Any, pipeline: Any, catalog: Any
    ) -> None:
        self._interrupts.restore()
        if self._tracker is not None:
            self._tracker.end("KILLED" if self._interrupts.received else "FAILED")


class DistributedHook:
    """Joins torchrun's process group before a run and keeps every rank but 0 from writing.

    All ranks execute the whole pipeline (so nodes downstream of a shared computation see the same
    inputs everywhere); on ranks above 0 each output of the pipeline becomes an in-memory dataset,
    so files, checkpoints' final outputs and MLflow runs come from rank 0 alone.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        if distributed.world().size > 1:
            distributed.init(str(context.params.get("device", "auto")))
            if not distributed.is_main():
                os.environ["TQDM_DISABLE"] = "1"
                logging.getLogger("oquab_repro").setLevel(logging.WARNING)
                logging.getLogger("kedro").setLevel(logging.WARNING)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if distributed.is_main():
            return
        logging.getLogger("kedro.io").setLevel(logging.ERROR)  # "Replacing dataset ..." per output
        for name in pipeline.all_outputs():
            catalog[name] = MemoryDataset(copy_mode="assign")

    @hook_impl(trylast=True)
    def after_pipeline_run(
        self, run_params: Any, run_result: Any, pipeline: Any, catalog: Any
    ) -> None:
        distributed.shutdown()  # last: rank 0 first finishes its MLflow run
