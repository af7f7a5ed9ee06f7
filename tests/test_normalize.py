"""Normalisation of real Home Assistant messages from the bundled capture."""

from __future__ import annotations

import gzip
import json

import msgspec
import pytest

from ha_ingestor.replay_server import bundled_capture
from ha_ingestor_lake.schema import home_from_config, row_as_dict
from ha_ingestor_live.messages import frame_decoder
from ha_ingestor_live.normalize import (
    MalformedMessage,
    decode_event,
    event_id,
    event_rows,
    history_state_rows,
    parse_number,
    registry_rows,
    snapshot_state_rows,
    utc_iso,
)

RECEIVED = "2026-11-26T00:00:00+00:00"


@pytest.fixture(scope="module")
def frames() -> list[dict]:
    with gzip.open(bundled_capture(), "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def live_rows(event, home: str) -> tuple[dict, dict | None]:
    """``event_rows`` by column name."""
    row, state = event_rows(event, RECEIVED, 7, home)
    return row_as_dict("events", row), state and row_as_dict("states", state)


def _raw_events(frames, predicate):
    for frame in frames:
        if frame["dir"] != "in":
            continue
        for message in frame["msg"] if isinstance(frame["msg"], list) else [frame["msg"]]:
            if message.get("type") == "event" and predicate(message["event"]):
                yield msgspec.json.encode(message["event"])


def _state_changed(frames, predicate):
    return next(_raw_events(frames, lambda e: e["event_type"] == "state_changed" and predicate(e["data"])))


def test_coalesced_frame_splits_into_messages(frames):
    coalesced = next(f for f in frames if f["dir"] == "in" and isinstance(f["msg"], list) and len(f["msg"]) > 50)
    messages = frame_decoder.decode(msgspec.json.encode(coalesced["msg"]))
    assert len(messages) == len(coalesced["msg"])
    assert {m.type for m in messages} <= {"event", "result"}


def test_state_changed_gives_event_and_state_row(frames):
    raw = _state_changed(
        frames,
        lambda d: (
            d["entity_id"].startswith("sensor.")
            and d["old_state"]
            and d["new_state"]
            and parse_number(d["new_state"]["state"]) is not None
        ),
    )
    event = decode_event(raw)
    row, state = live_rows(event, "maple_house")
    source = json.loads(raw)
    assert row["event_type"] == "state_changed"
    assert row["entity_id"] == source["data"]["entity_id"]
    assert row["time_fired"] == source["time_fired"]
    assert row["context_id"] == source["context"]["id"]
    assert json.loads(row["data"]) == source["data"]
    new = source["data"]["new_state"]
    assert state["state"] == new["state"] and state["state_num"] == float(new["state"])
    assert state["last_updated"] == new["last_updated"] and state["last_changed"] == new["last_changed"]
    assert state["last_reported"] == new["last_reported"]
    assert state["old_state"] == source["data"]["old_state"]["state"]
    assert state["source"] == "live" and state["event_id"] == row["event_id"]
    assert json.loads(state["attributes"]) == new["attributes"]


def test_entity_created_has_no_old_state(frames):
    raw = _state_changed(frames, lambda d: d["old_state"] is None)
    _, state = live_rows(decode_event(raw), "h")
    assert state["entity_id"] == "sensor.kitchen_co2" and state["old_state"] is None
    assert state["state"] is not None


def test_entity_removed_keeps_a_null_state_at_time_fired(frames):
    raw = _state_changed(frames, lambda d: d["new_state"] is None)
    source = json.loads(raw)
    _, state = live_rows(decode_event(raw), "h")
    assert state["entity_id"] == "sensor.carbon_dioxide"
    assert state["state"] is None and state["attributes"] is None
    assert state["last_updated"] == source["time_fired"]
    assert state["old_state"] == source["data"]["old_state"]["state"]


def test_rename_event_is_kept_with_its_entity(frames):
    raw = next(
        _raw_events(frames, lambda e: e["event_type"] == "entity_registry_updated" and e["data"].get("old_entity_id"))
    )
    row, state = live_rows(decode_event(raw), "h")
    assert state is None
    assert row["entity_id"] == "sensor.kitchen_co2"
    assert json.loads(row["data"])["old_entity_id"] == "sensor.carbon_dioxide"


@pytest.mark.parametrize("state", ["unknown", "unavailable"])
def test_unknown_and_unavailable_are_kept_as_states(frames, state):
    event = json.loads(_state_changed(frames, lambda d: d["new_state"] and d["entity_id"].startswith("sensor.")))
    event["data"]["new_state"]["state"] = state
    raw = msgspec.json.encode(event)
    _, row = live_rows(decode_event(raw), "h")
    assert row["state"] == state and row["state_num"] is None


def test_attributes_are_kept_byte_for_byte():
    raw = (
        b'{"event_type":"state_changed","time_fired":"2026-11-24T10:00:00.000001+00:00","origin":"LOCAL",'
        b'"context":{"id":"c1","parent_id":null,"user_id":null},"data":{"entity_id":"sensor.x",'
        b'"old_state":null,"new_state":{"entity_id":"sensor.x","state":"-0.0","attributes":'
        b'{"big":123456789012345678901234567890,"neg_zero":-0.0,"\xc3\xa9t\xc3\xa9":"\xe2\x82\xac"},'
        b'"last_changed":"2026-11-24T10:00:00.000001+00:00","last_updated":"2026-11-24T10:00:00.000001+00:00",'
        b'"context":{"id":"c1","parent_id":null,"user_id":null}}}}'
    )
    _, state = live_rows(decode_event(raw), "h")
    assert state["attributes"] == ('{"big":123456789012345678901234567890,"neg_zero":-0.0,"\u00e9t\u00e9":"\u20ac"}')
    assert state["state"] == "-0.0" and state["state_num"] == 0.0


def test_event_id_is_deterministic_and_content_sensitive():
    a = event_id("x", "2026-11-24T10:00:00+00:00", "c", b'{"a":1}')
    assert a == event_id("x", "2026-11-24T10:00:00+00:00", "c", b'{"a":1}')
    assert a != event_id("x", "2026-11-24T10:00:00+00:00", "c", b'{"a":2}')
    assert a != event_id("x", "2026-11-24T10:00:00.000001+00:00", "c", b'{"a":1}')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("21.5", 21.5),
        ("-3", -3.0),
        ("1e3", 1000.0),
        ("unknown", None),
        ("", None),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("on", None),
        (None, None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


def test_timestamps_are_utc():
    assert utc_iso("2026-11-24T10:00:00.5+02:00") == "2026-11-24T08:00:00.500000+00:00"
    with pytest.raises(MalformedMessage):
        utc_iso("2026-11-24T10:00:00")
    with pytest.raises(MalformedMessage):
        utc_iso("yesterday")


def test_malformed_events_raise_with_a_reason():
    with pytest.raises(MalformedMessage, match="unexpected event shape"):
        decode_event(b'{"event_type":"x"}')
    raw = (
        b'{"event_type":"state_changed","time_fired":"2026-11-24T10:00:00+00:00","data":'
        b'{"entity_id":"sensor.x","new_state":{"entity_id":"sensor.x","state":5}}}'
    )
    with pytest.raises(MalformedMessage, match="state_changed"):
        event_rows(decode_event(raw), RECEIVED, 7, "h")


def test_snapshot_rows_from_real_get_states(recording):
    result = msgspec.json.encode(recording.initial_states)
    rows = [row_as_dict("states", row) for row in snapshot_state_rows(result, RECEIVED, 7, "h")]
    assert len(rows) == len(recording.initial_states) > 100
    assert {r["source"] for r in rows} == {"snapshot"}
    assert any(r["entity_id"] == "vacuum.0_ground_floor" for r in rows)


def test_history_rows_use_recorder_times():
    result = (
        b'{"sensor.t":[{"s":"20.5","a":{"unit_of_measurement":"\xc2\xb0C"},"lu":1795713782.123456},'
        b'{"s":"21","a":{},"lu":1795713790.5,"lc":1795713789.25}],"sensor.gone":[{"s":null,"a":{},'
        b'"lu":1795713791.0}]}'
    )
    rows = [row_as_dict("states", row) for row in history_state_rows(result, RECEIVED, 7, "h")]
    assert [r["last_updated"] for r in rows] == [
        "2026-11-26T17:23:02.123456+00:00",
        "2026-11-26T17:23:10.500000+00:00",
        "2026-11-26T17:23:11+00:00",
    ]
    assert rows[0]["last_changed"] == rows[0]["last_updated"]
    assert rows[1]["last_changed"] == "2026-11-26T17:23:09.250000+00:00"
    assert rows[1]["old_state"] == "20.5" and rows[1]["state_num"] == 21.0
    assert rows[2]["state"] is None and rows[2]["attributes"] is None
    assert {r["source"] for r in rows} == {"backfill"}


def test_registry_rows_and_home_name(recording):
    areas = [
        row_as_dict("registry", row)
        for row in registry_rows(
            "areas", msgspec.json.encode(recording.results["config/area_registry/list"]), RECEIVED, 7, "h"
        )
    ]
    assert {r["item_id"] for r in areas} >= {"living_room", "kitchen"}
    assert all(r["snapshot_seq"] == 7 and r["kind"] == "areas" for r in areas)
    assert home_from_config(msgspec.json.encode(recording.results["get_config"])) == "maple_house"
    with pytest.raises(MalformedMessage):
        registry_rows("areas", b'{"not": "a list"}', RECEIVED, 1, "h")
