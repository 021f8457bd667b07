"""The full profile rehearsed end to end on a loopback mirror, stage by stage, at full model sizes.

Usage: python benchmarks/bench_rehearsal.py [--workdir DIR] [--ci] [--csv PATH] [--device auto]
    [--cap KEY=VALUE ...] [--set KEY=VALUE ...] [--stages S1 S2 ...]

Builds a mirror (`oquab-repro mirror build`: the default counts, or `--ci`'s tiny ones), serves it
on 127.0.0.1, copies this project into DIR/project, sets `profile: full`, the mirror, the caps
(default: lib/rehearsal.CI_CAPS, one step of one epoch per network, 8 images per set; without
`--ci`, 256 images and 2 steps so that steps are whole full-size batches) and `device`, and runs
`dvc repro --single-item` on each stage in DAG order (lib/rehearsal.py). Prints, per stage, its wall
time, the peak RSS of its largest process, the peak GPU memory (with `nvidia-smi`) and the seconds
per training step of its full-size networks, and writes them to `--csv`. The same command runs on a
CUDA machine (`--device auto` picks the GPU). Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from oquab_repro.lib.mirror_counts import MirrorCounts
from oquab_repro.lib.rehearsal import (
    CI_CAPS,
    CI_EXECUTION,
    CI_MIRROR,
    StageRun,
    rehearse,
    wall_clock,
    write_csv,
)

ROOT = Path(__file__).resolve().parents[1]
FULL_BATCHES = {"images_per_set": 256, "steps_per_epoch": 2}
"""Without --ci: enough images for whole full-size batches (128 for AlexNet), so s/step is the
thesis' step; the CI's 8 images make one short batch."""


def _pairs(items: list[str]) -> dict[str, object]:
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


def _row(run: StageRun) -> str:
    step = f"{run.seconds_per_step:8.2f}" if run.seconds_per_step is not None else "       -"
    gpu = f"{run.peak_gpu_mb:8.0f}" if run.peak_gpu_mb is not None else "       -"
    ok = "ok" if run.rc == 0 else f"FAILED ({run.rc})"
    return f"{run.stage:28s} {run.seconds:8.1f} {run.peak_rss_mb:8.0f} {gpu} {step}  {ok}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--ci", action="store_true", help="the CI's tiny mirror (20 classes)")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "rehearsal.csv")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cap", nargs="*", default=[], help="caps.KEY=VALUE over CI_CAPS")
    parser.add_argument("--set", nargs="*", default=[], help="other params.yaml KEY=VALUE")
    parser.add_argument("--stages", nargs="*", default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="oquab-rehearsal-"))
    caps = CI_CAPS | ({} if args.ci else FULL_BATCHES) | _pairs(args.cap)
    extra = {"device": args.device, **(CI_EXECUTION if args.ci else {}), **_pairs(args.set)}
    print(f"rehearsal in {workdir}; caps {caps}")
    print(f"{'stage':28s} {'seconds':>8s} {'RSS MB':>8s} {'GPU MB':>8s} {'s/step':>8s}")
    tic = time.perf_counter()
    runs = rehearse(
        workdir,
        ROOT,
        CI_MIRROR if args.ci else MirrorCounts(),
        caps,
        extra,
        stages=args.stages,
        progress=lambda run: print(_row(run), flush=True),
    )
    write_csv(runs, args.csv)
    print(f"stages {wall_clock(runs):.0f} s, in all (mirror and copy included) "
          f"{time.perf_counter() - tic:.0f} s; CSV: {args.csv}")  # fmt: skip


if __name__ == "__main__":
    main()
