"""MLflow tracking that can never fail a stage, and whose runs end with the status that happened.

A stage's scientific outputs (DVC metrics, figures) must not depend on the tracking store
being up. :class:`Tracker` first probes the store (:func:`probe_store`, bounded in time, so a
dead server or an unwritable SQLite file costs at most ``probe_timeout`` seconds instead of
MLflow's minutes of retries), then forwards to :class:`mlflow.MlflowClient`; on the first error it
warns once, naming the URI and how to fix it, and ignores every later call.

A run is FINISHED, FAILED (an exception) or KILLED (SIGINT/SIGTERM): :class:`Interrupts` records
signals while a stage runs, and a run still open when the interpreter exits was interrupted.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sqlite3
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterable, Mapping
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
    """``MLFLOW_TRACKING_URI`` wins; a relative ``sqlite:///file`` is
    anchored at the project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str((project_root / uri[len(prefix) :]).resolve())
    return uri


SERVER_STORES = frozenset({"http", "https", "databricks", "databricks-uc"})
"""URI schemes of stores behind a tracking server, which picks where artifacts go (``mlflow server
--artifacts-destination``) and takes uploads from every client, so several machines share one
place. Other stores (sqlite, file, a database) are written by this process itself."""


def artifact_location(uri: str, artifact_root: Path | None) -> str | None:
    """Where a new experiment's artifacts go: the server's own choice (None) behind a tracking
    server, ``artifact_root`` otherwise. A client path given to a server would make every client
    keep artifacts on its own disk, out of the server's and the other machines' reach."""
    if artifact_root is None or uri.split(":", 1)[0].lower() in SERVER_STORES:
        return None
    return artifact_root.resolve().as_uri()


def _probe_http(uri: str, timeout: float) -> None:
    """A tracking server answers its ``/health`` endpoint (MLflow retries for minutes otherwise)."""
    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # noqa: S310
        pass


def _probe_sqlite(uri: str, timeout: float) -> None:
    """The SQLite file can be opened for writing (MLflow retries a bad path for ~100 s otherwise).

    ``BEGIN IMMEDIATE`` takes the write lock without writing anything; a lock held by another
    stage only means the store is busy, which MLflow's own busy timeout handles.
    """
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not uri.startswith("sqlite:///") or path in ("", ":memory:"):
        return  # in-memory database
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # as MLflow does before connecting
    conn = sqlite3.connect(path, timeout=timeout)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.rollback()
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
    finally:
        conn.close()


