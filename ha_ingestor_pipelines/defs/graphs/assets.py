"""Relationships: the device graph and failure cascades, the automation graph, execution history."""

from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
from ha_ingestor_pipelines.defs.common.partitions import daily_partitions
from ha_ingestor_pipelines.defs.enrichment.assets import DIMENSION_KEYS, ENRICHED_STATES, LAKE_REGISTRY
from ha_ingestor_pipelines.defs.enrichment.metadata import markdown_preview, table_metadata
from ha_ingestor_pipelines.defs.enrichment.tables import load_dimensions, neighbour_day, scan_raw_days, write_table

from ..common.lake_keys import LAKE_EVENTS, LAKE_STATES
from .automation_config import config_graph
from .automation_graph import automation_graph
from .automation_runs import RUN_SCHEMA, automation_runs
from .device_graph import device_graph, failure_cascades
from .render import render_automation_graph

GROUP = "graphs"
DEVICE_NODES = dg.AssetKey(["derived", "device_graph_nodes"])
DEVICE_EDGES = dg.AssetKey(["derived", "device_graph_edges"])
FAILURE_CASCADES = dg.AssetKey(["derived", "failure_cascades"])
AUTOMATION_RUNS = dg.AssetKey(["derived", "automation_runs"])
AUTOMATION_NODES = dg.AssetKey(["derived", "automation_graph_nodes"])
AUTOMATION_EDGES = dg.AssetKey(["derived", "automation_graph_edges"])
AUTOMATION_CYCLES = dg.AssetKey(["derived", "automation_cycles"])
GRAPH_PICTURE = "automation_graph.png"
# how far a run's causes and effects may reach into the neighbouring days
RUN_MARGIN = timedelta(minutes=10)


