"""The ``check`` DVC stage: an invalid value stops ``dvc repro`` before DVC removes any output;
a valid one reruns only the stages that track it.

A small workspace (two cheap stages: ``twosample`` on a tiny grid and ``data_tuebingen``) is built
once; each test edits params.yaml, runs ``dvc repro`` on those targets and puts the file back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from oquab_repro.check import MARKER, MARKER_TEXT, check_project, write_marker
from oquab_repro.params import ParamsError
from tests.conftest import copy_project

TARGETS = ["twosample", "data_tuebingen"]
TINY = {"twosample.sample_sizes": "[40]", "twosample.repetitions": "2"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | {"DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "1", "DVC_NO_ANALYTICS": "1"}


def repro(repo: Path, *targets: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["dvc", "repro", *(targets or TARGETS)],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
    )


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


def set_param(text: str, dotted: str, value: str) -> str:
    """params.yaml with one nested key's value replaced (comments and layout kept)."""
    lines, depth, parts = text.splitlines(keepends=True), 0, dotted.split(".")
    for i, line in enumerate(lines):
        if re.match(rf"^{'  ' * depth}{re.escape(parts[depth])}:", line):
            if depth == len(parts) - 1:
                head = line.split(":", 1)[0]
                lines[i] = f"{head}: {value}\n"
                return "".join(lines)
            depth += 1
    raise KeyError(dotted)


@contextmanager
def edited(repo: Path, **changes: str) -> Iterator[None]:
    path = repo / "params.yaml"
    before = path.read_text()
    text = before
    for key, value in changes.items():
        text = set_param(text, key.replace("__", "."), value)
    path.write_text(text)
    try:
        yield
    finally:
        path.write_text(before)


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every output file of the workspace (what a failed check must leave untouched)."""
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted((repo / "data").rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("check"))
    text = (repo / "params.yaml").read_text()
    for key, value in TINY.items():
        text = set_param(text, key, value)
    (repo / "params.yaml").write_text(text)
    proc = repro(repo)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ran(proc) == {"check", *TARGETS}
    return repo


def test_marker_bytes_do_not_depend_on_params(tmp_path: Path) -> None:
    assert write_marker(tmp_path).read_bytes() == MARKER_TEXT.encode()
    assert (tmp_path / MARKER).is_file()


def test_check_names_every_missing_full_profile_input(repo_root: Path, tmp_path: Path) -> None:
    params = (repo_root / "params.yaml").read_text()
    params = set_param(params, "profile", "full")
    params = set_param(params, "data.full.mirror", "http://127.0.0.1:9")  # refused at once
    params = set_param(params, "data.full.download_dir", str(tmp_path / "downloads"))
    (tmp_path / "params.yaml").write_text(params)
    with pytest.raises(ParamsError) as err:
        check_project(tmp_path)
    lines = str(err.value).splitlines()
    for key in ("imagenet_path", "imagenet_fall11_path", "wordnet_fall11_path"):
        assert any(f"data.full.{key} = " in line for line in lines), key
    archives = [line for line in lines if "data.full.archives:" in line]
    assert len(archives) == 9 and "VOCtrainval_06-Nov-2007.tar" in archives[0]


@pytest.mark.slow
def test_invalid_value_fails_at_check_and_keeps_every_output(workspace: Path) -> None:
    before = snapshot(workspace)
    with edited(workspace, twosample__repetitions="0"):
        proc = repro(workspace)
    assert proc.returncode != 0
    assert ran(proc) == {"check"}
    assert "invalid value for 'twosample.repetitions' (0): Input should be greater than 0" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    assert snapshot(workspace) == before


@pytest.mark.slow
def test_unknown_profile_changes_nothing(workspace: Path) -> None:
    before = snapshot(workspace)
    with edited(workspace, profile="medium"):
        proc = repro(workspace)
    assert proc.returncode != 0
    assert "invalid value for 'profile' ('medium'): Input should be 'mini' or 'full'" in proc.stderr
    assert snapshot(workspace) == before


@pytest.mark.slow
def test_full_profile_without_its_data_changes_nothing(workspace: Path) -> None:
    before = snapshot(workspace)
    with edited(workspace, profile="full", data__full__mirror="http://127.0.0.1:9"):
        proc = repro(workspace, "data", "twosample")  # data: the stage the mini raw data comes from
    assert proc.returncode != 0 and ran(proc) == {"check"}
    assert "data.full.imagenet_path = /path/to/ILSVRC2012: not found" in proc.stderr
    assert snapshot(workspace) == before


@pytest.mark.slow
def test_valid_change_reruns_only_the_stages_reading_it(workspace: Path) -> None:
    marker = (workspace / MARKER).read_bytes()
    with edited(workspace, distances__parzen_radius="0.35"):  # no target reads it
        proc = repro(workspace)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ran(proc) == {"check"}
    with edited(workspace, twosample__repetitions="3"):
        proc = repro(workspace)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ran(proc) == {"check", "twosample"}
    assert (workspace / MARKER).read_bytes() == marker
