"""MLflow tracking records runs, and an unreachable store warns once without failing anything."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from oquab_repro.hooks import history_prefixes
from oquab_repro.tracking import Tracker, flatten, numeric_items, resolve_tracking_uri


def test_flatten_and_numeric_items() -> None:
    tree = {"a": {"b": 1, "c": {"d": 2.5}}, "e": "text", "f": True, "g": float("nan")}
    assert flatten(tree) == {"a.b": 1, "a.c.d": 2.5, "e": "text", "f": True, "g": tree["g"]}
    assert numeric_items(tree) == {"a.b": 1.0, "a.c.d": 2.5, "f": 1.0}


def test_relative_sqlite_uri_is_anchored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
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
    assert [a.path for a in MlflowClient(uri).list_artifacts(run_id, "distances")] == ["distances/fig.png"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["http", "sqlite"])
def test_unreachable_store_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's folder should be")
    uri = f"http://127.0.0.1:{_closed_port()}" if kind == "http" else f"sqlite:///{blocker}/mlflow.db"
    tracker = Tracker(uri, "test-exp")
    with caplog.at_level(logging.WARNING, logger="oquab_repro.tracking"):
        tracker.start("stage", {})
        tracker.log_params({"a": 1})
        tracker.log_metrics({"m": 1.0})
        tracker.log_artifacts([tmp_path])
        tracker.end()
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and uri in warnings[0].getMessage()
    assert not tracker.active


def test_several_histories_of_one_run_get_distinct_prefixes() -> None:
    assert history_prefixes(["pretrain_in1000c_history"]) == {}
    names = ["weak_voc_weak_sup_history", "weak_voc_full_images_history", "weak_voc_masked_pool_history"]
    assert history_prefixes(names) == {
        "weak_voc_weak_sup_history": "weak_sup.",
        "weak_voc_full_images_history": "full_images.",
        "weak_voc_masked_pool_history": "masked_pool.",
    }
