"""Run by tests/test_distributed.py, alone or under torchrun: a small GAN grid (train and score
every snapshot) and CGAN-C2ST units, shared among the ranks; rank 0 pickles what it gathered.

Usage: ``units_probe.py OUT WORKDIR``. Sizes are tiny (8×8 blobs, 2 epochs; 5 pairs, 2 epochs) so
the test compares 1 and 2 ranks in about a minute.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch
import yaml

from oquab_repro.lib import distributed
from oquab_repro.lib import twosample as ts
from oquab_repro.lib.adversarial import GanConfig, discriminator_classifier
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.unit_cache import UnitCache
from oquab_repro.params import GanParams, with_profile
from oquab_repro.pipelines.causal import nodes as causal
from oquab_repro.pipelines.gan import nodes as gan
from tests.conftest import ROOT
from tests.test_causal import C2ST, _causal_params, _synthetic_pairs
from tests.test_gan import _blobs


def gan_profile():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    section = params["gan"]
    section["mini"].update(
        image_size=8, eval_samples=40, widths={"small": 2, "medium": 4, "large": 6},
        snapshot_epochs=[1, 2], grid_images=8, batch_size=8,
    )  # fmt: skip
    section["mini"]["pixel_c2st"].update(epochs=2, df=2)
    return with_profile(GanParams, section, "mini")[1], params["c2st"]


def gan_grid(workdir: Path) -> dict:
    p, c2st = gan_profile()
    runs = [
        GanConfig(gf=p.widths[g], df=p.widths[d], image_size=8, batch_size=8, lr=2e-4, beta1=0.5,
                  snapshot_epochs=(1, 2), seed=7)
        for g, d in gan.grid_cells()
    ]  # fmt: skip
    images = list(_blobs(40, 5, size=8))
    trained = gan.train_cells(
        images, runs, Checkpointer(workdir / "gan"), torch.device("cpu"), 0, "probe"
    )
    snapshots = {
        gan.cell_name(g, d): s for (g, d), (s, _) in zip(gan.grid_cells(), trained, strict=True)
    }
    real = _blobs(40, 6, size=8)

    def featurise(x: torch.Tensor):
        return x.flatten(1).numpy()

    pixel = discriminator_classifier(2, 2, 1e-3, 64)
    ref = gan._Reference(
        real, featurise(real), featurise, ts.TestOptions.from_params(c2st), pixel, 0
    )
    rows, _, _ = gan.score_cells(ref, snapshots, p, "probe")
    return {"rows": rows, "snapshots": snapshots, "histories": [h for _, h in trained]}


def cgan_units(workdir: Path) -> dict:
    pairs = _synthetic_pairs(count=3, n=120, seed=2) + _synthetic_pairs(2, 90, 3, first_id=4)
    stats, _, info = causal.cgan_c2st(
        pairs,
        _causal_params(epochs=2),
        C2ST.model_dump(),
        "mini",
        0,
        "cpu",
        UnitCache(workdir / "units"),
    )  # fmt: skip
    scores, _ = causal.baselines(pairs, _causal_params(), "mini", 0)  # anm, igci: one per rank
    return {
        "statistics": stats,
        "info": info,
        "baselines": scores,
        "cached": sorted(p.name for p in (workdir / "units").rglob("*.pt")),
    }


def main(out: str, workdir: str) -> None:
    w = distributed.init("cpu")
    torch.set_num_threads(1)
    result = {"size": w.size, "gan": gan_grid(Path(workdir)), "cgan": cgan_units(Path(workdir))}
    if w.is_main:
        Path(out).write_bytes(pickle.dumps(result))
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:3])
