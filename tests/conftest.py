"""Shared fixtures: the repository root and a disposable copy of the project for end-to-end runs."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .http_server import ArchiveServer

ROOT = Path(__file__).resolve().parents[1]
# `oquab-repro seeds collect` output: committed, read by the report stage
SEEDS_DIR = "data/08_reporting/seeds/"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def copy_project(dest: Path) -> Path:
    """Copy the project's source files (git-tracked or new, never ignored
    outputs) into a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if (
            not src.is_file()
            or rel == "dvc.lock"
            or (rel.startswith("data/") and not rel.startswith(SEEDS_DIR))
        ):
            # a fresh clone has no outputs: stages must rebuild them (the seed sweep is an input)
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=dest, check=True)
    return dest


# A small rehearsal mirror (lib/mirror.py): every official layout, few images, 20 ImageNet classes.
SMALL_MIRROR = {
    "imagenet_classes": 20,
    "imagenet_train": 2,
    "imagenet_val": 1,
    "fall11_subtree": 10,
    "fall11_other": 8,
    "fall11_images": 2,
    "lfw_people": 6,
    "lsun_train": 10,
    "lsun_val": 4,
    "coco_train": 12,
    "coco_val": 8,
    "voc2007_trainval": 12,
    "voc2007_test": 8,
    "voc2012_trainval": 12,
    "voc2012_actions": 10,
    "tuebingen_pairs": 12,
}


@pytest.fixture(scope="session")
def small_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oquab_repro.lib.mirror import build_mirror
    from oquab_repro.lib.mirror_counts import MirrorCounts

    root = tmp_path_factory.mktemp("mirror") / "mirror"
    build_mirror(root, MirrorCounts(**SMALL_MIRROR))
    return root


@pytest.fixture()
def server() -> Iterator[ArchiveServer]:
    """A real HTTP server on 127.0.0.1 (download tests): serves ``srv.files``, honours ``Range``."""
    srv = ArchiveServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collect the slow end-to-end tests first: under xdist (``-n 2 --dist loadfile``) their file
    then starts on one worker at once while the other worker runs every unit test beside it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
