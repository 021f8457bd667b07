"""MLflow tracking records runs, ends them with the status that happened (FINISHED, FAILED,
KILLED), and an unreachable or unwritable store is detected up front and warns once."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from oquab_repro.hooks import MlflowTrackingHook, history_prefixes
from oquab_repro.tracking import (
    Tracker,
    artifact_location,
    flatten,
    numeric_items,
    resolve_tracking_uri,
    stage_metrics_of_runs,
)
from tests.conftest import copy_project


def test_flatten_and_numeric_items() -> None:
    tree = {"a": {"b": 1, "c": {"d": 2.5}}, "e": "text", "f": True, "g": float("nan")}
    assert flatten(tree) == {"a.b": 1, "a.c.d": 2.5, "e": "text", "f": True, "g": tree["g"]}
    assert numeric_items(tree) == {"a.b": 1.0, "a.c.d": 2.5, "f": 1.0}


def test_relative_sqlite_uri_is_anchored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        resolve_tracking_uri("sqlite:///mlflow.db", tmp_path)
        == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == "http://example.invalid:5000"


def test_run_is_recorded(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "test-exp", tmp_path / "artifacts")
    tracker.start("distances", {"stage": "distances", "profile": "mini"})
    tracker.log_params({"distances": {"parzen_radius": 0.3}})
    tracker.log_metrics({"emd": {"theta_deg": 5.0}})
    (tmp_path / "fig.png").write_bytes(b"png")
    tracker.log_artifacts([tmp_path / "fig.png"], artifact_path="distances")
    run_id = tracker.run_id
    tracker.end()
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"distances.parzen_radius": "0.3"}
    assert run.data.metrics == {"emd.theta_deg": 5.0}
    assert run.data.tags["profile"] == "mini"
    assert [a.path for a in MlflowClient(uri).list_artifacts(run_id, "distances")] == [
        "distances/fig.png"
    ]


def test_only_local_stores_get_a_local_artifact_location(tmp_path: Path) -> None:
    """A tracking server keeps artifacts where `mlflow server --artifacts-destination` says;
    naming a client path there would leave them on the client (README "Scaling out")."""
    local = (tmp_path / "mlartifacts").resolve().as_uri()
    assert artifact_location(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts") == local
    assert artifact_location(str(tmp_path / "mlruns"), tmp_path / "mlartifacts") == local
    assert artifact_location(f"file://{tmp_path}/mlruns", tmp_path / "mlartifacts") == local
    for server in ("http://127.0.0.1:5000", "https://mlflow.example.invalid", "databricks"):
        assert artifact_location(server, tmp_path / "mlartifacts") is None


def test_stage_metrics_are_read_back_from_run_artifacts(tmp_path: Path) -> None:
    """`oquab-repro compare --from mlflow`: a dvc_exp tag or a run id gives the stage's metrics."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    metrics = {"type1": {"knn": 0.05}, "power": {"knn": 0.9}}
    folder = tmp_path / "twosample"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps(metrics))
    tracker = Tracker(uri, "test-exp", tmp_path / "artifacts")
    tracker.start("twosample", {"stage": "twosample", "dvc_exp": "reps-3"})
    tracker.log_artifacts([folder / "metrics.json"], artifact_path="twosample")
    run_id = tracker.run_id
    tracker.end()
    for selector in ("reps-3", run_id):
        found = stage_metrics_of_runs(uri, "test-exp", selector, tmp_path / selector)
        assert found == {"twosample": metrics}
    with pytest.raises(LookupError, match="dvc_exp tag 'reps-4'"):
        stage_metrics_of_runs(uri, "test-exp", "reps-4", tmp_path / "none")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """A tracking server that accepts connections and never answers (a hung or firewalled host)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _bad_store(kind: str, tmp_path: Path, silent_server: str) -> str:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's folder should be")
    return {
        "closed-port": f"http://127.0.0.1:{_closed_port()}",
        "silent-server": silent_server,
        "sqlite-under-a-file": f"sqlite:///{blocker}/mlflow.db",
        "sqlite-unwritable": "sqlite:////proc/mlflow.db",  # MLflow retried this for ~110 s
        "file-store-under-a-file": f"file://{blocker}/mlruns",
    }[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "closed-port",
        "silent-server",
        "sqlite-under-a-file",
        "sqlite-unwritable",
        "file-store-under-a-file",
    ],
)
def test_unreachable_store_is_detected_up_front_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, silent_server: str, kind: str
) -> None:
    uri = _bad_store(kind, tmp_path, silent_server)
    tracker = Tracker(uri, "test-exp", probe_timeout=1.5)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        tracker.start("stage", {})
        tracker.log_params({"a": 1})
        tracker.log_metrics({"m": 1.0})
        tracker.log_artifacts([tmp_path])
        tracker.end()
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"detecting {uri} took {elapsed:.0f} s (MLflow's own retries take minutes)"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert (
        uri in warnings[0]
        and "is unavailable" in warnings[0]
        and "MLFLOW_TRACKING_URI" in warnings[0]
    )
    assert not tracker.active


def _hook_on(tmp_path: Path) -> tuple[MlflowTrackingHook, SimpleNamespace]:
    hook = MlflowTrackingHook()
    config = {
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "experiment_name": "test-exp",
        "artifact_root": "mlartifacts",
        "probe_timeout": 1.5,
    }
    hook.after_context_created(
        SimpleNamespace(
            project_path=tmp_path, params={"profile": "mini"}, config_loader={"mlflow": config}
        )
    )
    pipeline = SimpleNamespace(all_outputs=set, inputs=set)
    return hook, pipeline


def _status(tmp_path: Path, run_id: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id).info.status


def test_an_error_ends_the_run_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hook, pipeline = _hook_on(tmp_path)
    hook.before_pipeline_run({"pipeline_names": ["stage"]}, pipeline, None)
    run_id = hook._tracker.run_id
    hook.on_pipeline_error(RuntimeError("a node failed"), {}, pipeline, None)
    assert _status(tmp_path, run_id) == "FAILED"


@pytest.fixture()
def ctrl_c() -> Iterator[None]:
    """SIGINT raising KeyboardInterrupt, as in a terminal, even when the suite itself was started
    in the background of a script (which leaves SIGINT ignored for it and its children)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _default_signals() -> None:
    """In a stage's child process before it starts: SIGINT as a terminal delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupt_that_surfaces_as_an_error_ends_the_run_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None
) -> None:
    """Ctrl-C also kills joblib's workers, so Kedro may see TerminatedWorkerError (an Exception):
    the run was still interrupted. SIGINT's usual KeyboardInterrupt is kept."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hook, pipeline = _hook_on(tmp_path)
    handler = signal.getsignal(signal.SIGINT)
    hook.before_pipeline_run({"pipeline_names": ["stage"]}, pipeline, None)
    run_id = hook._tracker.run_id
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    hook.on_pipeline_error(
        RuntimeError("A worker process managed by the executor was terminated"), {}, pipeline, None
    )
    assert _status(tmp_path, run_id) == "KILLED"
    assert signal.getsignal(signal.SIGINT) is handler, "the stage's signal handlers are restored"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DO_NOT_TRACK="1", KEDRO_DISABLE_TELEMETRY="1", **extra)
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("repo"))


