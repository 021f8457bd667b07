"""`oquab-repro`: every subcommand's --help works and says something useful; `check` names the bad
key in one line; `run` runs one stage's pipeline, and with an unknown stage lists the stages instead
of a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oquab_repro.console import build_parser, main
from tests.conftest import copy_project

# subcommand → words its --help must contain (what a user looks for there)
HELP = {
    (): ["check", "stages", "dvc-yaml", "run", "compare", "mirror", "seeds", "push", "dvc repro"],
    ("check",): ["--marker", "--params-only", "key"],
    ("stages",): ["stages", "--waves"],
    ("dvc-yaml",): ["--check"],
    ("run",): ["stages", "distances"],
    ("compare",): ["--table", "dvc exp show", "--from"],
    ("push",): ["--remote", "--jobs"],
    ("mirror",): ["build", "serve", "check"],
    ("mirror", "build"): ["--port", "dir"],
    ("mirror", "serve"): ["--port", "--bind"],
    ("mirror", "check"): ["SHA256SUMS"],
    ("seeds",): ["run", "collect", "per_seed.csv"],
    ("seeds", "run"): ["--seeds", "--stages", "--queue"],
    ("seeds", "collect"): ["--seeds", "--out"],
}


@pytest.mark.parametrize("argv", list(HELP), ids=lambda a: " ".join(a) or "root")
def test_help_exits_zero_and_explains(argv: tuple[str, ...], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for word in HELP[argv]:
        assert word in text, f"`oquab-repro {' '.join(argv)} --help` does not mention {word}"


def test_every_subcommand_has_its_help_checked() -> None:
    """A new subcommand gets a line in HELP (and so a checked --help)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {name for name in sub.choices} == {a[0] for a in HELP if len(a) == 1}


def _project(tmp_path: Path, repo_root: Path, params: str) -> Path:
    (tmp_path / "params.yaml").write_text(params)
    shutil.copy(repo_root / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_check_names_the_key_value_and_rule_in_one_line(
    repo_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    text = (repo_root / "params.yaml").read_text().replace("n_points: 2000", "n_points: -5", 1)
    monkeypatch.chdir(_project(tmp_path, repo_root, text))
    assert main(["check", "--marker", "ok.txt"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        f"error: {tmp_path}/params.yaml: invalid value for 'distances.n_points' (-5): "
        "Input should be greater than 0."
    )
    assert len(err) == 2 and "every output is as it was" in err[1]
    assert not (tmp_path / "ok.txt").exists()


def test_check_writes_the_same_marker_for_any_valid_params(
    repo_root: Path, tmp_path: Path, monkeypatch
) -> None:
    text = (repo_root / "params.yaml").read_text()
    monkeypatch.chdir(_project(tmp_path, repo_root, text))
    assert main(["check", "--marker", "ok.txt"]) == 0
    first = (tmp_path / "ok.txt").read_bytes()
    (tmp_path / "params.yaml").write_text(text.replace("seed: 0", "seed: 7", 1))
    assert main(["check", "--marker", "ok.txt"]) == 0
    assert (tmp_path / "ok.txt").read_bytes() == first


def test_run_with_an_unknown_stage_lists_the_stages(repo_root: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo_root)
    assert main(["run", "nosuchstage"]) == 2
    err = capsys.readouterr().err
    assert "no stage pipeline 'nosuchstage'" in err and "Traceback" not in err
    for stage in ("distances", "twosample", "transfer", "weak", "report"):
        assert stage in err.split("available:")[1]


# distances on a coarse grid (the README's command, about 15 s of work instead of minutes)
SMALL_DISTANCES = {
    "n_points: 2000": "n_points: 300",
    "grid_size: 128 ": "grid_size: 32 ",
    "supersample: 4": "supersample: 1",
    "coarse_grids: [32, 64]": "coarse_grids: [8, 16]",
    "theta_steps: 90": "theta_steps: 6",
    "side_steps: 13": "side_steps: 3",
}


@pytest.mark.slow
def test_run_executes_one_stage_pipeline(tmp_path: Path) -> None:
    """README: `oquab-repro run distances` runs the stage's Kedro pipeline (no DVC) and writes
    its outputs."""
    project = copy_project(tmp_path / "repo")
    params = project / "params.yaml"
    text = params.read_text()
    for old, new in SMALL_DISTANCES.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    params.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env |= {"KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "oquab-repro"), "run", "distances"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pipeline execution completed successfully" in proc.stderr + proc.stdout
    fits = json.loads((project / "data/08_reporting/distances/metrics.json").read_text())
    assert {"kl", "js", "emd", "nll"} <= fits.keys()
    assert not (project / "data/08_reporting/twosample").exists(), "only the named stage runs"


def test_a_closed_pipe_ends_a_listing_quietly() -> None:
    """`oquab-repro stages | head -1`: the reader leaving early is no error."""
    cli = str(Path(sys.executable).parent / "oquab-repro")
    proc = subprocess.run(
        f"'{cli}' stages --help | head -c 1; '{cli}' stages | head -c 1",
        shell=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
