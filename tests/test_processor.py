"""The processor on hand-made spool records: what it turns into rows, what it quarantines."""

from __future__ import annotations

from ha_ingestor_live.lake_writer import LakeWriter
from ha_ingestor_live.processor import Processor
from ha_ingestor_live.spool import INBOUND, OUTBOUND, SpoolRecord

EVENT = (
    b'{"id":7,"type":"event","event":{"event_type":"state_changed",'
    b'"time_fired":"2026-11-26T10:00:00.000001+00:00","origin":"LOCAL","context":{"id":"c1","parent_id":null,"user_id":null},"data":{"entity_id":"sensor.x",'
    b'"old_state":null,"new_state":{"entity_id":"sensor.x","state":"1","attributes":{},'
    b'"last_changed":"2026-11-26T10:00:00.000001+00:00","last_updated":"2026-11-26T10:00:00.000001+00:00",'
    b'"context":{"id":"c1","parent_id":null,"user_id":null}}}}}'
)


def test_events_in_the_frame_that_answers_the_subscription_are_kept(tmp_path):
    """HA coalesces: the subscribe_events reply and the first events can share one frame."""
    lake = LakeWriter(tmp_path / "lake", tmp_path / "state", "w1")
    processor = Processor(lake)
    processor.process(SpoolRecord(1, OUTBOUND, 1, 1795680000.0, b'{"id":7,"type":"subscribe_events"}'))
    frame = (
        b'[{"id":7,"type":"result","success":true,"result":null},'
        + EVENT
        + b","
        + EVENT.replace(b"00.000001", b"00.000002")
        + b"]"
    )
    processor.process(SpoolRecord(2, INBOUND, 1, 1795680000.1, frame))
    counts = processor.counts
    assert counts["events"] == 2 and counts["states"] == 2 and counts["quarantined"] == 0
    result = lake.commit(2, processor.state())
    assert result.rows == {"events": 2, "states": 2}


def test_an_event_of_an_unknown_subscription_is_quarantined(tmp_path):
    lake = LakeWriter(tmp_path / "lake", tmp_path / "state", "w1")
    processor = Processor(lake)
    processor.process(SpoolRecord(1, INBOUND, 1, 1795680000.0, EVENT))
    assert processor.counts["quarantined"] == 1 and processor.counts["events"] == 0
    assert lake.commit(1, processor.state()).rows == {"quarantine": 1}
