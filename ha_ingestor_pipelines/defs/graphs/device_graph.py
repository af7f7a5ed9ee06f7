"""The device graph (devices, their hubs, config entries, integrations, entities) and failure cascades."""

from __future__ import annotations

import polars as pl

NODE_SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "node_id": pl.String,
        "node_type": pl.String,
        "key": pl.String,
        "name": pl.String,
        "integration": pl.String,
        "area_id": pl.String,
        "manufacturer": pl.String,
        "model": pl.String,
        "root_device_id": pl.String,
        "depth": pl.Int64,
        "n_child_devices": pl.Int64,
        "n_devices": pl.Int64,
        "n_entities": pl.Int64,
        "is_hub": pl.Boolean,
    }
)
EDGE_SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "src": pl.String,
        "dst": pl.String,
        "relation": pl.String,
        "is_primary": pl.Boolean,
    }
)
CASCADE_SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "level": pl.String,
        "group_id": pl.String,
        "cascade_id": pl.String,
        "started_at": pl.Datetime("us", "UTC"),
        "ended_at": pl.Datetime("us", "UTC"),
        "duration_s": pl.Float64,
        "n_entities": pl.Int64,
        "entity_ids": pl.List(pl.String),
        "device_ids": pl.List(pl.String),
        "parent_unavailable": pl.Boolean,
    }
)
CASCADE_WINDOW_S = 5.0


def device_roots(devices: pl.DataFrame) -> pl.DataFrame:
    """(home, device_id, root_device_id, depth): the top of each device's ``via_device`` chain."""
    parent = {(r["home"], r["device_id"]): r["via_device_id"] for r in devices.iter_rows(named=True)}
    rows = []
    for (home, device), _ in parent.items():
        seen, current = [device], device
        while (nxt := parent.get((home, current))) and nxt not in seen and (home, nxt) in parent:
            seen.append(nxt)
            current = nxt
        rows.append({"home": home, "device_id": device, "root_device_id": current, "depth": len(seen) - 1})
    return pl.DataFrame(
        rows, schema={"home": pl.String, "device_id": pl.String, "root_device_id": pl.String, "depth": pl.Int64}
    )


