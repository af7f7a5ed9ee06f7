"""The device graph and failure cascades."""

import shutil
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.enrichment.assets import build_dimensions
from ha_ingestor_pipelines.defs.graphs.assets import device_graph_tables, failure_cascades_by_day
from ha_ingestor_pipelines.defs.graphs.device_graph import failure_cascades

from .enrichment_materialize import materialize_enrichment
from .lake_tables import derived

DEMO_ENTRY = "01M8CE3G82ZA7V2S1XJG8FYQN7"


@pytest.fixture(scope="module")
def device_lake(fixture_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("devices") / "lake"
    shutil.copytree(fixture_lake, root)
    lake = LakeResource(root=str(root))
    [day] = lake.raw_dates("states")
    materialize_enrichment(root, day)
    assert dg.materialize([device_graph_tables], resources={"lake": lake}).success
    assert dg.materialize([failure_cascades_by_day], resources={"lake": lake}, partition_key=day).success
    return lake, day


def test_device_graph_of_the_fixture(device_lake):
    lake, _ = device_lake
    nodes = derived(lake, "device_graph_nodes")
    edges = derived(lake, "device_graph_edges")
    assert dict(nodes.group_by("node_type").len().iter_rows()) == {
        "device": 51,
        "config_entry": 3,
        "integration": 3,
        "entity": 136,
    }
    # the demo integration's config entry serves 49 of the 51 devices: the shared hub of this home
    hubs = nodes.filter("is_hub")
    assert hubs.select("node_id", "n_devices", "integration").rows() == [(f"config_entry:{DEMO_ENTRY}", 49, "demo")]
    # no device of the fixture sits behind another (no via_device)
    assert edges.filter(pl.col("relation") == "via_device").is_empty()
    device_entries = edges.filter((pl.col("relation") == "config_entry") & pl.col("src").str.starts_with("device:"))
    assert device_entries.height == 51 and device_entries["is_primary"].all()
    assert (
        edges.filter(pl.col("relation") == "device").height
        == nodes.filter(pl.col("node_type") == "device")["n_entities"].sum()
    )


def test_no_cascades_in_the_fixture(device_lake):
    lake, day = device_lake
    unavailable = lake.scan_raw("states", day).filter(pl.col("state") == "unavailable").collect()
    assert unavailable.is_empty()
    assert lake.has_day("failure_cascades", day)
    assert derived(lake, "failure_cascades", day).is_empty()


def test_cascade_when_a_hub_goes_down(device_lake, fixture_lake):
    """Three real demo devices put behind one hub; their entities go unavailable within two seconds of
    each other, another entity of the same integration half a minute later."""
    lake, day = device_lake
    enriched = derived(lake, "enriched_states", day)
    dims = build_dimensions(LakeResource(root=str(fixture_lake)))
    with_device = (
        enriched.filter(pl.col("device_id").is_not_null()).unique("device_id", keep="first").sort("entity_id").head(4)
    )
    hub, child_a, child_b, other = with_device["device_id"].cast(pl.String).to_list()
    devices = dims["devices"].with_columns(
        via_device_id=pl.when(pl.col("device_id").is_in([child_a, child_b]))
        .then(pl.lit(hub))
        .otherwise(pl.col("via_device_id"))
    )
    start = enriched["last_updated"].max() + timedelta(minutes=1)
    drops = with_device.with_columns(
        state=pl.lit("unavailable"),
        old_state=pl.lit("on"),
        last_updated=pl.Series(
            [start, start + timedelta(seconds=1), start + timedelta(seconds=2), start + timedelta(seconds=40)]
        ),
    )
    cascades = failure_cascades(drops.lazy(), devices)
    hub_level = cascades.filter(pl.col("level") == "hub").row(0, named=True)
    assert (hub_level["group_id"], hub_level["n_entities"], hub_level["parent_unavailable"]) == (hub, 3, True)
    assert hub_level["entity_ids"] == sorted(with_device["entity_id"].head(3).to_list())
    entry_level = cascades.filter(pl.col("level") == "config_entry")
    assert entry_level["n_entities"].to_list() == [3]  # the 40 s later one is a separate, single drop
    assert cascades.filter(pl.col("level") == "device").is_empty()