def _wait_for_run(uri: str, proc: subprocess.Popen, deadline: float) -> str:
    """The id of the stage's MLflow run, once it is RUNNING (the stage has started its work)."""
    from mlflow import MlflowClient

    while time.monotonic() < deadline and proc.poll() is None:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("oquab-repro")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs:
            return runs[0].info.run_id
        time.sleep(0.5)
    raise AssertionError(f"no MLflow run appeared (exit code {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_kedro_run_ends_killed(
    project: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """A real `kedro run` of a long stage, interrupted as Ctrl-C (or a
    scheduler's SIGTERM) would."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with (tmp_path / "log.txt").open("w") as log_file:
        proc = subprocess.Popen(
            ["kedro", "run", "--pipelines", "distances"],
            cwd=project,
            env=_env(MLFLOW_TRACKING_URI=uri),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_signals,
        )
        try:
            run_id = _wait_for_run(uri, proc, time.monotonic() + 120)
            proc.send_signal(sig)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode != 0
    log = (tmp_path / "log.txt").read_text()
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED", log[-3000:]
    assert not (project / "data/08_reporting/distances/metrics.json").exists()


@pytest.mark.slow
def test_unwritable_store_costs_one_warning_and_the_stage_still_writes_its_metrics(
    project: Path,
) -> None:
    """The store of issue 14 (MLflow retried it ten times over ~110 s, one warning per retry)."""
    uri = "sqlite:////proc/mlflow.db"
    metrics = project / "data/08_reporting/twosample/metrics.json"
    proc = subprocess.run(
        ["kedro", "run", "--pipelines", "twosample", "--params", "twosample.repetitions=2"],
        cwd=project,
        env=_env(MLFLOW_TRACKING_URI=uri),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert metrics.is_file()
    out = proc.stdout + proc.stderr
    assert out.count("is unavailable") == 1 and uri in out
    assert "SQLAlchemy engine could not be created" not in out, "MLflow's retry loop ran"


def test_several_histories_of_one_run_get_distinct_prefixes() -> None:
    assert history_prefixes(["pretrain_in1000c_history"]) == {}
    names = [
        "weak_voc_weak_sup_history",
        "weak_voc_full_images_history",
        "weak_voc_masked_pool_history",
    ]
    assert history_prefixes(names) == {
        "weak_voc_weak_sup_history": "weak_sup.",
        "weak_voc_full_images_history": "full_images.",
        "weak_voc_masked_pool_history": "masked_pool.",
    }
