"""End to end against a real Home Assistant: the lake must hold exactly HA's recorder states.

A fresh Home Assistant 2025.4.4 (tools/realha, installed from PyPI into a cached venv) runs
the "Maple House" fixture. The collector runs as a subprocess (`ha-ingestor collect`): on its
first start it imports HA's whole history, snapshots and subscribes. tools/realha/activity.py
then drives about 100 s of activity (service calls, events, bursts, registry edits, an entity_id
rename) with a `homeassistant.restart` in the middle: HA closes the WebSocket (code 1000),
supervise.py starts hass again, the collector reconnects with backoff and backfills the gap
from HA's history. After the collector is stopped (SIGTERM, exit 0) and HA is stopped, every
row of the recorder's `states` table must be in the lake, and no lake row may be missing from
the recorder, matched on (entity_id, last_updated ±1 µs, state).

The only rows left out are the recorder rows with last_updated after the collector stopped
(HA keeps changing states, the collector no longer listens). Run it alone with
    pytest -m realha -s tests/test_realha_e2e.py
It takes about 2 minutes (plus about 3.5 minutes once per machine for install.sh).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import lake_query

pytestmark = [pytest.mark.realha, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
REALHA = REPO / "tools" / "realha"
ACTIVITY_PROFILE = REALHA / "configs" / "fixture" / "activity-e2e.json"
ACTIVITY_S = float(os.environ.get("REALHA_E2E_ACTIVITY_S", "100"))  # the profile restarts HA at 45 s
BACKFILL_DELAY_S = 3.0
SAMPLES = 12


# -- Home Assistant ------------------------------------------------------------------------------


def _realha_paths(env: dict[str, str]) -> dict[str, str]:
    """The paths env.sh derives for this environment (so the test never guesses them)."""
    script = (
        f'source "{REALHA}/env.sh" && '
        'printf "%s\\n" "$REALHA_DIR" "$HA_VENV" "$HA_CONFIG" "$HA_TOKEN_FILE" "$HA_INSTANCE"'
    )
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    return dict(zip(("realha_dir", "venv", "config", "token_file", "instance"), out, strict=False))


@pytest.fixture(scope="session")
def realha_venv() -> Path:
    """Install (or find, in about 0.1 s) the Home Assistant venv; skip only when that fails."""
    try:
        proc = subprocess.run([str(REALHA / "install.sh")], check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no real Home Assistant: tools/realha/install.sh could not run: {exc!r}")
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        pytest.skip(f"no real Home Assistant: tools/realha/install.sh exited {proc.returncode}: {tail}")
    venv = Path(_realha_paths(dict(os.environ))["venv"])
    if not (venv / "bin" / "hass").exists():
        pytest.skip(f"no real Home Assistant: install.sh succeeded but {venv}/bin/hass is missing")
    return venv


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port() -> int:
    wanted = os.environ.get("REALHA_E2E_PORT")
    if wanted:
        return int(wanted)
    for port in range(18140, 18200):
        if _port_free(port):
            return port
    raise RuntimeError("no free port in 18140-18199")


# -- collector -----------------------------------------------------------------------------------


def _collector_command() -> list[str]:
    binary = Path(sys.executable).with_name("ha-ingestor")
    return [str(binary)] if binary.exists() else [sys.executable, "-m", "ha_ingestor"]


class HealthWatch(threading.Thread):
    """Polls the collector's /healthz and notes when it connects and disconnects (wall clock)."""

    def __init__(self, log: Path) -> None:
        super().__init__(daemon=True, name="healthwatch")
        self.log = log
        self.url: str | None = None
        self.last: dict = {}
        self.transitions: list[tuple[float, bool]] = []
        self.halt = threading.Event()

    def _find_url(self) -> str | None:
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else []:
            if " metrics on http://" in line:
                return line.split(" metrics on ", 1)[1].strip().replace("/metrics", "/healthz")
        return None

    def run(self) -> None:
        connected = False
        while not self.halt.is_set():
            self.url = self.url or self._find_url()
            if self.url:
                try:
                    with urllib.request.urlopen(self.url, timeout=2) as reply:
                        self.last = json.loads(reply.read())
                except (OSError, ValueError):
                    pass
                else:
                    if bool(self.last.get("connected")) != connected:
                        connected = not connected
                        self.transitions.append((time.time(), connected))
            self.halt.wait(0.2)

    def connected_since(self) -> float | None:
        if self.transitions and self.transitions[-1][1]:
            return self.transitions[-1][0]
        return None


