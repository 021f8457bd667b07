"""oquab-repro: an incremental, end-to-end reproduction of Oquab (2018)
with Kedro, DVC and MLflow."""

import os

__version__ = "0.1.0"

if int(os.environ.get("RANK", "0")) > 0:
    # Under torchrun every rank runs the same nodes: one set of progress bars (rank 0's) is enough.
    # tqdm reads TQDM_* at import, and Kedro imports this package before any module using tqdm.
    os.environ.setdefault("TQDM_DISABLE", "1")
