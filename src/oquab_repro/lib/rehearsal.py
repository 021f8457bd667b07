"""The full profile rehearsed end to end: every DVC stage, ``profile: full``, on a loopback mirror.

:func:`rehearse` builds a mirror (:mod:`oquab_repro.lib.mirror`), serves it on 127.0.0.1, copies
the project into a fresh git repository, points its ``params.yaml`` at the mirror with the
rehearsal's ``caps`` (the networks keep their full sizes) and runs ``dvc repro --single-item`` on
each stage in DAG order, so that each stage is measured alone: wall time, peak RSS of its largest
process (DVC, Kedro or a DataLoader worker), peak GPU memory when there is a GPU, and the seconds
per training step its nodes record in ``timings.json`` (``lib/training.step_timings``).
``benchmarks/bench_rehearsal.py`` and ``tests/test_rehearsal.py`` run it.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from oquab_repro.lib.mirror import build_mirror, make_server, params_for
from oquab_repro.lib.mirror_counts import MirrorCounts

CI_CAPS = {
    "images_per_set": 8,
    "steps_per_epoch": 1,
    "epochs": 1,
    "ensemble_size": 1,
    "gan_snapshot_epochs": 1,
}
"""Caps of the CI rehearsal: one step of one epoch per network, a handful of images per set."""

MIRROR_ONLY = {"gan.full.featuriser.sha256_prefix": None}
"""Settings a mirror needs whatever the caps: its ResNet-34 is random, so its sha256 is not
torchvision's ``b627a593...``."""

CI_EXECUTION = {
    **{f"{section}.full.num_workers": 1 for section in ("pretrain", "transfer", "weak", "gan")},
    "transfer.full.heatmap_images": 1,
    "weak.full.figure_images": 1,
}
"""Settings of the CI's 2-core machine: one DataLoader worker per loader (the full profile's 4–8
cost more to start than a capped stage computes; images are still decoded in a worker) and one
image per figure (each transfer heat map rescores ~500 full-size patches per variant)."""

CI_MIRROR = MirrorCounts(
    voc2007_trainval=4, voc2007_test=2, voc2012_trainval=8, voc2012_actions=8,
    coco_train=8, coco_val=4, lfw_people=12, lsun_train=20, lsun_val=4, imagenet_classes=20,
    imagenet_train=2, imagenet_val=1, fall11_subtree=10, fall11_other=8, fall11_images=2,
    tuebingen_pairs=12,
)  # fmt: skip
"""A mirror for the CI: every layout, few images, 20 ImageNet classes (FC8 follows the classes)."""

WRAPPER = """\
import json, resource, subprocess, sys, time
tic = time.perf_counter()
with open(sys.argv[1], "w") as log:
    rc = subprocess.run(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - tic, "peak_rss_mb": peak}))
"""


@dataclass
class StageRun:
    """One stage's measurements (a row of the rehearsal's CSV)."""

    stage: str
    rc: int
    seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None = None
    train_steps: int | None = None
    seconds_per_step: float | None = None


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    if leaf not in tree:
        raise KeyError(f"params.yaml has no key '{dotted}'")
    tree[leaf] = value


