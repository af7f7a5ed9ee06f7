"""The collector's own record of its connection sessions, one lake row each.

A session is one authenticated connection to Home Assistant. Its row says when it began and ended,
the gap in the event stream it closed and what the history backfill gave back for it, and the
collector's own counters for what it received. The row lives alone in
``collector_sessions/date=YYYY-MM-DD/session-<session_id>-<collector_id>.parquet`` (the UTC date of
``connected_at``) and is replaced atomically whenever the figures change, so a reader sees a whole row
that is at most one update interval old, even after a kill -9.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from ha_ingestor_lake.durable import write_bytes_atomically
from ha_ingestor_lake.schema import COLLECTOR_SESSIONS
from ha_ingestor_lake.schema import COLLECTOR_SESSIONS_LOCATION as TABLE


@dataclass(frozen=True)
class SessionCounters:
    """The collector's process-wide tallies at one instant; a session's figures are the difference between two."""

    events_received: int = 0
    events_committed: int = 0
    quarantined: int = 0
    backfill_rows: int = 0
    frames_received: int = 0

    def __sub__(self, other: SessionCounters) -> SessionCounters:
        return SessionCounters(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


class _EventTime(msgspec.Struct):
    time_fired: str


class _Message(msgspec.Struct):
    type: str
    event: _EventTime | None = None


_event_times = msgspec.json.Decoder(list[_Message] | _Message)


def first_event_time(frame: bytes) -> dt.datetime | None:
    """The earliest ``time_fired`` among the events of a frame, or None when it holds no (readable) event."""
    if b'"event"' not in frame:
        return None
    try:
        decoded = _event_times.decode(frame)
    except msgspec.DecodeError:
        return None  # the processor quarantines it
    times = []
    for message in decoded if isinstance(decoded, list) else (decoded,):
        if message.type == "event" and message.event is not None:
            try:
                times.append(dt.datetime.fromisoformat(message.event.time_fired).astimezone(dt.UTC))
            except ValueError:
                continue
    return min(times, default=None)


def parse_time(iso: str | None) -> dt.datetime | None:
    return None if iso is None else dt.datetime.fromisoformat(iso).astimezone(dt.UTC)


@dataclass
class SessionRecord:
    """One session's row while it is being written; ``counters`` are the session's own (already differenced)."""

    collector_id: str
    session_id: int
    home: str
    reconnects: int
    gap_start: dt.datetime | None
    connected_at: dt.datetime | None = None
    ha_version: str | None = None
    disconnected_at: dt.datetime | None = None
    disconnect_reason: str | None = None
    first_event_at: dt.datetime | None = None
    backfill_from: dt.datetime | None = None
    last_event_time: dt.datetime | None = None
    counters: SessionCounters = field(default_factory=SessionCounters)

    def note_frame(self, frame: bytes) -> None:
        """Called for each received frame until the first event: its time ends the gap this session closed."""
        self.first_event_at = first_event_time(frame)

    def row(self, updated_at: dt.datetime) -> dict[str, object]:
        counters = self.counters
        return {
            "home": self.home,
            "collector_id": self.collector_id,
            "session_id": self.session_id,
            "connected_at": self.connected_at,
            "ha_version": self.ha_version,
            "disconnected_at": self.disconnected_at,
            "disconnect_reason": self.disconnect_reason,
            "gap_start": self.gap_start,
            "gap_end": self.first_event_at or self.connected_at,
            "backfill_from": self.backfill_from,
            "backfill_rows": counters.backfill_rows,
            "last_event_time": self.last_event_time,
            "events_received": counters.events_received,
            "events_committed": counters.events_committed,
            "quarantined": counters.quarantined,
            "frames_received": counters.frames_received,
            "reconnects": self.reconnects,
            "updated_at": updated_at,
        }


class SessionLog:
    """Writes session rows under ``<lake>/collector_sessions``; removes this collector's stray temp files."""

    def __init__(self, lake_root: Path, collector_id: str) -> None:
        self.root = lake_root / TABLE
        self.collector_id = collector_id
        for stray in self.root.glob(f"date=*/session-*-{collector_id}.parquet.tmp"):
            stray.unlink(missing_ok=True)

    def path(self, record: SessionRecord) -> Path:
        assert record.connected_at is not None
        return (
            self.root
            / f"date={record.connected_at.date().isoformat()}"
            / f"session-{record.session_id}-{record.collector_id}.parquet"
        )

    def write(self, record: SessionRecord) -> Path:
        """Replace the session's file with its current row (temp file, fsync, rename)."""
        path = self.path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([record.row(dt.datetime.now(dt.UTC))], schema=COLLECTOR_SESSIONS)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        write_bytes_atomically(path, sink.getvalue().to_pybytes())
        return path
