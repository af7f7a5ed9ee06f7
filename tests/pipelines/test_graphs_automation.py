"""The automation graph, cycles and execution history from the fixture's configs and events."""

import shutil

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ha_ingestor_lake.tables import AUTOMATION_GRAPH_PICTURE
from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.graphs.assets import automation_graph_tables, automation_runs_by_day
from ha_ingestor_pipelines.defs.graphs.automation_config import config_graph
from ha_ingestor_pipelines.defs.graphs.automation_graph import config_flows

from .lake_tables import derived

CHAIN_A = "automation.chain_a_start_helper_turns_on_run_script"
CHAIN_B = "automation.chain_b_react_to_chain_hop_counter"
PING = "automation.loop_ping_pong"
PONG = "automation.loop_pong_ping"


@pytest.fixture(scope="module")
def graph_lake(fixture_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("graphs") / "lake"
    shutil.copytree(fixture_lake, root)
    lake = LakeResource(root=str(root))
    [day] = lake.raw_dates("events")
    assert dg.materialize([automation_runs_by_day], resources={"lake": lake}, partition_key=day).success
    assert dg.materialize([automation_graph_tables], resources={"lake": lake}).success
    return lake, day


def _table(lake: LakeResource, name: str) -> pl.DataFrame:
    return derived(lake, name)


def test_exactly_the_ping_pong_cycle(graph_lake):
    lake, _ = graph_lake
    cycles = _table(lake, "automation_cycles")
    assert cycles.height == 1
    cycle = cycles.row(0, named=True)
    assert cycle["nodes"] == [PING, PONG]
    assert cycle["entities"] == ["input_boolean.pong", "input_boolean.ping"]
    assert cycle["in_config"] and cycle["observed"] and cycle["n_observed_hops"] > 50
    nodes = _table(lake, "automation_graph_nodes")
    assert set(nodes.filter("in_cycle")["node_id"]) == {PING, PONG, "input_boolean.ping", "input_boolean.pong"}


def test_config_does_not_mistake_turning_off_the_trigger_for_a_loop(fixture_lake):
    # chain A triggers on chain_start turning on and turns it off: no flow back to itself
    lake = LakeResource(root=str(fixture_lake))
    rows = pl.concat([lake.scan_raw_days("registry/automations"), lake.scan_raw_days("registry/scripts")])
    _, edges = config_graph(rows.collect())
    assert edges.filter((pl.col("src") == CHAIN_A) & (pl.col("dst") == "input_boolean.chain_start")).row(0, named=True)[
        "to_states"
    ] == ["off"]
    flows = config_flows(edges)
    assert flows.filter(pl.col("src") == pl.col("dst")).is_empty()
    assert set(flows.filter(pl.col("src").is_in([PING, PONG]))["dst"]) == {PING, PONG}
    assert flows.filter((pl.col("src") == PING) & (pl.col("dst") == PING)).is_empty()


def test_chain_automation_script_counter_automation(graph_lake):
    lake, _ = graph_lake
    edges = _table(lake, "automation_graph_edges")

    def edge(src: str, dst: str, relation: str) -> dict:
        [row] = edges.filter(
            (pl.col("src") == src) & (pl.col("dst") == dst) & (pl.col("relation") == relation)
        ).to_dicts()
        return row

    hops = [
        edge(CHAIN_A, "script.chain_step", "call"),
        edge("script.chain_step", "counter.chain_hops", "action"),
        edge("counter.chain_hops", CHAIN_B, "trigger"),
        edge("script.chain_step", CHAIN_B, "flow"),
    ]
    assert all(h["in_config"] and h["n_observed"] > 0 for h in hops)
    assert hops[-1]["via"] == "counter.chain_hops"


def test_runs_follow_the_context_chain(graph_lake):
    lake, day = graph_lake
    runs = derived(lake, "automation_runs", day)
    events = lake.scan_raw("events", day).collect()
    assert (
        runs.height
        == events.filter(pl.col("event_type").is_in(["automation_triggered", "script_started"])).height
        == 742
    )
    by_id = {r["run_id"]: r for r in runs.iter_rows(named=True)}
    chains = []
    for run in by_id.values():
        if run["entity_id"] == CHAIN_B and run["cause"] == "parent":
            script = by_id[run["caused_by_run_id"]]
            if script["cause"] == "call":
                chains.append((by_id[script["caused_by_run_id"]]["entity_id"], script["entity_id"], run))
    assert chains and {(a, s) for a, s, _ in chains} == {(CHAIN_A, "script.chain_step")}
    for _, _, run in chains:
        assert run["trigger_entity_id"] == "counter.chain_hops"
    # what a run changed carries its context in the lake
    states = lake.scan_raw("states", day).collect()
    ping_run = runs.filter((pl.col("entity_id") == PING) & (pl.col("cause") == "parent")).row(0, named=True)
    own = states.filter((pl.col("context_id") == ping_run["context_id"]) & (pl.col("domain") != "automation"))
    assert [c["entity_id"] for c in ping_run["changes"]] == own.sort("last_updated")["entity_id"].to_list()
    assert ping_run["changed_entity_ids"] == ["input_boolean.ping", "input_boolean.pong"]
    assert ping_run["caused_by_entity_id"] == PONG


def test_several_automations_act_on_one_entity(graph_lake):
    lake, _ = graph_lake
    nodes = _table(lake, "automation_graph_nodes")
    writers = dict(nodes.filter(pl.col("node_type") == "entity").select("node_id", "n_config_writers").iter_rows())
    assert writers["counter.automation_runs"] == 3  # hall light on, doorbell, queued lock counter
    assert writers["input_text.last_note"] == 4  # chain B, custom event, arrival, start_laundry script
    assert writers["input_boolean.ping"] == 2


def test_graph_picture(graph_lake):
    lake, _ = graph_lake
    picture = lake.path / AUTOMATION_GRAPH_PICTURE
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_rerun_gives_identical_runs(graph_lake):
    lake, day = graph_lake
    before = derived(lake, "automation_runs", day)
    assert dg.materialize([automation_runs_by_day], resources={"lake": lake}, partition_key=day).success
    assert_frame_equal(derived(lake, "automation_runs", day), before, check_row_order=False)
