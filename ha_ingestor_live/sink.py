"""The durability pipeline behind the read loop: spool thread, then processor thread.

The read loop only appends to an in-memory queue (it never waits on disk). The spool thread
writes each batch to the write-ahead spool with one fsync (group commit); the processor
thread turns durable records into rows and, on a row, byte or time budget, seals them; the
commit thread writes sealed rows to the lake, in order, while the processor goes on (so the
processor never waits for the commit's fsyncs, only for a commit thread that is a whole
commit behind).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .lake_writer import CommitResult, LakeWriter
from .processor import Processor
from .spool import Spool, SpoolRecord

log = logging.getLogger(__name__)

_STOP = object()
MAX_BATCH = 20_000


@dataclass
class SinkStats:
    frames_submitted: int = 0
    records_processed: int = 0
    commits: int = 0
    rows_committed: dict[str, int] = field(default_factory=dict)
    last_commit: CommitResult | None = None
    # seconds from receipt to durable spool, for the most recent frames
    spool_latency: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))


class DurableSink:
    def __init__(
        self,
        spool: Spool,
        processor: Processor,
        lake: LakeWriter,
        *,
        flush_rows: int = 100_000,
        flush_bytes: int = 16 << 20,
        flush_interval_s: float = 10.0,
    ) -> None:
        self.spool = spool
        self.processor = processor
        self.lake = lake
        self.flush_rows = flush_rows
        self.flush_bytes = flush_bytes
        self.flush_interval_s = flush_interval_s
        self.stats = SinkStats()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._durable: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._sealed: queue.Queue[object] = queue.Queue(maxsize=1)  # memory: one commit waits, one is written
        self._threads = [
            threading.Thread(target=self._spool_loop, name="spool", daemon=True),
            threading.Thread(target=self._process_loop, name="processor", daemon=True),
            threading.Thread(target=self._commit_loop, name="committer", daemon=True),
        ]
        self.failure: BaseException | None = None
        self._commit_requested = threading.Event()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, kind: bytes, conn: int, received_at: float, payload: bytes) -> None:
        """Called from the read loop: O(1), never blocks."""
        self.stats.frames_submitted += 1
        self._inbox.put((kind, conn, received_at, payload))

    def caught_up(self) -> bool:
        return self.stats.records_processed >= self.stats.frames_submitted

    def request_commit(self) -> None:
        self._commit_requested.set()

    def alive(self) -> bool:
        return self.failure is None and all(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 60.0) -> None:
        """Spool and process everything submitted, commit, and stop the threads."""
        self._inbox.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        self.spool.close()

    def _spool_loop(self) -> None:
        try:
            while True:
                item = self._inbox.get()
                batch = []
                stopping = item is _STOP
                if not stopping:
                    batch.append(item)
                    while len(batch) < MAX_BATCH:
                        try:
                            item = self._inbox.get_nowait()
                        except queue.Empty:
                            break
                        if item is _STOP:
                            stopping = True
                            break
                        batch.append(item)
                if batch:
                    last_seq = self.spool.append_batch(batch)
                    durable_at = time.time()
                    self.stats.spool_latency.extend(durable_at - received_at for _, _, received_at, _ in batch)
                    self._durable.put((last_seq - len(batch) + 1, batch))
                if stopping:
                    self._durable.put(_STOP)
                    return
        except BaseException as exc:  # the collector checks alive() and stops: nothing is acknowledged
            self.failure = exc
            log.exception("spool writer failed")
            self._durable.put(_STOP)

    def _process_loop(self) -> None:
        last_commit = time.monotonic()
        try:
            while True:
                timeout = max(0.05, self.flush_interval_s - (time.monotonic() - last_commit))
                try:
                    item = self._durable.get(timeout=min(timeout, 0.5))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    self._seal()
                    self._hand_over(_STOP)
                    return
                if item is not None:
                    first_seq, batch = item
                    for offset, (kind, conn, received_at, payload) in enumerate(batch):
                        self.processor.process(SpoolRecord(first_seq + offset, kind, conn, received_at, payload))
                    self.stats.records_processed += len(batch)
                due = (
                    self.lake.buffered_rows >= self.flush_rows
                    or self.lake.buffered_bytes >= self.flush_bytes
                    or time.monotonic() - last_commit >= self.flush_interval_s
                    or self._commit_requested.is_set()
                )
                if due:
                    self._commit_requested.clear()
                    self._seal()
                    last_commit = time.monotonic()
        except BaseException as exc:
            self.failure = exc
            log.exception("processor failed")
            with contextlib.suppress(queue.Full):
                self._sealed.put_nowait(_STOP)

    def _seal(self) -> None:
        seq = self.processor.processed_seq
        if seq > self.lake.sealed_seq:
            self._hand_over(self.lake.seal(seq, self.processor.state()))

    def _hand_over(self, item: object) -> None:
        """Queue for the commit thread; waits while it is a commit behind, unless it has died."""
        while True:
            try:
                self._sealed.put(item, timeout=0.5)
                return
            except queue.Full:
                if self.failure is not None:
                    raise RuntimeError("the commit thread has failed") from self.failure

    def _commit_loop(self) -> None:
        try:
            while (sealed := self._sealed.get()) is not _STOP:
                result = self.lake.write(sealed)
                self.spool.release_through(sealed.through_seq)
                self.stats.commits += 1
                self.stats.last_commit = result
                for location, rows in result.rows.items():
                    self.stats.rows_committed[location] = self.stats.rows_committed.get(location, 0) + rows
                if result.files:
                    log.info(
                        "committed %d rows in %d files through spool seq %d (%.2f s)",
                        sum(result.rows.values()),
                        len(result.files),
                        sealed.through_seq,
                        result.seconds,
                    )
        except BaseException as exc:  # the collector checks alive() and stops; the spool keeps the rows
            self.failure = exc
            log.exception("lake commit failed")
