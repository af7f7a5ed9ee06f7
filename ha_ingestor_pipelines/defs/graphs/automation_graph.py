"""The automation graph: config edges and observed edges merged, automation-to-automation flows, cycles.

A *flow* ``X -> Y via E`` means automation or script X acts on E (or fires event E) and E triggers
automation Y. From configs, a flow exists only when the states X's service can leave E in can match Y's
trigger (``turn_off`` does not fire a ``to: "on"`` trigger); observed flows come from runs whose parent
context is another run's. Cycles are cycles of flows and script calls.
"""

from __future__ import annotations

import hashlib

import networkx as nx
import polars as pl

from .automation_config import EDGE_SCHEMA, NODE_SCHEMA

KEY = ["home", "src", "dst", "relation", "via"]
CHAIN_RELATIONS = ("flow", "call")
GRAPH_EDGE_SCHEMA = pl.Schema(
    {
        **EDGE_SCHEMA,
        "via": pl.String,
        "in_config": pl.Boolean,
        "n_observed": pl.Int64,
        "first_observed": pl.Datetime("us", "UTC"),
        "last_observed": pl.Datetime("us", "UTC"),
    }
)
GRAPH_NODE_SCHEMA = pl.Schema(
    {
        **NODE_SCHEMA,
        "n_runs": pl.Int64,
        "first_run": pl.Datetime("us", "UTC"),
        "last_run": pl.Datetime("us", "UTC"),
        "n_writers": pl.Int64,
        "n_config_writers": pl.Int64,
        "writers": pl.List(pl.String),
        "n_triggered": pl.Int64,
        "in_cycle": pl.Boolean,
    }
)
CYCLE_SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "cycle_id": pl.String,
        "length": pl.Int64,
        "nodes": pl.List(pl.String),
        "entities": pl.List(pl.String),
        "in_config": pl.Boolean,
        "observed": pl.Boolean,
        "n_observed_hops": pl.Int64,
        "first_observed": pl.Datetime("us", "UTC"),
        "last_observed": pl.Datetime("us", "UTC"),
    }
)


def _runnable(node: pl.Expr) -> pl.Expr:
    return node.str.starts_with("automation.") | node.str.starts_with("script.")


def config_flows(edges: pl.DataFrame) -> pl.DataFrame:
    """``flow`` edges implied by configs: X acts on (or fires) E, E triggers Y, and the states match."""
    acts = edges.filter(pl.col("relation").is_in(["action", "fire_event"])).select(
        "home", "src", via="dst", results="to_states"
    )
    triggers = (
        edges.filter(pl.col("relation") == "trigger")
        .select("home", "dst", trigger_via="src", wanted="to_states")
        .with_columns(domain=pl.col("trigger_via").str.split(".").list.first())
    )
    exact = acts.join(triggers, left_on=["home", "via"], right_on=["home", "trigger_via"]).with_columns(
        trigger_via=pl.col("via")
    )
    everything = (
        acts.filter(pl.col("via").str.starts_with("all:"))
        .with_columns(domain=pl.col("via").str.strip_prefix("all:"))
        .join(triggers, on=["home", "domain"])
    )
    matched = pl.concat(
        [
            exact.select("home", "src", "dst", "trigger_via", "results", "wanted"),
            everything.select("home", "src", "dst", "trigger_via", "results", "wanted"),
        ]
    )
    compatible = (
        pl.col("results").is_null()
        | pl.col("wanted").is_null()
        | (pl.col("results").list.set_intersection(pl.col("wanted")).list.len() > 0)
    )
    return (
        matched.filter(compatible & _runnable(pl.col("src")))
        .select("home", "src", "dst", relation=pl.lit("flow"), via="trigger_via")
        .unique()
    )


