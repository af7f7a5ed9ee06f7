"""Parquet lake writer with exactly-once commits keyed to spool sequence numbers.

A commit writes every buffered (table, date) batch to a temp file, records the intended
renames in an intent file, renames, then writes the checkpoint (last committed spool seq and
the processor's state) and drops the intent. A crash at any point is finished or undone by
``recover``: rows reach the lake once, whatever moment the process died.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ha_ingestor_lake.durable import fsync_path, write_json_atomically
from ha_ingestor_lake.files import part_name
from ha_ingestor_lake.schema import DICTIONARY_COLUMNS, PARTITION_TIME, SCHEMAS, STATES, TIMESTAMP

from .normalize import Row, partition_date

CHECKPOINT = "checkpoint.json"
INTENT = "commit-intent.json"
STATE_HOME, STATE_ENTITY_ID, STATE_LAST_UPDATED = (STATES.names.index(c) for c in ("home", "entity_id", "last_updated"))


@dataclass
class SealedCommit:
    """Rows buffered through spool seq ``through_seq``, handed from the processor to the commit I/O."""

    first_seq: int
    through_seq: int
    processor_state: msgspec.Raw  # encoded when sealed: the processor goes on changing its own
    batches: dict[tuple[str, str], ColumnBatch]


@dataclass
class CommitResult:
    through_seq: int
    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def table_of(location: str) -> str:
    """``registry/areas`` is stored with the ``registry`` schema."""
    return location.split("/", 1)[0]


class ColumnBatch:
    """The buffered rows of one (location, date), their values in one flat list (row after row, each in
    the table's schema order): one ``extend`` per row, and at commit each column is a strided slice,
    which Arrow converts far faster than it converts rows."""

    __slots__ = ("schema", "width", "values")

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.width = len(schema)
        self.values: list[Any] = []

    def __len__(self) -> int:
        return len(self.values) // self.width

    def add(self, row: Row) -> None:
        if len(row) != self.width:
            raise ValueError(f"a row of {len(row)} values for a table of {self.width} columns")
        self.values.extend(row)

    def column(self, index: int) -> list[Any]:
        return self.values[index :: self.width]

    def rows(self) -> list[Row]:
        return list(zip(*(self.column(i) for i in range(self.width)), strict=True))

    def to_arrow(self) -> pa.Table:
        """The table in its contract schema; timestamps arrive as ISO text and are parsed by Arrow's cast,
        which fails on anything that is not a timestamp."""
        return pa.Table.from_arrays(
            [
                pa.array(self.column(i), pa.string()).cast(TIMESTAMP)
                if field.type == TIMESTAMP
                else pa.array(self.column(i), field.type)
                for i, field in enumerate(self.schema)
            ],
            schema=self.schema,
        )


class LakeWriter:
    """Buffers rows per (location, date) and commits them atomically under ``root``."""

    def __init__(self, root: Path, state_dir: Path, writer_id: str, compression: str = "zstd") -> None:
        self.root = root
        self.state_dir = state_dir
        self.writer_id = writer_id
        self.compression = compression
        root.mkdir(parents=True, exist_ok=True)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._batches: dict[tuple[str, str], ColumnBatch] = {}
        self._time_columns: dict[str, int] = {}
        self.buffered_bytes = 0
        self.committed_seq = 0
        self.sealed_seq = 0
        self._in_flight: deque[SealedCommit] = deque()  # sealed, not yet committed, oldest first

    @property
    def buffered_rows(self) -> int:
        return sum(len(batch) for batch in self._batches.values())

    def batch(self, location: str, date: str) -> ColumnBatch:
        """The batch that rows of ``location`` dated ``date`` (``YYYY-MM-DD``) go to."""
        batch = self._batches.get((location, date))
        if batch is None:
            batch = self._batches[(location, date)] = ColumnBatch(SCHEMAS[table_of(location)])
        return batch

    def add(self, location: str, row: Row, size: int = 0) -> None:
        """Buffer a row (values in schema order); ``size`` (its big text, roughly) counts toward
        ``buffered_bytes``."""
        time_column = self._time_columns.get(location)
        if time_column is None:
            table = table_of(location)
            time_column = self._time_columns[location] = SCHEMAS[table].names.index(PARTITION_TIME[table])
        self.batch(location, row[time_column][:10]).add(row)
        self.buffered_bytes += size

    def buffered_rows_of(self, location: str) -> list[Row]:
        """Rows of ``location`` not committed yet: sealed ones first, then those still buffered."""
        batches = [batch for sealed in list(self._in_flight) for batch in sealed.batches.items()]
        return [
            row for (loc, _), batch in batches + list(self._batches.items()) if loc == location for row in batch.rows()
        ]

    def commit(self, through_seq: int, processor_state: dict[str, Any]) -> CommitResult:
        """Seal and write at once (the processor thread seals, and a commit thread writes)."""
        return self.write(self.seal(through_seq, processor_state))

    def seal(self, through_seq: int, processor_state: dict[str, Any]) -> SealedCommit:
        """Take every buffered row, with the processor's state as of ``through_seq``, for ``write``."""
        sealed = SealedCommit(
            self.sealed_seq + 1, through_seq, msgspec.Raw(msgspec.json.encode(processor_state)), self._batches
        )
        self._batches = {}
        self.buffered_bytes = 0
        self.sealed_seq = through_seq
        self._in_flight.append(sealed)
        return sealed

    def write(self, sealed: SealedCommit) -> CommitResult:
        """Commit sealed rows atomically; sealed commits must be written in the order they were sealed."""
        if not self._in_flight or self._in_flight[0] is not sealed:
            raise RuntimeError(f"commit through seq {sealed.through_seq} written out of order")
        started = time.perf_counter()
        through_seq, processor_state = sealed.through_seq, sealed.processor_state
        result = CommitResult(through_seq)
        renames: list[tuple[str, str]] = []
        for (location, date), batch in sealed.batches.items():
            if not len(batch):
                continue
            table = batch.to_arrow()
            directory = self.root / location / f"date={date}"
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / part_name(sealed.first_seq, through_seq, self.writer_id)
            temp = final.with_name(final.name + ".tmp")
            pq.write_table(
                table, temp, compression=self.compression, use_dictionary=DICTIONARY_COLUMNS[table_of(location)]
            )
            fsync_path(temp)
            renames.append((str(temp), str(final)))
            result.rows[location] = result.rows.get(location, 0) + table.num_rows
            result.files.append(final)
        if renames:
            write_json_atomically(
                self.state_dir / INTENT, {"through_seq": through_seq, "renames": renames, "processor": processor_state}
            )
            _apply_renames(renames)
        write_json_atomically(self.state_dir / CHECKPOINT, {"committed_seq": through_seq, "processor": processor_state})
        if renames:
            (self.state_dir / INTENT).unlink()
        self.committed_seq = through_seq
        self._in_flight.popleft()
        result.seconds = time.perf_counter() - started
        return result

    def recover(self) -> dict[str, Any]:
        """Finish or undo an interrupted commit; returns the processor state of the last checkpoint."""
        intent_path = self.state_dir / INTENT
        if intent_path.exists():
            intent = msgspec.json.decode(intent_path.read_bytes())
            _apply_renames([tuple(pair) for pair in intent["renames"]])
            write_json_atomically(
                self.state_dir / CHECKPOINT, {"committed_seq": intent["through_seq"], "processor": intent["processor"]}
            )
            intent_path.unlink()
        for stray in self.root.rglob(f"part-*-{self.writer_id}.parquet.tmp"):
            stray.unlink()
        checkpoint_path = self.state_dir / CHECKPOINT
        if not checkpoint_path.exists():
            return {}
        checkpoint = msgspec.json.decode(checkpoint_path.read_bytes())
        self.committed_seq = self.sealed_seq = checkpoint["committed_seq"]
        return checkpoint["processor"]

    def existing_state_keys(self, home: str, rows: list[Row]) -> set[tuple[str, int]]:
        """(entity_id, last_updated in µs) of committed and buffered states that ``rows`` may repeat."""
        if not rows:
            return set()
        # uncommitted rows before committed files: a commit that ends in between is then seen in one of them
        buffered = [row for row in self.buffered_rows_of("states") if row[STATE_HOME] == home]
        entity_ids = pa.array(sorted({row[STATE_ENTITY_ID] for row in rows}))
        keys: set[tuple[str, int]] = set()
        for date in sorted({partition_date(row[STATE_LAST_UPDATED]) for row in rows}):
            keys.update(_state_keys_of_day(self.root / "states" / f"date={date}", home, entity_ids))
        if buffered:
            times = iso_to_micros([row[STATE_LAST_UPDATED] for row in buffered])
            keys.update((row[STATE_ENTITY_ID], us) for row, us in zip(buffered, times, strict=True))
        return keys


def _state_keys_of_day(directory: Path, home: str, entity_ids: pa.Array, attempts: int = 3) -> set[tuple[str, int]]:
    """Keys of one day's committed states. A compaction may replace files while they are listed: list again."""
    for attempt in range(attempts):
        keys: set[tuple[str, int]] = set()
        try:
            for path in directory.glob("*.parquet"):
                table = pq.read_table(path, columns=["home", "entity_id", "last_updated"])
                table = table.filter(
                    pc.and_(pc.equal(table["home"], home), pc.is_in(table["entity_id"], value_set=entity_ids))
                )
                keys.update(
                    zip(table["entity_id"].to_pylist(), table["last_updated"].cast(pa.int64()).to_pylist(), strict=True)
                )
            return keys
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    return set()


def iso_to_micros(values: list[str]) -> list[int]:
    return pa.array(values, pa.string()).cast(TIMESTAMP).cast(pa.int64()).to_pylist()


def _apply_renames(renames: list[tuple[str, str]]) -> None:
    directories = set()
    for temp, final in renames:
        if os.path.exists(temp):
            os.replace(temp, final)
        directories.add(os.path.dirname(final))
    for directory in directories:
        fsync_path(directory)
