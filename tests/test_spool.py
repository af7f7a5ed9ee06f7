from __future__ import annotations

from pathlib import Path

from ha_ingestor_live.spool import INBOUND, OUTBOUND, FsyncPolicy, Spool


def _fill(directory: Path, n: int, **kwargs) -> Spool:
    spool = Spool(directory, FsyncPolicy.BATCH, **kwargs)
    spool.open_new_segment()
    for i in range(n):
        spool.append_batch([(INBOUND if i % 2 else OUTBOUND, 7, 1000.0 + i, f'{{"n":{i}}}'.encode())])
    spool.close()
    return spool


def test_records_read_back_in_order(tmp_path):
    _fill(tmp_path, 10)
    damage = []
    records = list(Spool(tmp_path).read(0, damage))
    assert [r.seq for r in records] == list(range(1, 11))
    assert records[3].payload == b'{"n":3}' and records[3].conn == 7 and records[3].received_at == 1003.0
    assert records[3].kind == INBOUND and records[2].kind == OUTBOUND
    assert damage == []
    assert [r.seq for r in Spool(tmp_path).read(6, [])] == [7, 8, 9, 10]


def test_torn_tail_is_reported_not_guessed(tmp_path):
    _fill(tmp_path, 5)
    [segment] = list(tmp_path.glob("*.wal"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-3])
    damage = []
    spool = Spool(tmp_path)
    assert [r.seq for r in spool.read(0, damage)] == [1, 2, 3, 4]
    assert len(damage) == 1 and "torn" in damage[0].reason
    assert spool.next_seq == 5


def test_flipped_byte_is_a_checksum_mismatch(tmp_path):
    _fill(tmp_path, 3)
    [segment] = list(tmp_path.glob("*.wal"))
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF
    segment.write_bytes(bytes(data))
    damage = []
    assert [r.seq for r in Spool(tmp_path).read(0, damage)] == [1, 2]
    assert damage[0].reason == "checksum mismatch"


def test_segments_rotate_and_committed_ones_are_released(tmp_path):
    spool = _fill(tmp_path, 40, segment_bytes=200)
    segments = spool.segments()
    assert len(segments) > 3
    spool.release_through(20)
    remaining = spool.segments()
    assert len(remaining) < len(segments)
    assert int(remaining[0].stem) <= 21 < int(remaining[1].stem), "only segments holding seq <= 20 go"
    assert [r.seq for r in Spool(tmp_path).read(20, [])] == list(range(21, 41))


def test_a_batch_larger_than_one_writev_and_a_partial_write_are_both_whole(tmp_path, monkeypatch):
    import os

    from ha_ingestor_live import spool as spool_module

    real_writev = os.writev
    calls = []

    def short_first_writev(fd, chunks):  # the kernel may write less than asked: the first call does
        calls.append(len(chunks))
        return real_writev(fd, chunks[:1]) if len(calls) == 1 else real_writev(fd, chunks)

    monkeypatch.setattr(spool_module.os, "writev", short_first_writev)
    spool = Spool(tmp_path, FsyncPolicy.BATCH)
    spool.open_new_segment()
    payloads = [f'{{"n":{i}}}'.encode() for i in range(3 * spool_module.IOV_MAX)]
    assert spool.append_batch([(INBOUND, 1, 1000.0 + i, p) for i, p in enumerate(payloads)]) == len(payloads)
    spool.close()
    assert len(calls) > 1
    damage = []
    assert [r.payload for r in Spool(tmp_path).read(0, damage)] == payloads and damage == []
