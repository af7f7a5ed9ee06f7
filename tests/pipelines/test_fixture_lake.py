from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource


def test_fixture_lake_holds_the_recording(fixture_lake):
    lake = LakeResource(root=str(fixture_lake))
    [date] = lake.raw_dates("events")
    assert lake.scan_raw("events", date).collect().height == 10052
    assert lake.scan_raw("states", date).collect().height > 5000