def _name(key: dg.AssetKey) -> str:
    return key.path[-1]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            DEVICE_NODES,
            group_name=GROUP,
            kinds={"polars", "parquet"},
            deps=[DIMENSION_KEYS[k] for k in ("devices", "entities", "config_entries")],
            description="Devices, config entries, integrations and entities as graph nodes (current "
            "registry), with child-device, device and entity counts and hub flags.",
        ),
        dg.AssetSpec(
            DEVICE_EDGES,
            group_name=GROUP,
            kinds={"polars", "parquet"},
            deps=[DIMENSION_KEYS[k] for k in ("devices", "entities", "config_entries")],
            description="Edges of the device graph: via_device (child -> hub), config_entry, "
            "integration, device (entity -> device).",
        ),
    ],
)
def device_graph_tables(lake: LakeResource) -> Iterator[dg.MaterializeResult]:
    """The device graph as two Parquet tables (``derived/device_graph_nodes``, ``.../device_graph_edges``)."""
    dims = load_dimensions(lake)
    nodes, edges = device_graph(dims.devices.collect(), dims.entities.collect(), dims.config_entries.collect())
    yield dg.MaterializeResult(
        asset_key=DEVICE_NODES,
        metadata={
            **table_metadata(
                nodes,
                write_table(lake, _name(DEVICE_NODES), nodes),
                ["node_id", "node_type", "name", "n_child_devices", "n_devices", "n_entities", "is_hub"],
            ),
            "hubs": dg.MetadataValue.int(nodes.filter("is_hub").height),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DEVICE_EDGES,
        metadata=table_metadata(
            edges, write_table(lake, _name(DEVICE_EDGES), edges), ["src", "dst", "relation", "is_primary"]
        ),
    )


@dg.asset(
    key=FAILURE_CASCADES,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[ENRICHED_STATES, DIMENSION_KEYS["devices"]],
)
def failure_cascades_by_day(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Entities that went unavailable together (within a few seconds) per device, per hub with its child
    devices, and per config entry, from the day's ``enriched_states``."""
    devices = load_dimensions(lake).devices.collect()
    total, path = 0, None
    for day in context.partition_keys:
        cascades = failure_cascades(pl.scan_parquet(lake.derived_file(_name(ENRICHED_STATES), day)), devices)
        path = lake.replace_partition(_name(FAILURE_CASCADES), day, cascades)
        total += cascades.height
    return dg.MaterializeResult(
        metadata={"dagster/row_count": dg.MetadataValue.int(total), "path": dg.MetadataValue.path(str(path))}
    )


def runs_of_day(lake: LakeResource, day: str) -> pl.DataFrame:
    """Runs started on ``day`` (UTC); the neighbouring days' edges supply causes and late effects."""
    window = (
        datetime.fromisoformat(f"{day}T00:00:00+00:00"),
        datetime.fromisoformat(f"{neighbour_day(day, 1)}T00:00:00+00:00"),
    )
    before, after = neighbour_day(day, -1), neighbour_day(day, 1)
    events = pl.concat(
        [
            lake.scan_raw("events", before).filter(pl.col("time_fired") >= window[0] - RUN_MARGIN),
            lake.scan_raw("events", day),
            lake.scan_raw("events", after).filter(pl.col("time_fired") < window[1] + RUN_MARGIN),
        ]
    )
    states = pl.concat(
        [
            lake.scan_raw("states", day),
            lake.scan_raw("states", after).filter(pl.col("last_updated") < window[1] + RUN_MARGIN),
        ]
    )
    return automation_runs(events, states, window)


@dg.asset(
    key=AUTOMATION_RUNS,
    group_name=GROUP,
    kinds={"polars", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[LAKE_EVENTS, LAKE_STATES],
)
def automation_runs_by_day(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Execution history: every ``automation_triggered`` and ``script_started`` run of the day, what
    triggered it, which run caused it (through HA's context chain), the state changes and service calls
    made in its context."""
    frames = []
    for day in context.partition_keys:
        runs = runs_of_day(lake, day)
        path = lake.replace_partition(_name(AUTOMATION_RUNS), day, runs)
        frames.append(runs)
    runs = pl.concat(frames)
    return dg.MaterializeResult(
        metadata={
            **table_metadata(
                runs,
                path,
                [
                    "entity_id",
                    "started_at",
                    "trigger_entity_id",
                    "caused_by_entity_id",
                    "n_state_changes",
                    "changed_entity_ids",
                ],
            ),
            "runs_caused_by_another_run": dg.MetadataValue.int(runs.filter(pl.col("cause").is_not_null()).height),
        }
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            AUTOMATION_NODES,
            group_name=GROUP,
            kinds={"polars", "parquet"},
            deps=[LAKE_REGISTRY, AUTOMATION_RUNS],
            description="Automations, scripts, entities, events in the automation graph, with run "
            "counts, how many automations act on each entity, and cycle membership.",
        ),
        dg.AssetSpec(
            AUTOMATION_EDGES,
            group_name=GROUP,
            kinds={"polars", "parquet"},
            deps=[LAKE_REGISTRY, AUTOMATION_RUNS],
            description="trigger / condition / reads / action / call / fire_event / flow edges, "
            "each marked as configured and/or observed (with counts and times).",
        ),
        dg.AssetSpec(
            AUTOMATION_CYCLES,
            group_name=GROUP,
            kinds={"polars", "parquet"},
            deps=[LAKE_REGISTRY, AUTOMATION_RUNS],
            description="Circular dependencies: cycles of automation flows and script calls, "
            "configured and/or observed.",
        ),
    ],
)
def automation_graph_tables(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[dg.MaterializeResult]:
    """The automation graph from the latest automation and script configs in the lake plus every day of
    ``automation_runs``; also renders ``derived/automation_graph_nodes/automation_graph.png``."""
    configs = pl.concat(
        [scan_raw_days(lake, "registry/automations"), scan_raw_days(lake, "registry/scripts")]
    ).collect()
    config_nodes, config_edges = config_graph(configs)
    runs_dir = lake.path / "derived" / _name(AUTOMATION_RUNS)
    runs = (
        lake.scan_derived(_name(AUTOMATION_RUNS)).select(RUN_SCHEMA.names()).collect()
        if any(runs_dir.glob("date=*/data.parquet"))
        else pl.DataFrame(schema=RUN_SCHEMA)
    )
    nodes, edges, cycles = automation_graph(config_nodes, config_edges, runs)
    nodes_path = write_table(lake, _name(AUTOMATION_NODES), nodes)
    picture = render_automation_graph(nodes, edges, nodes_path.parent / GRAPH_PICTURE)
    context.log.info("automation graph: %d nodes, %d edges, %d cycles", nodes.height, edges.height, cycles.height)
    yield dg.MaterializeResult(
        asset_key=AUTOMATION_NODES,
        metadata={
            **table_metadata(nodes, nodes_path, ["node_id", "node_type", "name", "n_runs", "n_writers", "in_cycle"]),
            "picture": dg.MetadataValue.path(str(picture)),
            "entities_with_several_writers": dg.MetadataValue.int(
                nodes.filter((pl.col("node_type") == "entity") & (pl.col("n_config_writers") > 1)).height
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key=AUTOMATION_EDGES,
        metadata=table_metadata(
            edges,
            write_table(lake, _name(AUTOMATION_EDGES), edges),
            ["src", "dst", "relation", "via", "in_config", "n_observed"],
        ),
    )
    yield dg.MaterializeResult(
        asset_key=AUTOMATION_CYCLES,
        metadata={
            **table_metadata(
                cycles,
                write_table(lake, _name(AUTOMATION_CYCLES), cycles),
                ["nodes", "entities", "in_config", "observed", "n_observed_hops"],
            ),
            "cycles": markdown_preview(cycles, ["nodes", "entities", "observed"], rows=20),
        },
    )
