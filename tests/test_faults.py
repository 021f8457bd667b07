"""Fault injection (issue 14): each fault exits non-zero with a message naming the file or key and
the fix, and leaves every output that existed before exactly as it was; nothing partial looks
finished.

A small workspace (a copy of the project with a three-image Pascal VOC under data/01_raw/voc) runs
the real commands: `kedro run --pipelines patches` (the stage of the issue's corrupt-JPEG report)
and `dvc repro`. Archives come from a local HTTP server; the killed run is a real process killed
with SIGKILL while it trains.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from oquab_repro.lib import download as dl
from tests.conftest import copy_project
from tests.test_download import CONTENT, make_tar, md5

VOC = "data/01_raw/voc/VOCdevkit/VOC2007"
IMAGES = ("000001", "000002", "000003", "000004")  # the figure shows four
OUTPUTS = (
    "data/07_model_output/patches/labelled.parquet",
    "data/08_reporting/patches/metrics.json",
    "data/08_reporting/patches/fig_examples.png",
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DO_NOT_TRACK="1", KEDRO_DISABLE_TELEMETRY="1", DVC_NO_ANALYTICS="1", **extra)
    return env


def _run(argv: list[str], repo: Path) -> subprocess.CompletedProcess:
    uri = f"sqlite:///{repo}/faults-mlflow.db"
    return subprocess.run(
        argv, cwd=repo, env=_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True
    )


def _patches(repo: Path) -> subprocess.CompletedProcess:
    return _run(["kedro", "run", "--pipelines", "patches"], repo)


def _outputs(repo: Path) -> dict[str, bytes]:
    return {rel: (repo / rel).read_bytes() for rel in OUTPUTS}


def _last_run_status(repo: Path) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/faults-mlflow.db")
    exp = client.get_experiment_by_name("oquab-repro")
    return client.search_runs([exp.experiment_id], order_by=["start_time DESC"])[0].info.status


def _tiny_voc(repo: Path) -> None:
    base = repo / VOC
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for image_id in IMAGES:
        Image.new("RGB", (80, 60), (90, 120, 150)).save(base / "JPEGImages" / f"{image_id}.jpg")
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>80</width>"
            "<height>60</height><depth>3</depth></size><object><name>cat</name><difficult>0"
            "</difficult><bndbox><xmin>30</xmin><ymin>30</ymin><xmax>42</xmax><ymax>42</ymax>"
            "</bndbox></object></annotation>"
        )
    for split in ("train", "val", "trainval", "test"):
        (base / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in IMAGES))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project with a tiny VOC and a finished patches run (the outputs faults must keep)."""
    repo = copy_project(tmp_path_factory.mktemp("faults"))
    _tiny_voc(repo)
    proc = _patches(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all((repo / rel).is_file() for rel in OUTPUTS)
    return repo


@pytest.mark.slow
def test_unreadable_image_is_named_and_fails_the_run_keeping_outputs(workspace: Path) -> None:
    before = _outputs(workspace)
    image = workspace / VOC / "JPEGImages/000002.jpg"
    good = image.read_bytes()
    image.write_bytes(good[:40])
    params = workspace / "params.yaml"
    text = params.read_text()
    try:
        proc = _patches(workspace)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert f"{image}: unreadable image" in out and "data.skip_corrupt: true" in out
        assert _outputs(workspace) == before
        assert _last_run_status(workspace) == "FAILED"  # an exception inside a node
        # the fix the message names works: the file is skipped and counted
        params.write_text(text.replace("skip_corrupt: false", "skip_corrupt: true", 1))
        proc = _patches(workspace)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metrics = json.loads((workspace / OUTPUTS[1]).read_text())
        assert metrics["skipped_images"] == 1 and metrics["skipped_first"] == ["000002.jpg"]
        assert metrics["images"] == 2 * (len(IMAGES) - 1)  # train and val, without the bad one
    finally:
        image.write_bytes(good)
        params.write_text(text)
        for rel, data in before.items():  # the clean outputs back for the next tests
            (workspace / rel).write_bytes(data)


@pytest.mark.slow
def test_missing_dataset_root_is_named_with_the_fix(workspace: Path) -> None:
    before = _outputs(workspace)
    voc, aside = workspace / "data/01_raw/voc", workspace / "voc-aside"
    voc.rename(aside)
    try:
        proc = _patches(workspace)
    finally:
        aside.rename(voc)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "data/01_raw/voc" in out and "dvc repro data" in out
    assert _outputs(workspace) == before


@pytest.mark.slow
def test_invalid_parameter_stops_dvc_before_it_removes_anything(workspace: Path) -> None:
    before = _outputs(workspace)
    params = workspace / "params.yaml"
    text = params.read_text()
    params.write_text(text.replace("step_fraction: 0.5", "step_fraction: 0.9", 1))
    try:
        proc = _run(["dvc", "repro", "patches"], workspace)
    finally:
        params.write_text(text)
    assert proc.returncode != 0
    assert re.findall(r"Running stage '([^']+)'", proc.stdout) == ["check"]
    assert "invalid value for 'patches.step_fraction' (0.9)" in proc.stderr
    assert "Input should be less than or equal to 0.5" in proc.stderr
    assert _outputs(workspace) == before


def _finished(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_corrupt_archive_is_named_and_the_installed_dataset_kept(server, tmp_path: Path) -> None:
    into = tmp_path / "raw" / "voc"
    into.mkdir(parents=True)
    (into / "finished.txt").write_text("the previous, complete dataset")
    before = _finished(into)
    archive = make_tar(CONTENT)
    server.files["/voc.tar.gz"] = archive[: len(archive) // 2]  # served short: corrupt
    target = dl.Archive(server.url("/voc.tar.gz"), None, "voc")
    with pytest.raises(dl.TruncatedArchiveError, match=r"voc\.tar\.gz: corrupt or truncated"):
        dl.fetch_archive(target, tmp_path / "downloads", into)
    assert _finished(into) == before


def test_checksum_mismatch_names_file_and_keeps_nothing_that_looks_finished(
    server, tmp_path: Path
) -> None:
    into = tmp_path / "raw" / "voc"
    into.mkdir(parents=True)
    (into / "finished.txt").write_text("the previous, complete dataset")
    before = _finished(into)
    archive = make_tar(CONTENT)
    server.files["/voc.tar.gz"] = archive
    wrong = md5(archive + b"x")
    target = dl.Archive(server.url("/voc.tar.gz"), wrong, "voc")
    with pytest.raises(dl.ChecksumError, match=r"voc\.tar\.gz: md5 is [0-9a-f]+, the published"):
        dl.fetch_archive(target, tmp_path / "downloads", into)
    assert not (tmp_path / "downloads" / "voc.tar.gz").exists()  # no file without .part
    assert _finished(into) == before


TRAIN = """
import sys, time, torch
from pathlib import Path
from torch.utils.data import Dataset
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.training import TrainConfig, fit

class Slow(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        time.sleep(float(sys.argv[2]))
        return self.x[i], self.y[i]

torch.manual_seed(0)
model = torch.nn.Linear(4, 3)
cfg = TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.0, lr_factor=0.1, patience=10,
                  max_reductions=3, max_epochs=6, batch_size=8, num_workers=0, seed=0)
fit(model, Slow(32, 1), Slow(8, 2), cfg, torch.device("cpu"), Checkpointer(Path(sys.argv[1])),
    run_id="fault-test")
torch.save(model.state_dict(), Path(sys.argv[1]) / "final.pt")
"""


def _train(folder: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(folder), str(delay)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    import torch

    killed, straight = tmp_path / "killed", tmp_path / "straight"
    proc = _train(killed, 0.03)
    deadline = time.monotonic() + 120
    while not any(killed.glob("epoch-0002.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.pt").exists(), "the run was killed before it finished"
    left = sorted(p.name for p in killed.iterdir())
    assert all(re.fullmatch(r"epoch-\d{4}\.pt", n) for n in left), f"half-written files: {left}"
    for folder, delay in ((killed, 0.0), (straight, 0.0)):
        run = _train(folder, delay)
        assert run.wait(timeout=300) == 0, run.stderr.read().decode()[-2000:]
    resumed = torch.load(killed / "final.pt")
    reference = torch.load(straight / "final.pt")
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