def _probe_folder(uri: str, timeout: float) -> None:
    """A file store's folder exists or can be made, and accepts a new file."""
    folder = Path(uri.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass


PROBES: dict[str, Callable[[str, float], None]] = {
    "http": _probe_http,
    "https": _probe_http,
    "sqlite": _probe_sqlite,
    "file": _probe_folder,
}
"""How to check a store per URI scheme; other schemes (databases,
Databricks) go straight to MLflow."""


def probe_store(uri: str, timeout: float) -> None:
    """Raise if the store at ``uri`` is unreachable or unwritable, within ``timeout`` seconds.

    The probe runs in a daemon thread so that nothing it does (DNS, a server that accepts the
    connection but never answers, a stuck file system) can hold the stage longer than ``timeout``.
    """
    probe = PROBES.get(uri.split(":", 1)[0].lower())
    if probe is None:
        return
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            probe(uri, timeout)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=target, name="mlflow-store-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TimeoutError(f"no answer within {timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


class Interrupts:
    """Remembers whether SIGINT or SIGTERM arrived while a stage ran; a signal left at its default
    (SIGTERM) then raises KeyboardInterrupt, like Ctrl-C, so the stage unwinds instead of dying on
    the spot; a handler installed before (SIGINT's, or a launcher's) still runs as before.

    Kedro only reports Exceptions to ``on_pipeline_error``, and an interrupt can surface as one
    (joblib's TerminatedWorkerError when Ctrl-C also reaches its worker processes), so the hook
    asks :attr:`received` to tell an interrupted run (KILLED) from a failed one (FAILED).
    A signal the parent process told us to ignore (``SIG_IGN``) stays ignored.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread handle signals
        for sig in self.SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)  # SIGINT's default handler raises KeyboardInterrupt
            return
        raise KeyboardInterrupt(self.received)


class Tracker:
    """One MLflow run per stage; silent after the first failure, with a single clear warning."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_root: Path | None = None,
        probe_timeout: float = 1.5,
    ):
        self.uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.probe_timeout = probe_timeout
        self.run_id: str | None = None
        self._client: Any = None
        self._disabled = False

    @property
    def active(self) -> bool:
        return self.run_id is not None and not self._disabled

    def _fail(self, exc: BaseException) -> None:
        if not self._disabled:
            log.warning(
                "MLflow tracking store %s is unavailable (%s: %s). The stage goes on and still"
                " writes its DVC metrics and figures, but this run is not logged to MLflow. To"
                " track runs, start the server or make the store writable, or point"
                " MLFLOW_TRACKING_URI (or tracking_uri in conf/base/mlflow.yml) at a reachable"
                " store.",
                self.uri,
                type(exc).__name__,
                exc,
            )
        self._disabled = True
        self.run_id = None

    def start(self, run_name: str, tags: Mapping[str, str]) -> None:
        if self._disabled:
            return
        try:
            probe_store(self.uri, self.probe_timeout)
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = artifact_location(self.uri, self.artifact_root)
                exp_id = self._client.create_experiment(self.experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
            run = self._client.create_run(exp_id, run_name=run_name, tags=dict(tags))
            self.run_id = run.info.run_id
            atexit.register(self._end_interrupted)
            log.info(
                "MLflow run %s (%s) in experiment '%s' at %s",
                run_name,
                self.run_id,
                self.experiment,
                self.uri,
            )
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
        """Close the run as FINISHED, FAILED or KILLED (MLflow's RunStatus names)."""
        atexit.unregister(self._end_interrupted)
        if not self.active:
            return
        try:
            self._client.set_terminated(self.run_id, status=status)
            if status != "FINISHED":
                log.warning("MLflow run %s ended as %s", self.run_id, status)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            self.run_id = None

    def _end_interrupted(self) -> None:
        """At interpreter exit a run still open was cut short by a KeyboardInterrupt or SystemExit,
        which Kedro's error hook never sees."""
        self.end("KILLED")


def stage_metrics_of_runs(
    uri: str, experiment: str, selector: str, dest: Path
) -> dict[str, dict[str, Any]]:
    """``{reporting folder: metrics}`` of the MLflow runs ``selector`` names: one run id, or a DVC
    experiment name (the ``dvc_exp`` tag; ``workspace`` for plain ``dvc repro``), whose newest
    FINISHED run per stage wins. Read from the runs' ``<folder>/metrics.json`` artifacts, the
    stage's own files, so a run logged from any machine to a shared server compares like a local
    experiment. ``dest`` receives the downloaded files."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri)
    try:
        runs = [client.get_run(selector)]
    except MlflowException:
        exp = client.get_experiment_by_name(experiment)
        runs = (
            []
            if exp is None
            else client.search_runs(
                [exp.experiment_id],
                filter_string=f"tags.dvc_exp = '{selector}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
            )
        )
    if not runs:
        raise LookupError(
            f"no FINISHED MLflow run with id or dvc_exp tag '{selector}' in experiment "
            f"'{experiment}' at {uri}"
        )
    found: dict[str, dict[str, Any]] = {}
    for run in runs:
        for folder in client.list_artifacts(run.info.run_id):
            name = Path(folder.path).name
            if not folder.is_dir or name in found:
                continue
            files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, folder.path)}
            if "metrics.json" in files:
                local = client.download_artifacts(
                    run.info.run_id, f"{folder.path}/metrics.json", str(dest)
                )
                found[name] = json.loads(Path(local).read_text())
    return found
