"""Run under torchrun by tests/test_distributed.py: shares units among the ranks and gathers them.

Rank 0 writes what every rank saw to the JSON file given as argument, so the test can compare it
with a world of one.
"""

from __future__ import annotations

import json
import sys

from oquab_repro.lib import distributed


def unit(i: int) -> dict[str, float]:
    return {"id": i, "square": float(i * i), "rank_free": sum(range(i))}


def main(out: str) -> None:
    w = distributed.init("cpu")
    units = list(range(11))
    costs = [1 + (i % 4) for i in units]
    mine = distributed.shard(units, costs)
    results = distributed.map_units(unit, units, costs)
    shards = distributed.gather(mine)
    token = distributed.broadcast(f"from-rank-{w.rank}")
    if w.is_main:
        payload = {"size": w.size, "results": results, "shards": shards, "token": token}
        with open(out, "w") as handle:
            json.dump(payload, handle)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