def device_graph(
    devices: pl.DataFrame, entities: pl.DataFrame, config_entries: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(nodes, edges) of the registry as it is now (the current versions of the dimensions).

    Node ids: ``device:<id>``, ``config_entry:<entry_id>``, ``integration:<domain>``, ``entity:<entity_id>``.
    Edges: ``via_device`` (child device -> parent hub), ``config_entry`` (device or device-less entity ->
    entry; ``is_primary`` for a device's primary entry), ``integration`` (entry -> domain), ``device``
    (entity -> device). A hub is a device others connect through, or a config entry serving several
    devices.
    """
    devices = devices.filter("is_current")
    entities = entities.filter("is_current")
    entries = config_entries.filter("is_current")
    roots = device_roots(devices)
    entry_edges = (
        devices.select("home", "device_id", "primary_config_entry", entry="config_entries")
        .explode("entry")
        .filter(pl.col("entry").is_not_null())
        .select(
            "home",
            src="device:" + pl.col("device_id"),
            dst="config_entry:" + pl.col("entry"),
            relation=pl.lit("config_entry"),
            is_primary=pl.col("entry") == pl.col("primary_config_entry").fill_null(""),
        )
    )
    edges = (
        pl.concat(
            [
                devices.filter(pl.col("via_device_id").is_not_null()).select(
                    "home",
                    src="device:" + pl.col("device_id"),
                    dst="device:" + pl.col("via_device_id"),
                    relation=pl.lit("via_device"),
                    is_primary=pl.lit(None, pl.Boolean),
                ),
                entry_edges,
                entries.select(
                    "home",
                    src="config_entry:" + pl.col("entry_id"),
                    dst="integration:" + pl.col("domain"),
                    relation=pl.lit("integration"),
                    is_primary=pl.lit(None, pl.Boolean),
                ),
                entities.filter(pl.col("device_id").is_not_null()).select(
                    "home",
                    src="entity:" + pl.col("entity_id"),
                    dst="device:" + pl.col("device_id"),
                    relation=pl.lit("device"),
                    is_primary=pl.lit(None, pl.Boolean),
                ),
                entities.filter(pl.col("device_id").is_null() & pl.col("config_entry_id").is_not_null()).select(
                    "home",
                    src="entity:" + pl.col("entity_id"),
                    dst="config_entry:" + pl.col("config_entry_id"),
                    relation=pl.lit("config_entry"),
                    is_primary=pl.lit(None, pl.Boolean),
                ),
            ]
        )
        .select(EDGE_SCHEMA.names())
        .cast(dict(EDGE_SCHEMA))
        .unique()
        .sort("home", "relation", "src", "dst")
    )

    def count(relation: str, name: str, where: pl.Expr | None = None) -> pl.DataFrame:
        chosen = pl.col("relation") == relation
        return (
            edges.filter(chosen if where is None else chosen & where)
            .group_by("home", node_id="dst")
            .agg(pl.col("src").n_unique().cast(pl.Int64).alias(name))
        )

    entry_domain = entries.select("home", primary_config_entry="entry_id", integration="domain")
    device_nodes = (
        devices.join(roots, on=["home", "device_id"], how="left")
        .join(entry_domain, on=["home", "primary_config_entry"], how="left")
        .select(
            "home",
            node_id="device:" + pl.col("device_id"),
            node_type=pl.lit("device"),
            key="device_id",
            name=pl.coalesce("name_by_user", "name"),
            integration="integration",
            area_id="area_id",
            manufacturer="manufacturer",
            model="model",
            root_device_id="root_device_id",
            depth="depth",
        )
    )
    entry_nodes = entries.select(
        "home",
        node_id="config_entry:" + pl.col("entry_id"),
        node_type=pl.lit("config_entry"),
        key="entry_id",
        name="title",
        integration="domain",
    )
    integration_nodes = (
        entries.select("home", "domain")
        .unique()
        .select(
            "home",
            node_id="integration:" + pl.col("domain"),
            node_type=pl.lit("integration"),
            key="domain",
            name="domain",
            integration="domain",
        )
    )
    entity_nodes = entities.select(
        "home",
        node_id="entity:" + pl.col("entity_id"),
        node_type=pl.lit("entity"),
        key="entity_id",
        name=pl.coalesce("name", "original_name", "entity_id"),
        integration="platform",
        area_id="area_id",
    )
    nodes = (
        pl.concat([device_nodes, entry_nodes, integration_nodes, entity_nodes], how="diagonal_relaxed")
        .join(count("via_device", "n_child_devices"), on=["home", "node_id"], how="left")
        .join(
            count("config_entry", "n_devices", pl.col("src").str.starts_with("device:")),
            on=["home", "node_id"],
            how="left",
        )
        .join(count("device", "n_entities"), on=["home", "node_id"], how="left")
        .with_columns(pl.col("n_child_devices", "n_devices", "n_entities").fill_null(0))
        .with_columns(is_hub=(pl.col("n_child_devices") > 0) | (pl.col("n_devices") > 1))
    )
    return nodes.select(NODE_SCHEMA.names()).cast(dict(NODE_SCHEMA)).sort("home", "node_type", "node_id"), edges


def failure_cascades(enriched: pl.LazyFrame, devices: pl.DataFrame, window_s: float = CASCADE_WINDOW_S) -> pl.DataFrame:
    """Entities going unavailable together: per device, per hub (the root of a ``via_device`` chain, with
    its children) and per config entry, transitions to ``unavailable`` no more than ``window_s`` apart
    form one episode; an episode of two or more entities is a cascade.

    ``enriched``: ``enriched_states`` rows (``device_id`` and ``config_entry_id`` as of each row);
    ``parent_unavailable`` (hub level): the hub device's own entities are part of it.
    """
    roots = device_roots(devices.filter("is_current"))
    drops = (
        enriched.filter(
            (pl.col("state") == "unavailable")
            & pl.col("old_state").is_not_null()
            & (pl.col("old_state") != "unavailable")
        )
        .select(
            "home",
            "entity_id",
            "last_updated",
            pl.col("device_id").cast(pl.String),
            pl.col("config_entry_id").cast(pl.String),
        )
        .collect()
        .join(roots, on=["home", "device_id"], how="left")
    )
    levels = [
        drops.filter(pl.col("device_id").is_not_null()).with_columns(level=pl.lit("device"), group_id="device_id"),
        drops.filter(
            pl.col("root_device_id").is_not_null() & (pl.col("depth") > 0)
            | pl.col("device_id").is_in(roots.filter(pl.col("depth") > 0)["root_device_id"].implode())
        ).with_columns(level=pl.lit("hub"), group_id=pl.coalesce("root_device_id", "device_id")),
        drops.filter(pl.col("config_entry_id").is_not_null()).with_columns(
            level=pl.lit("config_entry"), group_id="config_entry_id"
        ),
    ]
    group = ["home", "level", "group_id"]
    episodes = (
        pl.concat(levels)
        .sort(*group, "last_updated")
        .with_columns(gap=pl.col("last_updated").diff().over(group).dt.total_microseconds() / 1e6)
        .with_columns(episode=(pl.col("gap").is_null() | (pl.col("gap") > window_s)).cum_sum().over(group))
        .group_by(*group, "episode")
        .agg(
            started_at=pl.col("last_updated").min(),
            ended_at=pl.col("last_updated").max(),
            entity_ids=pl.col("entity_id").unique().sort(),
            device_ids=pl.col("device_id").drop_nulls().unique().sort(),
            parent_unavailable=(pl.col("device_id") == pl.col("group_id")).any(),
        )
        .with_columns(n_entities=pl.col("entity_ids").list.len().cast(pl.Int64))
        .filter(pl.col("n_entities") >= 2)
    )
    return (
        episodes.with_columns(
            duration_s=(pl.col("ended_at") - pl.col("started_at")).dt.total_microseconds() / 1e6,
            parent_unavailable=pl.when(pl.col("level") == "hub").then(pl.col("parent_unavailable")),
            cascade_id=pl.concat_str(
                "level", "group_id", pl.col("started_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"), separator="/"
            ),
        )
        .select(CASCADE_SCHEMA.names())
        .cast(dict(CASCADE_SCHEMA))
        .sort("home", "started_at", "level", "group_id")
    )
