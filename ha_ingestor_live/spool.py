"""Write-ahead spool: every frame received (and every command sent) before anything else.

Append-only segment files of checksummed records. A record is durable once ``append_batch``
returns under the ``batch`` fsync policy (group commit: one fsync per batch of frames). After
a crash the spool is read back from the last committed sequence number; a torn tail (a
record cut short by the crash) ends the readable spool and is reported, never guessed at.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ha_ingestor_lake.durable import fsync_path

MAGIC = b"HS"
# magic, kind, conn, seq, received_at, payload length, crc32 of everything after the magic but the crc
HEADER = struct.Struct("<2scQQdII")
SEGMENT_BYTES = 64 * 1024 * 1024
IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)


INBOUND = b"I"
OUTBOUND = b"O"


class FsyncPolicy(StrEnum):
    BATCH = "batch"
    INTERVAL = "interval"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    seq: int
    kind: bytes
    conn: int
    received_at: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolDamage:
    segment: Path
    offset: int
    reason: str
    raw: bytes


def record_header(kind: bytes, conn: int, seq: int, received_at: float, payload: bytes) -> bytes:
    """The header that precedes ``payload`` in the spool (the record is header + payload)."""
    body = HEADER.pack(MAGIC, kind, conn, seq, received_at, len(payload), 0)[2:-4]
    crc = zlib.crc32(payload, zlib.crc32(body))
    return MAGIC + body + crc.to_bytes(4, "little")


class Spool:
    """Segmented append-only log under ``directory``; one writer at a time."""

    def __init__(
        self,
        directory: Path,
        fsync: FsyncPolicy = FsyncPolicy.BATCH,
        fsync_interval_s: float = 0.05,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._file = None
        self._segment_size = 0
        self._last_fsync = 0.0
        self.next_seq = 1

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.wal"))

    def read(self, after_seq: int, damage: list[SpoolDamage]) -> Iterator[SpoolRecord]:
        """Records with ``seq > after_seq`` in order; unreadable bytes are appended to ``damage``."""
        for segment in self.segments():
            data = segment.read_bytes()
            offset = 0
            while offset < len(data):
                header = data[offset : offset + HEADER.size]
                if len(header) < HEADER.size:
                    damage.append(SpoolDamage(segment, offset, "torn record header at end of segment", data[offset:]))
                    break
                magic, kind, conn, seq, received_at, length, crc = HEADER.unpack(header)
                payload = data[offset + HEADER.size : offset + HEADER.size + length]
                if magic != MAGIC or len(payload) < length or zlib.crc32(payload, zlib.crc32(header[2:-4])) != crc:
                    reason = (
                        "bad magic"
                        if magic != MAGIC
                        else ("torn record at end of segment" if len(payload) < length else "checksum mismatch")
                    )
                    damage.append(SpoolDamage(segment, offset, reason, data[offset:]))
                    break
                offset += HEADER.size + length
                self.next_seq = max(self.next_seq, seq + 1)
                if seq > after_seq:
                    yield SpoolRecord(seq, kind, conn, received_at, payload)

    def open_new_segment(self) -> None:
        """Start writing a fresh segment (after recovery, never appending after a torn tail)."""
        if self._file is not None:
            self._sync()
            self._file.close()
        path = self.directory / f"{self.next_seq:020d}.wal"
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - owned for the spool's lifetime
        self._segment_size = path.stat().st_size
        fsync_path(self.directory)

    def append_batch(self, records: list[tuple[bytes, int, float, bytes]]) -> int:
        """Append (kind, conn, received_at, payload) records; returns the last sequence number."""
        if self._file is None or self._segment_size >= self.segment_bytes:
            self.open_new_segment()
        # headers and payloads go to the kernel as they are (writev): no copy of the frames into one blob
        chunks = []
        seq = self.next_seq
        for kind, conn, received_at, payload in records:
            chunks.append(record_header(kind, conn, seq, received_at, payload))
            chunks.append(payload)
            seq += 1
        fd = self._file.fileno()
        for start in range(0, len(chunks), IOV_MAX):
            self._segment_size += _write_all(fd, chunks[start : start + IOV_MAX])
        self.next_seq = seq
        if self.fsync is FsyncPolicy.BATCH or (
            self.fsync is FsyncPolicy.INTERVAL and time.monotonic() - self._last_fsync >= self.fsync_interval_s
        ):
            self._sync()
        return self.next_seq - 1

    def _sync(self) -> None:
        if self._file is not None and self.fsync is not FsyncPolicy.OFF:
            os.fsync(self._file.fileno())
            self._last_fsync = time.monotonic()

    def release_through(self, committed_seq: int) -> None:
        """Delete segments whose records are all committed to the lake."""
        segments = self.segments()
        for current, following in zip(segments, segments[1:], strict=False):
            if int(following.stem) - 1 <= committed_seq:
                current.unlink()

    def depth(self, committed_seq: int) -> int:
        return self.next_seq - 1 - committed_seq

    def close(self) -> None:
        if self._file is not None:
            self._sync()
            self._file.close()
            self._file = None


def _write_all(fd: int, chunks: list[bytes]) -> int:
    """``os.writev`` every byte of ``chunks`` (finishing a partial write plainly); returns the byte count."""
    total = sum(map(len, chunks))
    written = os.writev(fd, chunks)
    if written < total:
        rest = memoryview(b"".join(chunks))[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]
    return total
