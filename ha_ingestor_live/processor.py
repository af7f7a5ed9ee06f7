"""Deterministic spool-record processor: the only place where frames become lake rows.

It keeps the small protocol state that turning a result into rows needs (which command an
id answers, which id is the event subscription, the home's name) and persists it with every
checkpoint, so replaying the spool after a crash produces exactly the rows the first pass did.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec

from ha_ingestor_lake.schema import EVENTS, REGISTRY, STATES, home_from_config

from .lake_writer import STATE_ENTITY_ID, STATE_LAST_UPDATED, LakeWriter, iso_to_micros
from .messages import EventEnvelope, any_decoder, event_frame_decoder
from .normalize import (
    MalformedMessage,
    Row,
    event_rows,
    history_state_rows,
    registry_rows,
    snapshot_state_rows,
)
from .spool import OUTBOUND, SpoolRecord

log = logging.getLogger(__name__)

REGISTRY_COMMANDS = {
    "get_config": "core_config",
    "get_services": "services",
    "config/area_registry/list": "areas",
    "config/floor_registry/list": "floors",
    "config/label_registry/list": "labels",
    "config/device_registry/list": "devices",
    "config/entity_registry/list": "entities",
    "config_entries/get": "config_entries",
    "automation/config": "automations",
    "script/config": "scripts",
}
# events after which a registry is stale: the collector re-fetches it
REGISTRY_EVENTS = {
    "area_registry_updated": "areas",
    "floor_registry_updated": "floors",
    "label_registry_updated": "labels",
    "device_registry_updated": "devices",
    "entity_registry_updated": "entities",
    "automation_reloaded": "automations",
}
# scripts fire no reload event of their own: the reload service call is the signal
RELOAD_SERVICE_DOMAINS = {"script": "scripts", "automation": "automations"}
CONTROL_TYPES = frozenset({"pong", "auth_required", "auth_ok", "auth_invalid"})
EVENT_TIME_FIRED, EVENT_DATA = EVENTS.names.index("time_fired"), EVENTS.names.index("data")
STATE_ATTRIBUTES = STATES.names.index("attributes")
REGISTRY_DATA = REGISTRY.names.index("data")
_NO_RAW_TEXTS: dict[int, bytes] = {}


def _utc_iso(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat()


class Processor:
    """Feeds spool records into a ``LakeWriter``; call ``state()`` to checkpoint it."""

    def __init__(
        self,
        lake: LakeWriter,
        *,
        home: str | None = None,
        max_message_bytes: int = 4 << 20,
        on_registry_stale: Callable[[str], None] | None = None,
    ) -> None:
        self.lake = lake
        self.home_override = home
        self.max_message_bytes = max_message_bytes
        self.on_registry_stale = on_registry_stale
        self.home: str = home or "home"
        self.pending: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, int] = {}
        self.last_event_time: str | None = None
        self.latest_state: dict[str, str] = {}
        self.processed_seq = 0
        self.current_conn = 0
        self._counts: Counter[str] = Counter()  # the rare ones; the hot path counts in plain ints
        self.events_seen = 0
        self.live_states_seen = 0

    @property
    def counts(self) -> Counter[str]:
        """Messages and rows produced since start: events, states (live, snapshot, backfilled), snapshot,
        backfilled, quarantined, command_errors."""
        counts = Counter(self._counts)
        counts["events"] = self.events_seen
        counts["states"] += self.live_states_seen
        return counts

    def state(self) -> dict[str, Any]:
        return {
            "home": self.home,
            "pending": self.pending,
            "subscriptions": self.subscriptions,
            "last_event_time": self.last_event_time,
            "latest_state": self.latest_state,
            "current_conn": self.current_conn,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.home = self.home_override or state.get("home") or self.home
        self.pending = dict(state.get("pending", {}))
        self.subscriptions = dict(state.get("subscriptions", {}))
        self.last_event_time = state.get("last_event_time")
        self.latest_state = dict(state.get("latest_state", {}))
        self.current_conn = state.get("current_conn", 0)

    def process(self, record: SpoolRecord) -> None:
        received_at = _utc_iso(record.received_at)
        if record.conn != self.current_conn:
            self._forget_other_connections(record.conn)
        if record.kind == OUTBOUND:
            self._remember_command(record)
        else:
            subscription = self.subscriptions.get(str(record.conn))
            messages, raw_texts = self._messages(record, received_at)
            handle_event = self._handle_event
            for message in messages:
                try:
                    if message.type == "event":
                        handle_event(subscription, message, received_at, record.seq)
                    else:
                        self._handle(record, message, received_at)
                        # a coalesced frame may hold the subscription's reply and then its first events
                        subscription = self.subscriptions.get(str(record.conn))
                except MalformedMessage as exc:
                    raw = raw_texts.get(id(message)) or msgspec.json.encode(message)
                    self.quarantine(received_at, record.seq, "message", str(exc), raw)
                except Exception as exc:  # a message we cannot handle must not stop the ones after it
                    log.exception("could not process a message of spool record %d", record.seq)
                    self.quarantine(
                        received_at,
                        record.seq,
                        "message",
                        f"processing error: {exc!r}",
                        raw_texts.get(id(message)) or msgspec.json.encode(message),
                    )
        self.processed_seq = record.seq

    def quarantine(self, received_at: str, spool_seq: int | None, stage: str, reason: str, raw: bytes) -> None:
        """Land input that cannot become rows, with the reason; ``spool_seq`` is the record it came from (None for
        bytes of a damaged spool, which no record holds)."""
        self._counts["quarantined"] += 1
        log.warning("quarantined (%s): %s", stage, reason)
        # QUARANTINE column order
        row = (self.home, received_at, stage, reason, raw.decode("utf-8", "backslashreplace"), spool_seq)
        self.lake.add("quarantine", row, len(raw))

    def _forget_other_connections(self, conn: int) -> None:
        """Replies and events of a closed connection never come: drop what waited for them."""
        prefix = f"{conn}:"
        self.pending = {key: cmd for key, cmd in self.pending.items() if key.startswith(prefix)}
        self.subscriptions = {key: sid for key, sid in self.subscriptions.items() if key == str(conn)}
        self.current_conn = conn

    def _remember_command(self, record: SpoolRecord) -> None:
        command = any_decoder.decode(record.payload)
        if isinstance(command, dict) and isinstance(command.get("id"), int):
            kept = {k: v for k, v in command.items() if k != "entity_ids"}
            self.pending[f"{record.conn}:{command['id']}"] = kept

    def _messages(self, record: SpoolRecord, received_at: str) -> tuple[list[EventEnvelope], dict[int, bytes]]:
        """The frame's messages, events already typed, and the raw text of those that had to be parsed one
        by one (by ``id()``); what does not parse is quarantined here, message by message (the raw text
        kept), and the rest of the frame goes on."""
        try:
            decoded = event_frame_decoder.decode(record.payload)
            return (decoded if isinstance(decoded, list) else [decoded]), _NO_RAW_TEXTS
        except msgspec.DecodeError as exc:
            first_error = str(exc)
        try:
            parsed = any_decoder.decode(record.payload)
        except msgspec.DecodeError:
            self.quarantine(received_at, record.seq, "frame", f"invalid JSON: {first_error}", record.payload)
            return [], _NO_RAW_TEXTS
        messages, raw_texts = [], {}
        for item in parsed if isinstance(parsed, list) else [parsed]:
            raw = msgspec.json.encode(item)
            try:
                message = msgspec.json.decode(raw, type=EventEnvelope)
            except msgspec.DecodeError as exc:
                what = "event" if isinstance(item, dict) and item.get("type") == "event" else "message"
                self.quarantine(received_at, record.seq, "frame", f"unexpected {what} shape: {exc}", raw)
                continue
            messages.append(message)
            raw_texts[id(message)] = raw
        return messages, raw_texts

    def _handle(self, record: SpoolRecord, message: EventEnvelope, received_at: str) -> None:
        if message.type == "result":
            self._handle_result(record, message, received_at)
        elif message.type == "pong":
            self.pending.pop(f"{record.conn}:{message.id}", None)
        elif message.type not in CONTROL_TYPES:
            raise MalformedMessage(f"unknown message type {message.type!r}")

    def _handle_event(self, subscription: int | None, message: EventEnvelope, received_at: str, spool_seq: int) -> None:
        """The hot path: every live event passes here."""
        event = message.event
        if event is None:
            raise MalformedMessage("event message without an event")
        if message.id != subscription:
            raise MalformedMessage(f"event for unknown subscription id {message.id}")
        size = len(event.data)
        if size > self.max_message_bytes:
            raise MalformedMessage(f"event data of {size} bytes exceeds the {self.max_message_bytes}-byte limit")
        row, state = event_rows(event, received_at, spool_seq, self.home)
        time_fired = row[EVENT_TIME_FIRED]
        lake = self.lake
        # the row is in schema order by construction: extend the batch directly, without add()'s width check
        lake.batch("events", time_fired[:10]).values.extend(row)
        self.events_seen += 1
        if state is not None:
            entity_id, last_updated = state[STATE_ENTITY_ID], state[STATE_LAST_UPDATED]
            if last_updated > self.latest_state.get(entity_id, ""):
                self.latest_state[entity_id] = last_updated
            lake.batch("states", last_updated[:10]).values.extend(state)
            self.live_states_seen += 1
            attributes = state[STATE_ATTRIBUTES]
            if attributes:
                size += len(attributes)
        lake.buffered_bytes += size
        if time_fired > (self.last_event_time or ""):
            self.last_event_time = time_fired
        event_type = event.event_type
        stale = REGISTRY_EVENTS.get(event_type)
        if event_type == "call_service" and '"reload"' in row[EVENT_DATA]:
            call = any_decoder.decode(row[EVENT_DATA])
            if call.get("service") == "reload":
                stale = RELOAD_SERVICE_DOMAINS.get(call.get("domain"))
        if stale and self.on_registry_stale is not None:
            self.on_registry_stale(stale)

    def _handle_result(self, record: SpoolRecord, message: EventEnvelope, received_at: str) -> None:
        command = self.pending.pop(f"{record.conn}:{message.id}", None)
        if command is None:
            raise MalformedMessage(f"result for unknown command id {message.id}")
        kind = command.get("type")
        if not message.success:
            self._counts["command_errors"] += 1
            raise MalformedMessage(f"command {kind} failed: {msgspec.json.encode(message.error).decode()}")
        result = bytes(message.result)
        if kind == "subscribe_events":
            self.subscriptions[str(record.conn)] = message.id
        elif kind == "get_config" and not self.home_override:
            self.home = home_from_config(result) or self.home
        if kind == "get_states":
            self._add_new_states(
                snapshot_state_rows(result, received_at, record.seq, self.home), record.seq, "snapshot"
            )
        elif kind == "history/history_during_period":
            added = self._add_new_states(
                history_state_rows(result, received_at, record.seq, self.home), record.seq, "backfilled"
            )
            log.log(
                logging.INFO if added else logging.DEBUG,
                "backfill %s..%s: %d new state rows",
                command.get("start_time"),
                command.get("end_time"),
                added,
            )
        registry = REGISTRY_COMMANDS.get(kind)
        if registry:
            for row in registry_rows(
                registry, result, received_at, record.seq, self.home, item_id=command.get("entity_id")
            ):
                self.lake.add(f"registry/{registry}", row, len(row[REGISTRY_DATA]))

    def _add_new_states(self, rows: list[Row], seq: int, counter: str) -> int:
        """Add the rows whose (entity_id, last_updated) the lake does not hold yet (±1 µs, since
        history reports unix floats where live events carry exact ISO strings)."""
        rows = [row for row in rows if self.latest_state.get(row[STATE_ENTITY_ID]) != row[STATE_LAST_UPDATED]]
        if not rows:
            return 0
        existing = self.lake.existing_state_keys(self.home, rows)
        added = 0
        seen: set[tuple[str, int]] = set()
        for row, micros in zip(rows, iso_to_micros([r[STATE_LAST_UPDATED] for r in rows]), strict=True):
            eid = row[STATE_ENTITY_ID]
            if any((eid, micros + d) in existing or (eid, micros + d) in seen for d in (-1, 0, 1)):
                continue
            seen.add((eid, micros))
            self._remember_latest(row)
            self.lake.add("states", row, len(row[STATE_ATTRIBUTES] or ""))
            added += 1
        self._counts[counter] += added
        self._counts["states"] += added
        return added

    def _remember_latest(self, row: Row) -> None:
        entity_id, last_updated = row[STATE_ENTITY_ID], row[STATE_LAST_UPDATED]
        previous = self.latest_state.get(entity_id)
        if previous is None or last_updated > previous:
            self.latest_state[entity_id] = last_updated
