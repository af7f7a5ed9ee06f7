"""fsync helpers: a rename or a new file is durable only once its directory is synced too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as handle:
        handle.write(msgspec.json.encode(document))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_path(path.parent)
