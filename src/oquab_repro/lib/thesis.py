"""The thesis' tables as ``reference/thesis_numbers.yaml`` declares them: the one place that names
the thesis' rows ("PRE-1000C", "NO PRETRAIN"...) and says which of our metrics each row is."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def thesis_rows(reference: dict[str, Any], table_id: str) -> dict[str, tuple[str, float | None]]:
    """Our name of each row (the last part of its first metric key, e.g. the variant in
    ``transfer:map_voc07.<variant>``) → (the thesis' row label, the thesis' first value)."""
    for table in reference["tables"]:
        if table["id"] == table_id:
            return {
                row["ours"][0].rsplit(".", 1)[-1]: (row["label"], row["thesis"][0])
                for row in table["rows"]
            }
    raise KeyError(
        f"src/oquab_repro/reference/thesis_numbers.yaml: no table with id '{table_id}'; "
        "add it (see its header)."
    )


def row_labels(reference: dict[str, Any], table_id: str, names: Iterable[str]) -> dict[str, str]:
    """The thesis' row label of each of our names (the name itself when the thesis has no such
    row)."""
    rows = thesis_rows(reference, table_id)
    return {n: rows[n][0] if n in rows else n for n in names}
