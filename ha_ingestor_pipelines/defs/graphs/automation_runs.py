"""Execution history: each automation or script run and what it changed, followed through HA's contexts.

HA gives each automation run a new context whose ``parent_id`` is the context of what triggered it; a
service call inside the run (and the state changes it makes) carries the run's context id. A script
called directly (``action: script.x``) runs in its caller's context; one started with
``script.turn_on`` gets a new context whose parent is the caller's.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

RUN_EVENTS = {"automation_triggered": "automation", "script_started": "script"}
# "state of E", "numeric state of E", "E via template", "E entering Zone", "E leaving Zone"
SOURCE_ENTITY = r"^(?:(?:numeric )?state of )?([a-z_]+\.[a-z0-9_]+)(?: via template| entering .+| leaving .+)?$"
SOURCE_EVENT = r"^event '(.+)'$"
# a run's own bookkeeping (its last_triggered attribute, a script's on/off) is not something it changed
BOOKKEEPING_DOMAINS = ("automation", "script")
CHANGE = pl.Struct(
    {"entity_id": pl.String, "old_state": pl.String, "state": pl.String, "last_updated": pl.Datetime("us", "UTC")}
)

RUN_SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "run_id": pl.String,
        "kind": pl.String,
        "entity_id": pl.String,
        "name": pl.String,
        "started_at": pl.Datetime("us", "UTC"),
        "context_id": pl.String,
        "context_parent_id": pl.String,
        "trigger_source": pl.String,
        "trigger_entity_id": pl.String,
        "trigger_event": pl.String,
        "caused_by_run_id": pl.String,
        "caused_by_entity_id": pl.String,
        "cause": pl.String,
        "shared_context": pl.Boolean,
        "n_state_changes": pl.Int64,
        "changed_entity_ids": pl.List(pl.String),
        "changes": pl.List(CHANGE),
        "services": pl.List(pl.String),
        "last_change_at": pl.Datetime("us", "UTC"),
    }
)


def automation_runs(
    events: pl.LazyFrame, states: pl.LazyFrame, window: tuple[datetime, datetime] | None = None
) -> pl.DataFrame:
    """One row per ``automation_triggered`` / ``script_started`` event (started within ``window`` when
    given; ``events`` and ``states`` may reach beyond it so causes and late changes are found).

    ``caused_by_*``: the run that started this one: for a script sharing its context with an earlier
    run, that caller (``cause = 'call'``); else the latest run of this run's parent context, i.e. the run
    whose state change triggered it or that started it with ``script.turn_on`` (``cause = 'parent'``).
    ``changes``: the state rows carrying the run's context (every run of a shared context gets them all).
    """
    source = pl.col("data").str.json_path_match("$.source")
    runs = (
        events.filter(pl.col("event_type").is_in(list(RUN_EVENTS)))
        .select(
            "home",
            run_id=pl.col("event_id"),
            kind=pl.col("event_type").replace_strict(RUN_EVENTS, return_dtype=pl.String),
            entity_id=pl.coalesce(pl.col("entity_id"), pl.col("data").str.json_path_match("$.entity_id")),
            name=pl.col("data").str.json_path_match("$.name"),
            started_at=pl.col("time_fired"),
            context_id="context_id",
            context_parent_id="context_parent_id",
            trigger_source=source,
        )
        .with_columns(
            trigger_entity_id=pl.col("trigger_source").str.extract(SOURCE_ENTITY),
            trigger_event=pl.col("trigger_source").str.extract(SOURCE_EVENT),
        )
        .sort("started_at", "run_id")
        .collect()
    )
    callers = runs.select(
        "home", "context_id", caller_at="started_at", caller_run_id="run_id", caller_entity_id="entity_id"
    )
    same = (
        runs.filter(pl.col("kind") == "script")
        .join_asof(
            callers,
            left_on="started_at",
            right_on="caller_at",
            by=["home", "context_id"],
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .filter(pl.col("caller_run_id").is_not_null())
        .select("run_id", call_run_id="caller_run_id", call_entity_id="caller_entity_id")
    )
    parent = runs.join_asof(
        callers.rename({"context_id": "context_parent_id"}),
        left_on="started_at",
        right_on="caller_at",
        by=["home", "context_parent_id"],
        strategy="backward",
        check_sortedness=False,
    ).select("run_id", parent_run_id="caller_run_id", parent_entity_id="caller_entity_id")
    shared = runs.group_by("home", "context_id").agg(shared_context=pl.len() > 1)
    runs = (
        runs.join(same, on="run_id", how="left")
        .join(parent, on="run_id", how="left")
        .join(shared, on=["home", "context_id"], how="left")
        .with_columns(
            caused_by_run_id=pl.coalesce("call_run_id", "parent_run_id"),
            caused_by_entity_id=pl.coalesce("call_entity_id", "parent_entity_id"),
            cause=pl.when(pl.col("call_run_id").is_not_null())
            .then(pl.lit("call"))
            .when(pl.col("parent_run_id").is_not_null())
            .then(pl.lit("parent")),
        )
    )

    contexts = runs.select("home", "context_id").unique()
    changes = (
        states.filter(pl.col("context_id").is_not_null() & ~pl.col("domain").is_in(BOOKKEEPING_DOMAINS))
        .join(contexts.lazy(), on=["home", "context_id"], how="semi")
        .sort("last_updated", "entity_id")
        .group_by("home", "context_id", maintain_order=True)
        .agg(
            n_state_changes=pl.len().cast(pl.Int64),
            changed_entity_ids=pl.col("entity_id").unique(maintain_order=True),
            changes=pl.struct("entity_id", "old_state", "state", "last_updated"),
            last_change_at=pl.col("last_updated").max(),
        )
        .collect()
    )
    services = (
        events.filter(pl.col("event_type") == "call_service")
        .join(contexts.lazy(), on=["home", "context_id"], how="semi")
        .sort("time_fired")
        .group_by("home", "context_id", maintain_order=True)
        .agg(
            services=(
                pl.col("data").str.json_path_match("$.domain") + "." + pl.col("data").str.json_path_match("$.service")
            )
        )
        .collect()
    )
    runs = (
        runs.join(changes, on=["home", "context_id"], how="left")
        .join(services, on=["home", "context_id"], how="left")
        .with_columns(
            pl.col("n_state_changes").fill_null(0),
            pl.col("changed_entity_ids", "services").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            pl.col("changes").fill_null(pl.lit([], dtype=pl.List(CHANGE))),
        )
    )
    if window is not None:
        runs = runs.filter(pl.col("started_at").is_between(window[0], window[1], closed="left"))
    return runs.select(RUN_SCHEMA.names()).cast(dict(RUN_SCHEMA)).sort("home", "started_at", "run_id")