def observed_edges(runs: pl.DataFrame, edges: pl.DataFrame) -> pl.DataFrame:
    """Edges seen in the execution history, with how often and when.

    A change in a context shared by a caller and a script it called directly is credited to the script
    when the script's config acts on that entity, else to the caller.
    """
    at = pl.col("started_at")
    trigger = (
        runs.filter(pl.col("kind") == "automation")
        .with_columns(src=pl.coalesce(pl.col("trigger_entity_id"), "event:" + pl.col("trigger_event")))
        .filter(pl.col("src").is_not_null())
        .select("home", "src", dst="entity_id", relation=pl.lit("trigger"), via=pl.lit(None, pl.String), started_at=at)
    )
    changed = (
        runs.select("home", "context_id", "entity_id", "started_at", "cause", "changed_entity_ids")
        .explode("changed_entity_ids")
        .rename({"changed_entity_ids": "target"})
        .filter(pl.col("target").is_not_null())
        .with_columns(called=(pl.col("cause") == "call").fill_null(False))
    )
    script_targets = (
        edges.filter((pl.col("relation") == "action") & pl.col("src").str.starts_with("script."))
        .select("home", entity_id="src", target="dst")
        .unique()
    )
    claimed = (
        changed.filter("called")
        .join(script_targets, on=["home", "entity_id", "target"], how="semi")
        .select("home", "context_id", "target")
        .unique()
    )
    by_script = changed.filter("called").join(claimed, on=["home", "context_id", "target"], how="semi")
    by_caller = changed.filter(~pl.col("called")).join(claimed, on=["home", "context_id", "target"], how="anti")
    action = pl.concat([by_script, by_caller]).select(
        "home", src="entity_id", dst="target", relation=pl.lit("action"), via=pl.lit(None, pl.String), started_at=at
    )
    caused = runs.filter(pl.col("caused_by_entity_id").is_not_null())
    call = caused.filter(pl.col("kind") == "script").select(
        "home",
        src="caused_by_entity_id",
        dst="entity_id",
        relation=pl.lit("call"),
        via=pl.lit(None, pl.String),
        started_at=at,
    )
    flow = caused.filter(pl.col("kind") == "automation").select(
        "home",
        src="caused_by_entity_id",
        dst="entity_id",
        relation=pl.lit("flow"),
        via=pl.coalesce(pl.col("trigger_entity_id"), "event:" + pl.col("trigger_event")),
        started_at=at,
    )
    return (
        pl.concat([trigger, action, call, flow])
        .group_by(KEY)
        .agg(n_observed=pl.len().cast(pl.Int64), first_observed=at.min(), last_observed=at.max())
    )