def configure(project: Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` (dotted params.yaml keys → values) into the copy's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in settings.items():
        _set(params, key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def stage_order(project: Path) -> list[str]:
    """Every stage of the project's dvc.yaml, upstream first."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        graph = repo.index.graph
        return [s.name for s in reversed(list(nx.topological_sort(graph)))]


class _GpuPeak:
    """Peak memory used on the GPUs while a stage runs (``nvidia-smi`` polled every 0.5 s)."""

    def __init__(self) -> None:
        self.peak: float | None = 0.0 if shutil.which("nvidia-smi") else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.wait(0.5):
            out = subprocess.run(query, capture_output=True, text=True).stdout.split()
            self.peak = max([self.peak or 0.0, *(float(v) for v in out if v.strip())])

    def __enter__(self) -> _GpuPeak:
        if self.peak is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def run_stage(project: Path, stage: str, logs: Path) -> StageRun:
    """``dvc repro --single-item <stage>`` in a process of its own that reports its children's peak
    RSS; the stage's output goes to ``logs/<stage>.log``."""
    log = logs / f"{stage.replace('@', '_')}.log"
    argv = [sys.executable, "-c", WRAPPER, str(log), "dvc", "repro", "--single-item", stage]
    with _GpuPeak() as gpu:
        out = subprocess.run(argv, cwd=project, capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    return StageRun(stage, measured["rc"], measured["seconds"], measured["peak_rss_mb"], gpu.peak)


def training_runs(project: Path) -> dict[str, list[str]]:
    """The runs of each stage: the folders of its ``data/08_reporting/<run>/timings.json`` outs.
    Those of training runs hold the steps and seconds per step (:func:`step_times` reads them)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {
            s.name: [
                Path(str(o.def_path)).parent.name
                for o in s.outs
                if Path(str(o.def_path)).name == "timings.json"
            ]
            for s in repo.index.stages
        }


def step_times(project: Path, runs: list[str]) -> tuple[int | None, float | None]:
    """Training steps and seconds per step of a stage's ``runs``: the sum and the step-weighted
    mean of what their ``timings.json`` hold (``lib/training.step_timings``)."""
    steps, seconds = 0, 0.0
    for run in runs:
        path = project / "data" / "08_reporting" / run / "timings.json"
        timings = json.loads(path.read_text()) if path.is_file() else {}
        if "seconds_per_step" in timings:
            steps += int(timings["train_steps"])
            seconds += float(timings["seconds_per_step"]) * int(timings["train_steps"])
    return (steps, seconds / steps) if steps else (None, None)


def rehearse(
    workdir: Path,
    project_root: Path,
    counts: MirrorCounts,
    caps: dict[str, int | None],
    extra: dict[str, Any] | None = None,
    copy: Callable[[Path], Path] | None = None,
    stages: Iterable[str] | None = None,
    progress: Callable[[StageRun], None] = lambda _: None,
) -> list[StageRun]:
    """Build and serve a mirror in ``workdir``, copy the project (``copy``: a function writing a
    fresh git copy into the folder it is given) and run every stage (or ``stages``) with
    ``profile: full`` and ``caps``; return one :class:`StageRun` per stage, stopping at the first
    failure."""
    mirror, project, logs = workdir / "mirror", workdir / "project", workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if not (mirror / "SHA256SUMS").is_file():
        build_mirror(mirror, counts)
    (copy or _copy_tree(project_root))(project)
    server = make_server(mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        data = {f"data.full.{k}": v for k, v in params_for(mirror, url).items()}
        settings = {"profile": "full", **data}
        settings |= {f"caps.{k}": v for k, v in caps.items()} | MIRROR_ONLY | (extra or {})
        configure(project, settings)
        runs, trained = [], training_runs(project)
        for stage in stages or stage_order(project):
            run = run_stage(project, stage, logs)
            run.train_steps, run.seconds_per_step = step_times(project, trained.get(stage, []))
            runs.append(run)
            progress(run)
            if run.rc:
                break
        return runs
    finally:
        server.shutdown()
        server.server_close()


def _copy_tree(root: Path) -> Callable[[Path], Path]:
    """A copy of the git-tracked project files into a fresh git repository (no outputs)."""

    def copy(dest: Path) -> Path:
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.split("\0")  # fmt: skip
        for rel in filter(None, files):
            src = root / rel
            skip = rel == "dvc.lock" or (
                rel.startswith("data/") and not rel.startswith("data/08_reporting/seeds/")
            )
            if src.is_file() and not skip:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        git = ["git", "-c", "user.email=rehearsal@example.invalid", "-c", "user.name=rehearsal"]
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
        subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
        subprocess.run([*git, "commit", "-qm", "rehearsal"], cwd=dest, check=True)
        return dest

    return copy


def write_csv(runs: list[StageRun], path: Path) -> None:
    """The rehearsal's measurements, one row per stage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(runs[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in runs)


def wall_clock(runs: list[StageRun]) -> float:
    return sum(r.seconds for r in runs)
