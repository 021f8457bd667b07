"""The code base stays ruff-clean (rules in pyproject.toml), so style drift fails CI, not review."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_ruff_check(repo_root: Path) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dev dependency: pip install -e '.[dev]'"
    proc = subprocess.run(
        [ruff, "check", "src", "tests", "benchmarks"], cwd=repo_root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format(repo_root: Path) -> None:
    """One layout (ruff format, line length 100): a diff never mixes logic with reformatting."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dev dependency: pip install -e '.[dev]'"
    proc = subprocess.run(
        [ruff, "format", "--check", "src", "tests", "benchmarks"],
        cwd=repo_root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, "run `ruff format src tests benchmarks`:\n" + proc.stdout
