"""Relationships: the device graph and failure cascades, the automation graph, execution history."""

from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from ha_ingestor_lake.tables import AUTOMATION_GRAPH_PICTURE

from ..common.asset_keys import (
    AUTOMATION_CYCLES,
    AUTOMATION_EDGES,
    AUTOMATION_NODES,
    AUTOMATION_RUNS,
    DEVICE_EDGES,
    DEVICE_NODES,
    DIMENSION_KEYS,
    ENRICHED_STATES,
    FAILURE_CASCADES,
    LAKE_EVENTS,
    LAKE_REGISTRY,
    LAKE_STATES,
    table_name,
)
from ..common.lake_resource import LakeResource
from ..common.metadata import markdown_preview, table_metadata
from ..common.partitions import daily_partitions, neighbour_day
from .automation_config import config_graph
from .automation_graph import automation_graph
from .automation_runs import RUN_SCHEMA, automation_runs
from .device_graph import device_graph, failure_cascades
from .render import render_automation_graph

GROUP = "graphs"
# how far a run's causes and effects may reach into the neighbouring days
RUN_MARGIN = timedelta(minutes=10)


_name = table_name


def _dimension(lake: LakeResource, kind: str) -> pl.DataFrame:
    """A registry dimension as the enrichment domain wrote it."""
    frame = lake.scan_derived(_name(DIMENSION_KEYS[kind]))
    if frame is None:
        raise dg.Failure(f"{_name(DIMENSION_KEYS[kind])} was never written: materialise the registry dimensions first")
    return frame.collect()


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            DEVICE_NODES,
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            deps=[DIMENSION_KEYS[k] for k in ("devices", "entities", "config_entries")],
            description="Devices, config entries, integrations and entities as graph nodes (current "
            "registry), with child-device, device and entity counts and hub flags.",
        ),
        dg.AssetSpec(
            DEVICE_EDGES,
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            deps=[DIMENSION_KEYS[k] for k in ("devices", "entities", "config_entries")],
            description="Edges of the device graph: via_device (child -> hub), config_entry, "
            "integration, device (entity -> device).",
        ),
    ],
)
def device_graph_tables(lake: LakeResource) -> Iterator[dg.MaterializeResult]:
    """The device graph as two tables (``device_graph_nodes``, ``device_graph_edges``)."""
    nodes, edges = device_graph(
        _dimension(lake, "devices"), _dimension(lake, "entities"), _dimension(lake, "config_entries")
    )
    yield dg.MaterializeResult(
        asset_key=DEVICE_NODES,
        metadata={
            **table_metadata(
                nodes,
                lake.write_table(_name(DEVICE_NODES), nodes),
                ["node_id", "node_type", "name", "n_child_devices", "n_devices", "n_entities", "is_hub"],
            ),
            "hubs": dg.MetadataValue.int(nodes.filter("is_hub").height),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DEVICE_EDGES,
        metadata=table_metadata(
            edges, lake.write_table(_name(DEVICE_EDGES), edges), ["src", "dst", "relation", "is_primary"]
        ),
    )


@dg.asset(
    key=FAILURE_CASCADES,
    group_name=GROUP,
    kinds={"polars", "deltalake"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[ENRICHED_STATES, DIMENSION_KEYS["devices"]],
)
def failure_cascades_by_day(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Entities that went unavailable together (within a few seconds) per device, per hub with its child
    devices, and per config entry, from the day's ``enriched_states``."""
    devices = _dimension(lake, "devices")
    total, path = 0, None
    for day in context.partition_keys:
        enriched = lake.scan_day(_name(ENRICHED_STATES), day)
        if enriched is None:
            raise dg.Failure(f"{_name(ENRICHED_STATES)} was never written: materialise it first")
        cascades = failure_cascades(enriched, devices)
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
    events = lake.scan_raw_days("events", [before, day, after]).filter(
        pl.col("time_fired").is_between(window[0] - RUN_MARGIN, window[1] + RUN_MARGIN, closed="left")
    )
    states = lake.scan_raw_days("states", [day, after]).filter(pl.col("last_updated") < window[1] + RUN_MARGIN)
    return automation_runs(events, states, window)


@dg.asset(
    key=AUTOMATION_RUNS,
    group_name=GROUP,
    kinds={"polars", "deltalake"},
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
            kinds={"polars", "deltalake"},
            deps=[LAKE_REGISTRY, AUTOMATION_RUNS],
            description="Automations, scripts, entities, events in the automation graph, with run "
            "counts, how many automations act on each entity, and cycle membership.",
        ),
        dg.AssetSpec(
            AUTOMATION_EDGES,
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            deps=[LAKE_REGISTRY, AUTOMATION_RUNS],
            description="trigger / condition / reads / action / call / fire_event / flow edges, "
            "each marked as configured and/or observed (with counts and times).",
        ),
        dg.AssetSpec(
            AUTOMATION_CYCLES,
            group_name=GROUP,
            kinds={"polars", "deltalake"},
            deps=[LAKE_REGISTRY, AUTOMATION_RUNS],
            description="Circular dependencies: cycles of automation flows and script calls, "
            "configured and/or observed.",
        ),
    ],
)
def automation_graph_tables(context: dg.AssetExecutionContext, lake: LakeResource) -> Iterator[dg.MaterializeResult]:
    """The automation graph from the latest automation and script configs in the lake plus every day of
    ``automation_runs``; also renders ``<lake>/reports/automation_graph.png``."""
    configs = pl.concat([lake.scan_raw_days("registry/automations"), lake.scan_raw_days("registry/scripts")]).collect()
    config_nodes, config_edges = config_graph(configs)
    stored_runs = lake.scan_derived(_name(AUTOMATION_RUNS))
    runs = (
        stored_runs.select(RUN_SCHEMA.names()).collect() if stored_runs is not None else pl.DataFrame(schema=RUN_SCHEMA)
    )
    nodes, edges, cycles = automation_graph(config_nodes, config_edges, runs)
    nodes_path = lake.write_table(_name(AUTOMATION_NODES), nodes)
    (lake.path / AUTOMATION_GRAPH_PICTURE).parent.mkdir(parents=True, exist_ok=True)
    picture = render_automation_graph(nodes, edges, lake.path / AUTOMATION_GRAPH_PICTURE)
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
            lake.write_table(_name(AUTOMATION_EDGES), edges),
            ["src", "dst", "relation", "via", "in_config", "n_observed"],
        ),
    )
    yield dg.MaterializeResult(
        asset_key=AUTOMATION_CYCLES,
        metadata={
            **table_metadata(
                cycles,
                lake.write_table(_name(AUTOMATION_CYCLES), cycles),
                ["nodes", "entities", "in_config", "observed", "n_observed_hops"],
            ),
            "cycles": markdown_preview(cycles, ["nodes", "entities", "observed"], rows=20),
        },
    )
