"""Materialization metadata the domains share: a Markdown preview of a table, its row count and location."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl


def markdown_preview(frame: pl.DataFrame, columns: list[str], rows: int = 5) -> dg.MetadataValue:
    """The first ``rows`` rows of ``columns`` as a Markdown table (values cut to 60 characters)."""
    shown = frame.select([c for c in columns if c in frame.columns]).head(rows)
    cells = [[("" if v is None else str(v))[:60].replace("|", "\\|") for v in row] for row in shown.rows()]
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return dg.MetadataValue.md("\n".join(lines))


def table_metadata(frame: pl.DataFrame, path: str | Path, preview: list[str]) -> dict[str, dg.MetadataValue]:
    return {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "path": dg.MetadataValue.path(str(path)),
        "preview": markdown_preview(frame, preview),
    }