def automation_graph(
    config_nodes: pl.DataFrame, config_edges: pl.DataFrame, runs: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(nodes, edges, cycles) from the configs (``automation_config.config_graph``) and the runs."""
    configured = pl.concat(
        [
            config_edges.with_columns(via=pl.lit(None, pl.String)),
            config_flows(config_edges).with_columns(
                service=pl.lit(None, pl.String),
                to_states=pl.lit(None, pl.List(pl.String)),
                trigger_platform=pl.lit(None, pl.String),
            ),
        ],
        how="diagonal",
    )
    configured = (
        configured.group_by(KEY, maintain_order=True)
        .agg(pl.col("service", "to_states", "trigger_platform").first())
        .with_columns(in_config=pl.lit(True))
    )
    edges = (
        configured.join(observed_edges(runs, config_edges), on=KEY, how="full", coalesce=True, nulls_equal=True)
        .with_columns(pl.col("in_config").fill_null(False), pl.col("n_observed").fill_null(0))
        .select(GRAPH_EDGE_SCHEMA.names())
        .cast(dict(GRAPH_EDGE_SCHEMA))
        .sort("home", "relation", "src", "dst", "via", nulls_last=True)
    )
    cycles = automation_cycles(edges)
    return _nodes(config_nodes, edges, runs, cycles), edges, cycles


def _node_type(node: pl.Expr) -> pl.Expr:
    prefix = node.str.extract(r"^(event|all|area|device|floor|label):")
    domain = node.str.split(".").list.first()
    return (
        pl.when(prefix == "all")
        .then(pl.lit("all_entities"))
        .when(prefix.is_not_null())
        .then(prefix)
        .when(domain.is_in(["automation", "script"]))
        .then(domain)
        .otherwise(pl.lit("entity"))
    )


def _nodes(config_nodes: pl.DataFrame, edges: pl.DataFrame, runs: pl.DataFrame, cycles: pl.DataFrame) -> pl.DataFrame:
    ends = pl.concat(
        [
            edges.select("home", node_id="src"),
            edges.select("home", node_id="dst"),
            runs.select("home", node_id="entity_id"),
        ]
    ).unique()
    run_stats = runs.group_by("home", node_id="entity_id").agg(
        n_runs=pl.len().cast(pl.Int64), first_run=pl.col("started_at").min(), last_run=pl.col("started_at").max()
    )
    writers = (
        edges.filter((pl.col("relation") == "action") & _runnable(pl.col("src")))
        .group_by("home", node_id="dst")
        .agg(
            writers=pl.col("src").unique().sort(),
            n_config_writers=pl.col("src").filter("in_config").n_unique().cast(pl.Int64),
        )
        .with_columns(n_writers=pl.col("writers").list.len().cast(pl.Int64))
    )
    triggered = (
        edges.filter(pl.col("relation") == "trigger")
        .group_by("home", node_id="src")
        .agg(n_triggered=pl.col("dst").n_unique().cast(pl.Int64))
    )
    in_cycle = (
        pl.concat(
            [
                cycles.select("home", node_id="nodes").explode("node_id"),
                cycles.select("home", node_id="entities").explode("node_id"),
            ]
        )
        .unique()
        .with_columns(in_cycle=pl.lit(True))
    )
    nodes = (
        ends.join(config_nodes, on=["home", "node_id"], how="left")
        .with_columns(node_type=pl.coalesce("node_type", _node_type(pl.col("node_id"))))
        .join(run_stats, on=["home", "node_id"], how="left")
        .join(writers, on=["home", "node_id"], how="left")
        .join(triggered, on=["home", "node_id"], how="left")
        .join(in_cycle, on=["home", "node_id"], how="left")
        .with_columns(
            pl.col("n_runs", "n_writers", "n_config_writers", "n_triggered").fill_null(0),
            pl.col("writers").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            pl.col("in_cycle").fill_null(False),
        )
    )
    return nodes.select(GRAPH_NODE_SCHEMA.names()).cast(dict(GRAPH_NODE_SCHEMA)).sort("home", "node_type", "node_id")


def automation_cycles(edges: pl.DataFrame) -> pl.DataFrame:
    """Every elementary cycle of flows and script calls, per home, once (starting at its smallest node).

    ``in_config``: every hop is implied by the configs; ``observed``: every hop was seen in the runs.
    """
    rows = []
    chain = edges.filter(pl.col("relation").is_in(CHAIN_RELATIONS))
    for (home,), hops in chain.group_by("home", maintain_order=True):
        graph = nx.DiGraph()
        for edge in hops.iter_rows(named=True):
            pair = (edge["src"], edge["dst"])
            if not graph.has_edge(*pair):
                graph.add_edge(*pair, edges=[])
            graph.edges[pair]["edges"].append(edge)
        for cycle in nx.simple_cycles(graph):
            start = cycle.index(min(cycle))
            cycle = cycle[start:] + cycle[:start]
            pairs = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
            found = [graph.edges[pair]["edges"] for pair in pairs]
            observed_hops = [[e for e in hop if e["n_observed"] > 0] for hop in found]
            firsts = [e["first_observed"] for hop in observed_hops for e in hop]
            lasts = [e["last_observed"] for hop in observed_hops for e in hop]
            rows.append(
                {
                    "home": home,
                    "cycle_id": hashlib.sha1(f"{home}|{'>'.join(cycle)}".encode()).hexdigest()[:16],
                    "length": len(cycle),
                    "nodes": cycle,
                    "entities": [min((e["via"] for e in hop if e["via"]), default=None) for hop in found],
                    "in_config": all(any(e["in_config"] for e in hop) for hop in found),
                    "observed": all(observed_hops),
                    "n_observed_hops": min(sum(e["n_observed"] for e in hop) for hop in found),
                    "first_observed": min(firsts) if all(observed_hops) else None,
                    "last_observed": max(lasts) if all(observed_hops) else None,
                }
            )
    return pl.DataFrame(rows, schema=CYCLE_SCHEMA).sort("home", "cycle_id")
