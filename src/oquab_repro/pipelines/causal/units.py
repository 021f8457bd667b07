"""CGAN-C2ST as independent work units: one unit = one pair's 2E CGANs and their two-sample tests.

A unit's every random draw is seeded by (run seed, pair id) alone, so its result does not depend on
which other units share its stacked model, in which process or rank it runs, or in what order:
:func:`run_units` can be handed any subset of the units (a worker's share, a torch.distributed
rank's share, the units a previous run did not finish) and returns the same per-unit results. Units
are packed by size into stacked models of at most ``pack_members`` CGANs (speed only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import oquab_repro.lib.models.cgan as cgan
from oquab_repro.lib import ensembles
from oquab_repro.lib import twosample as ts
from oquab_repro.lib.ensembles import CGANConfig, EnsembleUnit, TrainedUnit, train_units
from oquab_repro.lib.unit_cache import data_hash, fingerprint
from oquab_repro.params import C2STParams

TESTS = ("knn", "nn", "mmd")
DIRECTIONS = ("a->b", "b->a")  # members [0, E) learn a → b, [E, 2E) learn b → a


@dataclass(frozen=True)
class UnitSettings:
    """Everything a unit's result depends on besides its data."""

    gan: CGANConfig
    tests: C2STParams
    ensemble_size: int
    seed: int

    def key(self) -> str:
        """Cache fingerprint: these settings and the code that computes a unit's result."""
        settings = {
            "gan": asdict(self.gan),
            "tests": self.tests.model_dump(),
            "e": self.ensemble_size,
            "seed": self.seed,
        }
        return fingerprint(settings, [ensembles, cgan, ts, sys.modules[__name__]])


def unit_seed(seed: int, pair_id: str) -> int:
    return seed * 100_003 + int(pair_id)


def inputs_of(pair: dict[str, Any]) -> str:
    return data_hash(pair["a"], pair["b"])


def _unit(pair: dict[str, Any], settings: UnitSettings, device: torch.device) -> EnsembleUnit:
    e = settings.ensemble_size
    a = torch.as_tensor(pair["a"], dtype=torch.float32)[None, :, None].expand(e, -1, -1)
    b = torch.as_tensor(pair["b"], dtype=torch.float32)[None, :, None].expand(e, -1, -1)
    return EnsembleUnit(
        torch.cat([a, b]).to(device),
        torch.cat([b, a]).to(device),
        unit_seed(settings.seed, pair["pair_id"]),
    )


def score_unit(
    pair: dict[str, Any], trained: TrainedUnit, settings: UnitSettings
) -> dict[str, Any]:
    """KNN, NN and MMD statistics of each member's synthetic data against the real pair.

    Synthetic datasets are (a, ĝ(a, z)) for a → b members and (ĝ(b, z), b) for b → a members. The
    MMD kernel width is the median heuristic of the real pair, shared by all 2E datasets so their
    statistics are comparable. Returns (test, direction, member) arrays and member 0's samples.
    """
    e, c2st, seed = (
        settings.ensemble_size,
        settings.tests,
        unit_seed(settings.seed, pair["pair_id"]),
    )
    fake = trained.samples[..., 0].cpu().numpy().astype(np.float64)  # (2E, n)
    real = np.column_stack([pair["a"], pair["b"]])
    joint = np.repeat(real[None], 2 * e, axis=0)
    joint[:e, :, 1], joint[e:, :, 0] = fake[:e], fake[e:]
    width = ts.median_bandwidth(real, np.random.default_rng(seed))
    results = {
        "knn": [
            ts.c2st(real, joint[j], ts.knn_classifier, c2st.test_fraction, seed + j)
            for j in range(2 * e)
        ],
        "nn": ts.c2st_nn_batched(
            np.repeat(real[None], 2 * e, axis=0),
            joint,
            c2st.nn_hidden,
            c2st.nn_epochs,
            c2st.nn_lr,
            c2st.test_fraction,
            seed,
        ),
        "mmd": [ts.mmd_linear(real, joint[j], seed + j, bandwidth=width) for j in range(2 * e)],
    }
    grid = {
        field: np.array([[getattr(r, field) for r in results[t]] for t in TESTS]).reshape(
            len(TESTS), 2, e
        )
        for field in ("statistic", "p_value", "n_test")
    }
    return {**grid, "fake_b": fake[0], "fake_a": fake[e]}


def packs(pairs: list[dict[str, Any]], e: int, pack_members: int) -> list[list[dict[str, Any]]]:
    """Pairs, largest first, in consecutive packs of at most
    ``pack_members`` CGANs (≥ one pair each)."""
    out: list[list[dict[str, Any]]] = []
    for pair in sorted(pairs, key=lambda p: (-len(p["a"]), p["pair_id"])):
        if out and (len(out[-1]) + 1) * 2 * e <= pack_members:
            out[-1].append(pair)
        else:
            out.append([pair])
    return out


def run_units(
    pairs: list[dict[str, Any]],
    settings: UnitSettings,
    device: torch.device,
    pack_members: int,
    progress: bool = False,
    on_done: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train and test the units of ``pairs``; results by pair id,
    independent of how pairs are split.

    ``on_done(pair, result)`` runs as soon as a unit is finished (the stage saves it to its cache).
    """
    torch.set_num_threads(1)  # tiny matmuls: intra-op threading costs more than it saves
    results: dict[str, dict[str, Any]] = {}
    with threadpool_limits(1):
        for pack in packs(pairs, settings.ensemble_size, pack_members):

            def finished(i: int, trained: TrainedUnit, pack: list[dict[str, Any]] = pack) -> None:
                result = score_unit(pack[i], trained, settings)
                results[pack[i]["pair_id"]] = result
                if on_done is not None:
                    on_done(pack[i], result)

            train_units(
                [_unit(p, settings, device) for p in pack],
                settings.gan,
                progress=progress,
                on_done=finished,
            )
    return results
