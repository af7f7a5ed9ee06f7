"""The collector against a real WebSocket server that speaks Home Assistant's protocol,
replaying a recording of a real Home Assistant."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import duckdb
import msgspec
import pytest

from ha_ingestor.replay_server import ReplayServer
from ha_ingestor_live.collector import Collector, CollectorSettings
from ha_ingestor_live.normalize import event_id

from .conftest import TOKEN, collector_command, fired_state_keys, lake_query, start_collector


def _settings(server_url: str, tmp_path: Path, **overrides) -> CollectorSettings:
    values = {
        "ha_url": server_url,
        "token": TOKEN,
        "lake": tmp_path / "lake",
        "state_dir": tmp_path / "state",
        "metrics_port": None,
        "backfill_delay_s": 0.2,
        "flush_interval_s": 1.0,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
    }
    return CollectorSettings(**{**values, **overrides})


async def _collect_while(server: ReplayServer, collector: Collector, during=None) -> None:
    task = asyncio.create_task(collector.run())
    if during is not None:
        await during()
    await asyncio.wait_for(server.finished.wait(), 120)
    while not collector.sink.caught_up():
        await asyncio.sleep(0.05)
    collector.request_stop()
    await asyncio.wait_for(task, 60)


def _state_keys(lake: Path) -> list[tuple[str, str]]:
    rows = lake_query(lake, "states", "SELECT entity_id, strftime(last_updated, '%Y-%m-%dT%H:%M:%S.%f') FROM t")
    return [(eid, ts) for eid, ts in rows]


def _iso_keys(keys) -> set[tuple[str, str]]:
    import datetime as dt

    return {
        (eid, dt.datetime.fromisoformat(ts).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")) for eid, ts in keys
    }


def _assert_no_duplicates(lake: Path) -> None:
    assert lake_query(lake, "events", "SELECT event_id FROM t GROUP BY 1 HAVING count(*) > 1") == []
    assert lake_query(lake, "states", "SELECT entity_id, last_updated FROM t GROUP BY 1, 2 HAVING count(*) > 1") == []


def test_every_event_and_state_lands_exactly_once(recording, tmp_path):
    async def scenario():
        async with ReplayServer(recording, token=TOKEN, speed=25) as server:
            collector = Collector(_settings(server.url, tmp_path))
            await _collect_while(server, collector)
            return server

    server = asyncio.run(scenario())
    lake = tmp_path / "lake"
    sent = [event for client in server.all_clients for _, event in client.sent]
    assert len(sent) == len(recording.events)
    [(events, distinct)] = lake_query(lake, "events", "SELECT count(*), count(DISTINCT event_id) FROM t")
    assert events == distinct == len(recording.events)
    by_type = dict(lake_query(lake, "events", "SELECT event_type, count(*) FROM t GROUP BY 1"))
    expected: dict[str, int] = {}
    for _, event in recording.events:
        expected[event["event_type"]] = expected.get(event["event_type"], 0) + 1
    assert by_type == expected
    lake_keys = _state_keys(lake)
    assert len(lake_keys) == len(set(lake_keys))
    fired = _iso_keys(fired_state_keys(e for _, e in recording.events))
    snapshot = _iso_keys((s["entity_id"], s["last_updated"]) for s in recording.initial_states)
    assert set(lake_keys) == fired | snapshot
    sources = dict(lake_query(lake, "states", "SELECT source, count(*) FROM t GROUP BY 1"))
    assert sources["live"] == len(fired)
    assert lake_query(lake, "states", "SELECT DISTINCT home FROM t") == [("maple_house",)]
    kinds = {p.name for p in (lake / "registry").iterdir()}
    assert kinds == {
        "areas",
        "floors",
        "labels",
        "devices",
        "entities",
        "config_entries",
        "automations",
        "scripts",
        "core_config",
        "services",
    }
    [(areas,)] = lake_query(lake, "registry/areas", "SELECT count(DISTINCT item_id) FROM t")
    assert areas >= 10
    assert not (lake / "quarantine").exists()
    # a registry_updated event makes the collector re-fetch that registry: more than one snapshot
    [(snapshots,)] = lake_query(lake, "registry/entities", "SELECT count(DISTINCT snapshot_seq) FROM t")
    assert snapshots > 1


def _collect_with_a_drop(recording, tmp_path: Path, **overrides) -> tuple[ReplayServer, Collector]:
    """The whole recording, with the connection dropped 4 s in and refused for 2 s."""

    async def scenario():
        async with ReplayServer(recording, token=TOKEN, speed=20) as server:
            collector = Collector(_settings(server.url, tmp_path, **overrides))

            async def drop_mid_stream():
                await asyncio.sleep(4)
                await server.drop_connections(refuse_for=2.0)

            await _collect_while(server, collector, drop_mid_stream)
            return server, collector

    return asyncio.run(scenario())


def test_dropped_connection_is_backfilled_from_history(recording, tmp_path):
    server, collector = _collect_with_a_drop(recording, tmp_path)
    lake = tmp_path / "lake"
    assert collector.reconnects >= 1 and len(server.all_clients) >= 2
    delivered = {json.dumps(e, sort_keys=True) for c in server.all_clients for _, e in c.sent}
    missed = [e for _, e in recording.events if json.dumps(e, sort_keys=True) not in delivered]
    missed_states = _iso_keys(fired_state_keys(missed))
    assert missed_states, "the drop should have made the live stream miss state changes"
    lake_keys = _state_keys(lake)
    assert missed_states <= set(lake_keys)
    recovered = _iso_keys(
        lake_query(
            lake, "states", "SELECT entity_id, last_updated::VARCHAR FROM t WHERE source IN ('backfill', 'snapshot')"
        )
    )
    assert missed_states <= recovered, "missed states come from history (or the reconnect's get_states)"
    assert lake_query(lake, "states", "SELECT count(*) FROM t WHERE source = 'backfill'")[0][0] > 0
    fired = _iso_keys(fired_state_keys(e for _, e in recording.events))
    snapshot = _iso_keys((s["entity_id"], s["last_updated"]) for s in recording.initial_states)
    assert fired | snapshot <= set(lake_keys)
    _assert_no_duplicates(lake)
    [(events,)] = lake_query(lake, "events", "SELECT count(*) FROM t")
    assert events == len(delivered)


def _sessions(lake: Path) -> list[dict]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    relation = con.sql(f"SELECT * FROM read_parquet('{lake}/collector_sessions/*/*.parquet') ORDER BY connected_at")
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def test_sessions_record_the_drop_its_gap_and_the_collectors_counters(recording, tmp_path):
    server, collector = _collect_with_a_drop(recording, tmp_path, backfill_repeat_after_s=1.0)
    lake = tmp_path / "lake"
    first, second = _sessions(lake)
    collector_id = (tmp_path / "state" / "collector_id").read_text().strip()
    for session in (first, second):
        assert (session["home"], session["collector_id"], session["ha_version"]) == (
            "maple_house",
            collector_id,
            recording.ha_version,
        )
        name = f"session-{session['session_id']}-{collector_id}.parquet"
        assert (lake / "collector_sessions" / f"date={session['connected_at']:%Y-%m-%d}" / name).exists()
        assert session["connected_at"] < session["disconnected_at"] <= session["updated_at"]
    assert first["gap_start"] is None, "the first start against a home closes no gap"
    assert first["disconnect_reason"].startswith("ConnectionLost: connection closed (code 1000)")
    assert second["disconnect_reason"] == "stop requested"
    assert first["disconnected_at"] < second["connected_at"]
    assert (first["reconnects"], second["reconnects"]) == (0, collector.reconnects)
    assert not list(lake.rglob("*.tmp"))

    def received_in(session: dict, table: str, where: str = "true") -> list[tuple]:
        return lake_query(
            lake,
            table,
            f"SELECT * FROM t WHERE received_at BETWEEN '{session['connected_at']}' "
            f"AND '{session['disconnected_at']}' AND {where}",
        )

    # the gap: the last event time seen before the drop, the first one after it, around every missed event
    [(before,)] = lake_query(
        lake, "events", f"SELECT max(time_fired) FROM t WHERE received_at <= '{first['disconnected_at']}'"
    )
    [(after,)] = lake_query(
        lake, "events", f"SELECT min(time_fired) FROM t WHERE received_at >= '{second['connected_at']}'"
    )
    assert (second["gap_start"], second["gap_end"]) == (before, after)
    delivered = {json.dumps(e, sort_keys=True) for c in server.all_clients for _, e in c.sent}
    missed = [
        dt.datetime.fromisoformat(e["time_fired"])
        for _, e in recording.events
        if json.dumps(e, sort_keys=True) not in delivered
    ]
    assert missed and before <= min(missed) and max(missed) <= after
    assert second["backfill_from"] == before - dt.timedelta(seconds=60)
    assert first["backfill_from"] < first["connected_at"] - dt.timedelta(days=9)
    [(last_fired,)] = lake_query(lake, "events", "SELECT max(time_fired) FROM t")
    assert (first["last_event_time"], second["last_event_time"]) == (before, last_fired)

    # the collector's counters against the lake, session by session
    for session in (first, second):
        events = received_in(session, "events")
        assert session["events_received"] == session["events_committed"] == len(events) > 0
        assert session["backfill_rows"] == len(received_in(session, "states", "source = 'backfill'"))
        assert session["quarantined"] == len(received_in(session, "quarantine")) == 0
        assert session["frames_received"] >= len(events) / 20
    assert second["backfill_rows"] > 0, "the drop's missed state changes came back from history"
    [(events_total,)] = lake_query(lake, "events", "SELECT count(*) FROM t")
    assert first["events_received"] + second["events_received"] == events_total == len(delivered)


def test_silent_server_is_detected_by_ping_and_reconnected(recording, tmp_path):
    async def scenario():
        async with ReplayServer(recording, token=TOKEN, speed=25) as server:
            collector = Collector(_settings(server.url, tmp_path, ping_interval_s=0.5, ping_timeout_s=0.5))

            async def go_silent():
                await asyncio.sleep(2)
                server.answer_pings = False
                while collector.reconnects == 0:
                    await asyncio.sleep(0.05)
                server.answer_pings = True

            await _collect_while(server, collector, go_silent)
            return server, collector

    server, collector = asyncio.run(scenario())
    assert collector.reconnects >= 1 and len(server.all_clients) >= 2
    fired = _iso_keys(fired_state_keys(e for _, e in recording.events))
    assert fired <= set(_state_keys(tmp_path / "lake"))
    _assert_no_duplicates(tmp_path / "lake")


@pytest.mark.parametrize("replay_server", [10.0], indirect=True)
def test_kill_9_mid_stream_loses_and_repeats_nothing(replay_server, tmp_path):
    lake, state, log = tmp_path / "lake", tmp_path / "state", tmp_path / "collector.log"
    extra = ("--flush-interval", "0.3")
    url = replay_server.server.url
    kills = []
    process = start_collector(url, lake, state, *extra, log=log)
    for delay in (4.0, 3.5, 3.0):
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills.append(time.monotonic())
        process = start_collector(url, lake, state, *extra, log=log)
    replay_server.wait_finished(120)
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log.read_text()[-3000:]
    server = replay_server.server
    _assert_no_duplicates(lake)
    lake_events = {row[0] for row in lake_query(lake, "events", "SELECT event_id FROM t")}
    assert len(lake_events) > 0

    def key(event):
        return event_id(
            event["event_type"], event["time_fired"], event["context"]["id"], msgspec.json.encode(event["data"])
        )

    # every event written to a connection well before that connection's collector was killed is in the lake
    lost = 0
    for client in server.all_clients:
        if not client.sent:
            continue
        cutoff = min((k for k in kills if k > client.sent[0][0]), default=float("inf")) - 0.5
        lost += sum(1 for sent_at, event in client.sent if sent_at < cutoff and key(event) not in lake_events)
    assert lost == 0
    fired = _iso_keys(fired_state_keys(e for _, e in replay_server.server.recording.events))
    assert fired <= set(_state_keys(lake)), "states missed while the collector was dead come back from history"
    assert not list(lake.rglob("*.tmp"))
    # a killed collector leaves its session open (whole, as last written); the next one records the gap
    *killed, last = _sessions(lake)
    assert len(killed) == len(kills)
    assert all(s["disconnected_at"] is None and s["updated_at"] >= s["connected_at"] for s in killed)
    assert (last["disconnect_reason"], last["events_received"] > 0) == ("stop requested", True)
    assert all(s["gap_start"] is not None and s["gap_start"] <= s["gap_end"] for s in [*killed[1:], last])


def test_malformed_frames_are_quarantined_and_collection_goes_on(recording, tmp_path):
    oversized = json.dumps(
        {
            "id": 0,
            "type": "event",
            "event": {
                "event_type": "huge",
                "time_fired": "2026-11-24T10:00:00+00:00",
                "origin": "LOCAL",
                "context": {"id": "x"},
                "data": {"blob": "x" * 200_000},
            },
        }
    )

    async def scenario():
        async with ReplayServer(recording, token=TOKEN, speed=25) as server:
            collector = Collector(_settings(server.url, tmp_path, max_message_bytes=100_000))

            async def inject():
                await asyncio.sleep(3)
                sub = next(c.subscription for c in server.clients if c.subscription)
                for text in (
                    '{"id": 1, "type": "event", "event": {"event_type": "x", "data": {',
                    "42",
                    json.dumps({"id": sub, "type": "mystery"}),
                    json.dumps({"id": sub, "type": "event", "event": {"event_type": "no_time"}}),
                    json.dumps(
                        [
                            {
                                "id": sub,
                                "type": "event",
                                "event": {"event_type": "bad_time", "time_fired": "not a time", "data": {}},
                            },
                            {
                                "id": sub,
                                "type": "event",
                                "event": {
                                    "event_type": "good_one",
                                    "time_fired": "2026-11-24T10:00:00+00:00",
                                    "origin": "LOCAL",
                                    "context": {"id": "y"},
                                    "data": {},
                                },
                            },
                        ]
                    ),
                    oversized.replace('"id": 0', f'"id": {sub}'),
                ):
                    await server.send_raw(text)

            await _collect_while(server, collector, inject)
            return collector

    collector = asyncio.run(scenario())
    lake = tmp_path / "lake"
    reasons = [r for (r,) in lake_query(lake, "quarantine", "SELECT reason FROM t ORDER BY received_at")]
    assert len(reasons) == 6, reasons
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert any("unexpected message shape" in r for r in reasons)
    assert any("unknown message type 'mystery'" in r for r in reasons)
    assert any("unexpected event shape" in r for r in reasons)
    assert any("invalid timestamp 'not a time'" in r for r in reasons)
    assert any("exceeds the 100000-byte limit" in r for r in reasons)
    raw = [r for (r,) in lake_query(lake, "quarantine", "SELECT raw FROM t")]
    assert any(r.startswith('{"id": 1, "type": "event"') for r in raw)
    assert any(len(r) > 200_000 for r in raw), "oversized input is kept whole"
    assert lake_query(lake, "events", "SELECT count(*) FROM t WHERE event_type = 'good_one'") == [(1,)]
    [(events,)] = lake_query(lake, "events", "SELECT count(*) FROM t WHERE event_type != 'good_one'")
    assert events == len(recording.events)
    assert collector.processor.counts["quarantined"] == 6


def test_invalid_token_is_fatal_and_clear(replay_server, tmp_path):
    command = collector_command(replay_server.server.url, tmp_path / "lake", tmp_path / "state")
    command[command.index("--token") + 1] = "wrong"
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "rejected the access token" in result.stderr
    assert time.monotonic() - started < 15


def test_sigterm_flushes_commits_and_exits_zero(replay_server, tmp_path):
    lake = tmp_path / "lake"
    process = start_collector(replay_server.server.url, lake, tmp_path / "state", "--flush-interval", "3600")
    deadline = time.monotonic() + 30
    while not any(c.sent for c in replay_server.server.all_clients):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(2.0)
    before = lake_query(lake, "events", "SELECT count(*) FROM t")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    sent = sum(len(c.sent) for c in replay_server.server.all_clients)
    [(events,)] = lake_query(lake, "events", "SELECT count(*) FROM t")
    assert events > (before[0][0] if before else 0), "the stop commits what was buffered"
    assert 0 < events <= sent and events >= sent - 50


def test_metrics_and_healthz(recording, tmp_path):
    async def scenario():
        async with ReplayServer(recording, token=TOKEN, speed=25) as server:
            collector = Collector(_settings(server.url, tmp_path, metrics_port=0))
            task = asyncio.create_task(collector.run())
            while collector.processor.counts["events"] < 500:
                await asyncio.sleep(0.1)
            port = collector.metrics_server.server_port
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            )
            health = await asyncio.to_thread(
                lambda: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read())
            )
            collector.request_stop()
            await task
            return metrics, health

    metrics, health = asyncio.run(scenario())
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert values["ha_ingestor_events_received_total"] >= 500
    for name in (
        "ha_ingestor_quarantined_total",
        "ha_ingestor_backfilled_states_total",
        "ha_ingestor_reconnects_total",
        "ha_ingestor_spool_depth",
        "ha_ingestor_lag_seconds",
    ):
        assert name in values
    assert values["ha_ingestor_connected"] == 1
    assert health["status"] == "ok" and health["connected"] is True and health["home"] == "maple_house"


def test_collect_help_documents_the_options():
    result = subprocess.run(
        [*collector_command("x", Path("l"), Path("s"))[:4], "--help"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    for option in (
        "--ha-url",
        "--token",
        "--token-file",
        "--lake",
        "--fsync",
        "--metrics-port",
        "HA_URL",
        "HA_TOKEN",
        "HA_INGESTOR_LAKE",
    ):
        assert option in result.stdout
