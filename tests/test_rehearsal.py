"""The full profile rehearsed end to end (issue 12, item 5): every DVC stage with ``profile: full``
on a mirror served over 127.0.0.1, at full model sizes, capped to one step of one epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from oquab_repro.lib.rehearsal import CI_CAPS, CI_EXECUTION, CI_MIRROR, rehearse, write_csv
from tests.conftest import copy_project


@pytest.mark.slow
def test_full_profile_rehearsal_runs_every_stage_to_the_report(
    tmp_path: Path, repo_root: Path
) -> None:
    settings = {"device": "cpu", **CI_EXECUTION}
    runs = rehearse(tmp_path, repo_root, CI_MIRROR, CI_CAPS, settings, copy=copy_project)
    write_csv(runs, tmp_path / "rehearsal.csv")
    failed = [r.stage for r in runs if r.rc]
    assert not failed, f"stage {failed} failed: see {tmp_path}/logs/"
    stages = [r.stage for r in runs]
    assert stages[-1] == "report" and "data" in stages and "weak@coco" in stages
    project = tmp_path / "project"
    assert (project / "data" / "08_reporting" / "report").is_dir()
    timed = {r.stage: r for r in runs if r.seconds_per_step is not None}
    for family in ("pretrain@in1000c", "weak@voc", "weak@coco", "actions", "transfer_nopre"):
        assert timed[family].train_steps > 0 and timed[family].seconds_per_step > 0, family
    assert all(r.peak_rss_mb > 0 and r.seconds > 0 for r in runs)
