"""Plot helpers shared by every chapter: headless backend, consistent figure style."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # stages run headless (DVC, CI); never needs a display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def new_figure(
    nrows: int = 1, ncols: int = 1, size: float = 3.2, **kwargs
) -> tuple[Figure, object]:
    """A figure of ``nrows × ncols`` square-ish panels of ``size`` inches, constrained layout."""
    return plt.subplots(
        nrows,
        ncols,
        figsize=(size * ncols, size * nrows),
        layout="constrained",
        squeeze=False,
        **kwargs,
    )
