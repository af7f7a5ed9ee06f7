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


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader sees the old file or the new one, never a part (``<name>.tmp``,
    fsync, rename, fsync of the directory)."""
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
    replace_durably(temp, path)


def replace_durably(written: Path, path: Path) -> None:
    """Put the finished file ``written`` in the place of ``path`` for good: fsync it, rename it over ``path``,
    fsync the directory (the one way this project publishes a whole file)."""
    fsync_path(written)
    os.replace(written, path)
    fsync_path(path.parent)


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    write_bytes_atomically(path, msgspec.json.encode(document))
