"""Parquet lake writer with exactly-once commits keyed to spool sequence numbers.

A commit writes every buffered (table, date) batch to a temp file, records the intended
renames in an intent file, renames, then writes the checkpoint (last committed spool seq and
the processor's state) and drops the intent. A crash at any point is finished or undone by
``recover``: rows reach the lake once, whatever moment the process died.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .durable_io import fsync_path, write_json_atomically
from .lake_schema import PARTITION_TIME, SCHEMAS, TIMESTAMP
from .normalize import Row, partition_date

CHECKPOINT = "checkpoint.json"
INTENT = "commit-intent.json"


@dataclass
class CommitResult:
    through_seq: int
    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def table_of(location: str) -> str:
    """``registry/areas`` is stored with the ``registry`` schema."""
    return location.split("/", 1)[0]


class LakeWriter:
    """Buffers rows per (location, date) and commits them atomically under ``root``."""

    def __init__(self, root: Path, state_dir: Path, writer_id: str, compression: str = "zstd") -> None:
        self.root = root
        self.state_dir = state_dir
        self.writer_id = writer_id
        self.compression = compression
        root.mkdir(parents=True, exist_ok=True)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._buffers: dict[tuple[str, str], list[Row]] = {}
        self._time_columns: dict[str, str] = {}
        self.buffered_rows = 0
        self.buffered_bytes = 0
        self.committed_seq = 0

    def add(self, location: str, row: Row, size: int = 0) -> None:
        """Buffer a row; ``size`` (its big text, roughly) counts toward ``buffered_bytes``."""
        time_column = self._time_columns.get(location)
        if time_column is None:
            time_column = self._time_columns[location] = PARTITION_TIME[table_of(location)]
        key = (location, row[time_column][:10])
        rows = self._buffers.get(key)
        if rows is None:
            rows = self._buffers[key] = []
        rows.append(row)
        self.buffered_rows += 1
        self.buffered_bytes += size

    def buffered_keys(self, location: str, key_columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
        return [tuple(row[c] for c in key_columns) for (loc, _), rows in self._buffers.items() if loc == location
                for row in rows]

    def commit(self, through_seq: int, processor_state: dict[str, Any]) -> CommitResult:
        started = time.perf_counter()
        result = CommitResult(through_seq)
        renames: list[tuple[str, str]] = []
        for (location, date), rows in self._buffers.items():
            table = to_arrow(table_of(location), rows)
            directory = self.root / location / f"date={date}"
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / f"part-{self.committed_seq + 1:012d}-{through_seq:012d}-{self.writer_id}.parquet"
            temp = final.with_name(final.name + ".tmp")
            pq.write_table(table, temp, compression=self.compression)
            fsync_path(temp)
            renames.append((str(temp), str(final)))
            result.rows[location] = result.rows.get(location, 0) + table.num_rows
            result.files.append(final)
        if renames:
            write_json_atomically(self.state_dir / INTENT,
                                   {"through_seq": through_seq, "renames": renames, "processor": processor_state})
            _apply_renames(renames)
        write_json_atomically(self.state_dir / CHECKPOINT,
                               {"committed_seq": through_seq, "processor": processor_state})
        if renames:
            (self.state_dir / INTENT).unlink()
        self._buffers.clear()
        self.buffered_rows = 0
        self.buffered_bytes = 0
        self.committed_seq = through_seq
        result.seconds = time.perf_counter() - started
        return result

    def recover(self) -> dict[str, Any]:
        """Finish or undo an interrupted commit; returns the processor state of the last checkpoint."""
        intent_path = self.state_dir / INTENT
        if intent_path.exists():
            intent = msgspec.json.decode(intent_path.read_bytes())
            _apply_renames([tuple(pair) for pair in intent["renames"]])
            write_json_atomically(self.state_dir / CHECKPOINT,
                                   {"committed_seq": intent["through_seq"], "processor": intent["processor"]})
            intent_path.unlink()
        for stray in self.root.rglob(f"part-*-{self.writer_id}.parquet.tmp"):
            stray.unlink()
        checkpoint_path = self.state_dir / CHECKPOINT
        if not checkpoint_path.exists():
            return {}
        checkpoint = msgspec.json.decode(checkpoint_path.read_bytes())
        self.committed_seq = checkpoint["committed_seq"]
        return checkpoint["processor"]

    def existing_state_keys(self, home: str, rows: list[Row]) -> set[tuple[str, int]]:
        """(entity_id, last_updated in µs) of committed and buffered states that ``rows`` may repeat."""
        if not rows:
            return set()
        entity_ids = pa.array(sorted({row["entity_id"] for row in rows}))
        keys: set[tuple[str, int]] = set()
        for date in sorted({partition_date(row["last_updated"]) for row in rows}):
            keys.update(_state_keys_of_day(self.root / "states" / f"date={date}", home, entity_ids))
        buffered = self.buffered_keys("states", ("home", "entity_id", "last_updated"))
        if buffered:
            times = iso_to_micros([lu for _, _, lu in buffered])
            keys.update((eid, us) for (h, eid, _), us in zip(buffered, times, strict=True) if h == home)
        return keys


def _state_keys_of_day(directory: Path, home: str, entity_ids: pa.Array, attempts: int = 3) -> set[tuple[str, int]]:
    """Keys of one day's committed states. A compaction may replace files while they are listed: list again."""
    for attempt in range(attempts):
        keys: set[tuple[str, int]] = set()
        try:
            for path in directory.glob("*.parquet"):
                table = pq.read_table(path, columns=["home", "entity_id", "last_updated"])
                table = table.filter(pc.and_(pc.equal(table["home"], home),
                                             pc.is_in(table["entity_id"], value_set=entity_ids)))
                keys.update(zip(table["entity_id"].to_pylist(),
                                table["last_updated"].cast(pa.int64()).to_pylist(), strict=True))
            return keys
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    return set()


def iso_to_micros(values: list[str]) -> list[int]:
    return pa.array(values, pa.string()).cast(TIMESTAMP).cast(pa.int64()).to_pylist()


def to_arrow(table: str, rows: list[Row]) -> pa.Table:
    """Rows to the table's contract schema, converted in Arrow's C++ (timestamps arrive as ISO text)."""
    schema = SCHEMAS[table]
    as_text = pa.struct([(f.name, pa.string() if f.type == TIMESTAMP else f.type) for f in schema])
    return pa.Table.from_struct_array(pa.array(rows, type=as_text)).cast(schema)


def _apply_renames(renames: list[tuple[str, str]]) -> None:
    directories = set()
    for temp, final in renames:
        if os.path.exists(temp):
            os.replace(temp, final)
        directories.add(os.path.dirname(final))
    for directory in directories:
        fsync_path(directory)