def _wait(predicate, timeout: float, what: str, diagnostics=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{diagnostics()}")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- comparison ----------------------------------------------------------------------------------


def _recorder_rows(db: Path) -> list[tuple[str, int, str | None]]:
    """Every states row of HA's recorder: (entity_id, last_updated in µs, state); NULL state = removal."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT sm.entity_id, s.last_updated_ts, s.state FROM states AS s "
            "JOIN states_meta AS sm ON sm.metadata_id = s.metadata_id"
        ).fetchall()
    finally:
        con.close()
    return [(eid, round(ts * 1_000_000), state) for eid, ts, state in rows]


def compare(recorder: list[tuple[str, int, str | None]], lake_rows: list[tuple], cut_us: int) -> dict:
    """Match lake states rows (entity_id, µs, state, source) with recorder rows on entity_id and
    last_updated within ±1 µs (history reports unix floats, live events exact ISO strings)."""
    by_key: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    for index, (eid, us, _state) in enumerate(recorder):
        by_key[(eid, us)].append(index)
    matched_recorder: set[int] = set()
    extra, state_mismatch = [], []
    for eid, us, state, source in lake_rows:
        hits = [i for d in (0, -1, 1) for i in by_key.get((eid, us + d), ())]
        if not hits:
            extra.append((eid, us, state, source))
            continue
        same = [i for i in hits if recorder[i][2] == state]
        if not same:
            state_mismatch.append((eid, us, state, source, [recorder[i][2] for i in hits]))
        matched_recorder.update(same or hits)
    missing = [row for i, row in enumerate(recorder) if i not in matched_recorder and row[1] <= cut_us]
    after_cut = sum(1 for i, row in enumerate(recorder) if i not in matched_recorder and row[1] > cut_us)
    keys = collections.Counter((eid, us) for eid, us, _s, _src in lake_rows)
    duplicates = [(key, n) for key, n in keys.items() if n > 1]
    near_duplicates = [key for key in keys if (key[0], key[1] + 1) in keys]
    return {
        "missing": missing,
        "extra": extra,
        "state_mismatch": state_mismatch,
        "duplicates": duplicates,
        "near_duplicates": near_duplicates,
        "recorder_after_cut": after_cut,
        "recorder_compared": sum(1 for row in recorder if row[1] <= cut_us),
    }


def _when(us: int, marks: dict[str, float]) -> str:
    """A time relative to the test's landmarks, e.g. 'restart+2.31s'."""
    t = us / 1e6
    past = [(name, at) for name, at in marks.items() if at is not None and at <= t]
    name, at = max(past, key=lambda p: p[1]) if past else min(marks.items(), key=lambda p: p[1] or 0)
    return f"{name}{t - at:+.3f}s"


def summarize(result: dict, recorder: list, lake_rows: list, marks: dict[str, float], extra_info: dict) -> str:
    sources = collections.Counter(src for *_, src in lake_rows)
    lines = [
        (
            f"recorder states rows: {len(recorder)} ({result['recorder_compared']} up to the cut, "
            f"{result['recorder_after_cut']} unmatched after it)"
        ),
        f"lake states rows: {len(lake_rows)} by source {dict(sources.most_common())}",
        (
            f"missing from lake: {len(result['missing'])}, extra in lake: {len(result['extra'])}, "
            f"state mismatches: {len(result['state_mismatch'])}, duplicate keys: {len(result['duplicates'])}, "
            f"±1 µs near-duplicates: {len(result['near_duplicates'])}"
        ),
        "landmarks (unix s): " + ", ".join(f"{k}={v:.3f}" for k, v in marks.items() if v is not None),
    ]
    lines += [f"{k}: {v}" for k, v in extra_info.items()]
    for name in ("missing", "extra", "state_mismatch"):
        rows = result[name]
        if not rows:
            continue
        by_entity = collections.Counter(row[0] for row in rows)
        lines.append(f"{name} by entity (top): {dict(by_entity.most_common(8))}")
        if name == "extra":
            lines.append(f"extra by source: {dict(collections.Counter(r[3] for r in rows))}")
        for row in sorted(rows, key=lambda r: r[1])[:SAMPLES]:
            lines.append(
                f"  {name}: {row[0]} at {_when(row[1], marks)} ({row[1]}) state={row[2]!r}"
                + (f" source={row[3]}" if len(row) > 3 else "")
                + (f" recorder={row[4]!r}" if len(row) > 4 else "")
            )
    for key, n in result["duplicates"][:SAMPLES]:
        lines.append(f"  duplicate: {key} x{n}")
    return "\n".join(lines)


# -- the test ------------------------------------------------------------------------------------


def test_lake_matches_recorder_across_restart(realha_venv: Path, tmp_path: Path) -> None:
    port = _pick_port()
    env = {**os.environ, "HA_PORT": str(port)}
    paths = _realha_paths(env)
    url = f"http://127.0.0.1:{port}"
    lake, state_dir = tmp_path / "lake", tmp_path / "state"
    collector_log = tmp_path / "collector.log"
    supervisor_events = Path(paths["realha_dir"]) / f"supervisor-{paths['instance']}.jsonl"
    marks: dict[str, float] = {"test_start": time.time()}
    collector: subprocess.Popen | None = None
    watch: HealthWatch | None = None
    info: dict = {"port": port, "tmp": str(tmp_path)}
    try:
        started = subprocess.run(
            [str(REALHA / "ha_start.sh"), "--fresh"], env=env, check=False, capture_output=True, text=True, timeout=360
        )
        assert started.returncode == 0, f"ha_start.sh failed:\n{started.stdout}\n{started.stderr}"
        marks["ha_running"] = time.time()
        token_file = tmp_path / "token"
        token_file.write_text(json.loads(Path(paths["token_file"]).read_text())["token"])
        token_file.chmod(0o600)

        with open(collector_log, "ab") as out:
            collector = subprocess.Popen(
                [
                    *_collector_command(),
                    "collect",
                    "--ha-url",
                    url,
                    "--token-file",
                    str(token_file),
                    "--lake",
                    str(lake),
                    "--state-dir",
                    str(state_dir),
                    "--metrics-port",
                    "0",
                    "--flush-interval",
                    "2",
                    "--backfill-delay",
                    str(BACKFILL_DELAY_S),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        watch = HealthWatch(collector_log)
        watch.start()
        _wait(
            lambda: watch.connected_since() is not None or collector.poll() is not None,
            60,
            "the collector to connect",
            lambda: _tail(collector_log),
        )
        assert collector.poll() is None, f"the collector exited {collector.returncode}:\n{_tail(collector_log)}"
        marks["collector_connected"] = watch.connected_since()

        activity_log = tmp_path / "activity.log"
        with open(activity_log, "wb") as out:
            activity = subprocess.run(
                [
                    str(realha_venv / "bin" / "python"),
                    str(REALHA / "activity.py"),
                    "--token-file",
                    paths["token_file"],
                    "--profile",
                    str(ACTIVITY_PROFILE),
                    "--duration",
                    str(ACTIVITY_S),
                    "--rate",
                    "4",
                    "--clients",
                    "2",
                    "--burst-every",
                    "30",
                    "--burst-size",
                    "60",
                    "--burst-clients",
                    "2",
                    "--registry-every",
                    "12",
                    "--seed",
                    "7",
                    "--report",
                    str(tmp_path / "activity.json"),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=ACTIVITY_S + 120,
                check=False,
            )
        marks["activity_end"] = time.time()
        assert activity.returncode == 0, f"activity.py exited {activity.returncode}:\n{_tail(activity_log)}"
        report = json.loads((tmp_path / "activity.json").read_text())
        info["activity_sent"] = sum(report["sent"].values())
        info["activity_errors"] = report["errors"]

        # HA must really have restarted, and the collector must have come back
        spawns = [json.loads(line) for line in supervisor_events.read_text().splitlines()]
        spawns = [e for e in spawns if e["t"] >= marks["test_start"]]
        restarts = [e for e in spawns if e["event"] == "exit" and e.get("rc") == 100]
        assert restarts, f"HA did not restart (supervisor events {spawns})"
        marks["restart"] = restarts[0]["t"]
        _wait(
            lambda: (watch.connected_since() or 0) > marks["restart"],
            60,
            "the collector to reconnect after the restart",
            lambda: _tail(collector_log),
        )
        marks["reconnected"] = watch.connected_since()
        # the post-reconnect backfill starts BACKFILL_DELAY_S after connecting; then give the lake
        # a few flush intervals
        _wait(lambda: time.time() > marks["reconnected"] + BACKFILL_DELAY_S + 6, 60, "the backfill")
        time.sleep(3)
        info["healthz_before_stop"] = {
            k: watch.last.get(k)
            for k in (
                "connected",
                "events",
                "states",
                "backfilled",
                "reconnects",
                "quarantined",
                "command_errors",
                "spool_depth",
            )
        }
        info["connection_transitions"] = [(round(t - marks["test_start"], 2), c) for t, c in watch.transitions]
        assert watch.connected_since() is not None, "the collector is not connected before the stop"

        # every state HA set before this moment reached the collector live or by backfill
        marks["cut"] = time.time() - 1.0
        collector.send_signal(signal.SIGTERM)
        rc = collector.wait(60)
        marks["collector_stopped"] = time.time()
        assert rc == 0, f"the collector exited {rc} on SIGTERM:\n{_tail(collector_log)}"
    finally:
        if watch is not None:
            watch.halt.set()
        if collector is not None and collector.poll() is None:
            collector.kill()
            collector.wait(10)
        stopped = subprocess.run(
            [str(REALHA / "ha_stop.sh")], env=env, check=False, capture_output=True, text=True, timeout=120
        )
        print(f"ha_stop.sh: {stopped.stdout.strip()} {stopped.stderr.strip()}")

    recorder = _recorder_rows(Path(paths["config"]) / "home-assistant_v2.db")
    lake_rows = lake_query(lake, "states", "SELECT entity_id, epoch_us(last_updated), state, source FROM t")
    # how the restart looked from the collector: HA's restart call (if it arrived live), the
    # collector noticing the close, HA's process exit, the reconnect
    calls = lake_query(
        lake,
        "events",
        "SELECT min(epoch_us(time_fired)) FROM t WHERE event_type = 'call_service' "
        'AND data LIKE \'%"domain":"homeassistant"%"service":"restart"%\'',
    )
    if calls and calls[0][0]:
        marks["restart_call"] = calls[0][0] / 1e6
    lost = [t for t, up in watch.transitions if not up and t > marks["collector_connected"]]
    if lost:
        marks["collector_disconnected"] = lost[0]
    if "restart_call" in marks and lost:
        info["restart_timing_s"] = {
            "call_to_collector_disconnect": round(lost[0] - marks["restart_call"], 2),
            "call_to_hass_exit": round(marks["restart"] - marks["restart_call"], 2),
            "hass_exit_to_reconnect": round(marks["reconnected"] - marks["restart"], 2),
        }
    backfill_windows = collections.Counter(
        "initial import"
        if us / 1e6 < marks["collector_connected"]
        else "restart gap"
        if (marks.get("restart_call", marks["restart"] - 15) <= us / 1e6 <= marks["reconnected"] + BACKFILL_DELAY_S)
        else "other"
        for _eid, us, _state, source in lake_rows
        if source == "backfill"
    )
    info["backfill_rows_by_window"] = dict(backfill_windows)
    result = compare(recorder, lake_rows, round(marks["cut"] * 1e6))
    event_dups = lake_query(lake, "events", "SELECT event_id, count(*) FROM t GROUP BY 1 HAVING count(*) > 1")
    quarantine = lake_query(lake, "quarantine", "SELECT stage, reason, left(raw, 200) FROM t")
    info["events"] = lake_query(lake, "events", "SELECT count(*) FROM t")[0][0]
    info["quarantine"] = [q[:2] for q in quarantine[:SAMPLES]]
    info["duplicate_event_ids"] = len(event_dups)
    info["collector_log_warnings"] = [
        line
        for line in collector_log.read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line
    ][:SAMPLES]
    summary = summarize(result, recorder, lake_rows, marks, info)
    (tmp_path / "summary.txt").write_text(summary)
    (tmp_path / "diff.json").write_text(json.dumps({k: v for k, v in result.items()}, default=str, indent=1))
    print("\n=== real HA end-to-end: lake vs recorder ===\n" + summary + f"\n(artifacts in {tmp_path})")

    assert recorder and lake_rows
    assert not result["missing"], f"{len(result['missing'])} recorder rows are not in the lake\n{summary}"
    assert not result["extra"], f"{len(result['extra'])} lake rows are not in the recorder\n{summary}"
    assert not result["state_mismatch"], f"lake and recorder disagree on states\n{summary}"
    assert not result["duplicates"] and not result["near_duplicates"], f"duplicate states rows\n{summary}"
    assert not event_dups, f"duplicate event_id in events: {event_dups[:SAMPLES]}"
    assert not quarantine, f"quarantined rows: {quarantine[:SAMPLES]}\n{summary}"
    timing = info.get("restart_timing_s")
    assert timing is not None, f"the restart call or the disconnect was not observed\n{summary}"
    # HA keeps TCP open for its 10 s HTTP shutdown after the close frame; the collector must not wait for it
    assert timing["call_to_collector_disconnect"] < 3, summary
