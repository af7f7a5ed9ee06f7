from __future__ import annotations

import datetime as dt
import json

import duckdb
import pyarrow.parquet as pq
import pytest

from ha_ingestor_lake.schema import TIMESTAMP, row_from
from ha_ingestor_live.lake_writer import INTENT, LakeWriter


def _state(entity_id: str, last_updated: str, state: str = "1") -> tuple:
    return row_from(
        "states",
        {
            "home": "h",
            "entity_id": entity_id,
            "domain": entity_id.split(".")[0],
            "state": state,
            "state_num": 1.0,
            "attributes": "{}",
            "last_changed": last_updated,
            "last_updated": last_updated,
            "last_reported": None,
            "old_state": None,
            "context_id": None,
            "context_parent_id": None,
            "context_user_id": None,
            "source": "live",
            "event_id": None,
            "received_at": "2026-11-26T00:00:00+00:00",
            "spool_seq": 1,
        },
    )


@pytest.fixture
def lake(tmp_path):
    return LakeWriter(tmp_path / "lake", tmp_path / "state", "w1")


def test_commit_writes_hive_partitions_readable_by_duckdb(lake, tmp_path):
    lake.add("states", _state("sensor.a", "2026-11-24T23:59:59.999999+00:00"))
    lake.add("states", _state("sensor.a", "2026-11-25T00:00:00+00:00"))
    result = lake.commit(5, {"home": "h"})
    assert sorted(p.parent.name for p in result.files) == ["date=2026-11-24", "date=2026-11-25"]
    assert all(p.name == "part-000000000001-000000000005-w1.parquet" for p in result.files)
    table = pq.read_table(result.files[0])
    assert table.schema.field("last_updated").type == TIMESTAMP
    rows = duckdb.sql(
        f"SELECT date, count(*) FROM read_parquet('{lake.root}/states/**/*.parquet', "
        "hive_partitioning=true) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [(str(d), n) for d, n in rows] == [("2026-11-24", 1), ("2026-11-25", 1)]
    assert json.loads((tmp_path / "state" / "checkpoint.json").read_text())["committed_seq"] == 5


def test_interrupted_commit_is_finished_on_recovery(lake, tmp_path, monkeypatch):
    lake.add("states", _state("sensor.a", "2026-11-24T10:00:00+00:00"))

    def crash(renames):
        raise SystemExit("killed between the intent and the renames")

    monkeypatch.setattr("ha_ingestor_live.lake_writer._apply_renames", crash)
    with pytest.raises(SystemExit):
        lake.commit(9, {"home": "h", "marker": 1})
    monkeypatch.undo()
    assert (tmp_path / "state" / INTENT).exists()
    assert not list(lake.root.rglob("*.parquet"))
    fresh = LakeWriter(lake.root, tmp_path / "state", "w1")
    assert fresh.recover() == {"home": "h", "marker": 1}
    assert fresh.committed_seq == 9
    assert len(list(lake.root.rglob("*.parquet"))) == 1
    assert not list(lake.root.rglob("*.tmp")) and not (tmp_path / "state" / INTENT).exists()


def test_commit_that_died_before_its_intent_is_undone(lake, tmp_path):
    lake.add("states", _state("sensor.a", "2026-11-24T10:00:00+00:00"))
    lake.commit(3, {})
    stray = lake.root / "states" / "date=2026-11-24" / "part-000000000004-000000000008-w1.parquet.tmp"
    stray.write_bytes(b"half a file")
    fresh = LakeWriter(lake.root, tmp_path / "state", "w1")
    fresh.recover()
    assert fresh.committed_seq == 3 and not stray.exists()


def test_existing_state_keys_cover_committed_and_buffered_rows(lake):
    lake.add("states", _state("sensor.a", "2026-11-24T10:00:00.000001+00:00"))
    lake.commit(1, {})
    lake.add("states", _state("sensor.b", "2026-11-24T11:00:00+00:00"))
    keys = lake.existing_state_keys(
        "h", [_state("sensor.a", "2026-11-24T12:00:00+00:00"), _state("sensor.b", "2026-11-24T12:00:00+00:00")]
    )
    micros = lambda iso: round(dt.datetime.fromisoformat(iso).timestamp() * 1e6)  # noqa: E731
    assert keys == {
        ("sensor.a", micros("2026-11-24T10:00:00.000001+00:00")),
        ("sensor.b", micros("2026-11-24T11:00:00+00:00")),
    }
    assert lake.existing_state_keys("other-home", [_state("sensor.a", "2026-11-24T12:00:00+00:00")]) == set()


def test_sealed_rows_count_as_existing_until_written_and_write_keeps_seal_order(lake):
    lake.add("states", _state("sensor.a", "2026-11-24T10:00:00+00:00"))
    first = lake.seal(2, {"n": 1})
    lake.add("states", _state("sensor.b", "2026-11-24T11:00:00+00:00"))
    second = lake.seal(5, {"n": 2})
    assert lake.buffered_rows == 0 and lake.sealed_seq == 5 and lake.committed_seq == 0
    probe = [_state("sensor.a", "2026-11-24T12:00:00+00:00"), _state("sensor.b", "2026-11-24T12:00:00+00:00")]
    assert {eid for eid, _ in lake.existing_state_keys("h", probe)} == {"sensor.a", "sensor.b"}
    with pytest.raises(RuntimeError, match="out of order"):
        lake.write(second)
    lake.write(first)
    assert lake.committed_seq == 2
    assert {eid for eid, _ in lake.existing_state_keys("h", probe)} == {"sensor.a", "sensor.b"}
    result = lake.write(second)
    assert [p.name for p in result.files] == ["part-000000000003-000000000005-w1.parquet"]
    checkpoint = json.loads((lake.state_dir / "checkpoint.json").read_text())
    assert checkpoint == {"committed_seq": 5, "processor": {"n": 2}}
