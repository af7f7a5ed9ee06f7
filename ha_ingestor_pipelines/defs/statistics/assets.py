"""Home Assistant's long-term statistics in the lake: hourly (kept by HA forever) and 5-minute (kept ~10 days)."""

import asyncio
import datetime as dt

import dagster as dg
import polars as pl

from ..common.lake_resource import LakeResource
from ..common.partitions import daily_partitions
from .ha_resource import HomeAssistantResource
from .history import FIVE_MINUTE, HOUR, Period, describe_home, history_before, windows
from .transform import SCHEMA, empty_frame

DAY = dt.timedelta(days=1)
CONSUMPTION_NOT_NEGATIVE = "consumption_not_negative"
ONE_ROW_PER_PERIOD = "one_row_per_period"


def _days(start: dt.datetime, end: dt.datetime) -> list[str]:
    return [(start + i * DAY).strftime("%Y-%m-%d") for i in range((end - start) // DAY)]


def _by_day(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    keyed = frame.with_columns(_day=pl.col("start").dt.strftime("%Y-%m-%d"))
    return {day: part.drop("_day") for (day,), part in keyed.partition_by("_day", as_dict=True).items()}


def _markdown(frame: pl.DataFrame) -> str:
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_cols=-1,
        fmt_str_lengths=40,
    ):
        return str(frame)


async def _pull(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    home_assistant: HomeAssistantResource,
    period: Period,
    table: str,
) -> tuple[dict, pl.DataFrame]:
    window = context.partition_time_window
    first_run = not lake.store.exists(table)
    days = _days(window.start, window.end)
    history: dict[str, int] = {}
    async with home_assistant.session() as session:
        home = await describe_home(session)
        written = set()
        async for chunk in windows(session, home, period, window.start, window.end):
            for day, rows in _by_day(chunk).items():
                lake.replace_partition(table, day, rows)
                written.add(day)
        for day in set(days) - written:  # the whole window is replaced, days without rows too
            lake.replace_partition(table, day, empty_frame())
        if first_run:
            async for chunk in history_before(session, home, period, window.start):
                for day, rows in _by_day(chunk).items():
                    lake.replace_partition(table, day, rows)
                    history[day] = rows.height
    for day in sorted(history):
        if daily_partitions.has_partition_key(day):  # so the UI shows the imported days as materialised
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=context.asset_key, partition=day, metadata={"rows": history[day], "imported_by_run": True}
                )
            )
    window_rows = pl.concat([lake.scan_day(table, day).collect() for day in days])
    resets = window_rows.filter(pl.col("meter_reset"))
    return {
        "rows": window_rows.height,
        "statistic_ids": window_rows["statistic_id"].n_unique(),
        "statistic_ids_in_home_assistant": len(home.metadata),
        "meter_resets": dg.MetadataValue.json(
            resets.select("statistic_id", pl.col("start").cast(pl.String)).to_dicts()
        ),
        "history_imported_days": len(history),
        "history_imported_rows": sum(history.values()),
        "history_first_day": min(history, default=None) or "",
        "path": dg.MetadataValue.path(lake.store.uri(table)),
        "preview": dg.MetadataValue.md(_markdown(window_rows.head(10))),
    }, window_rows


def _statistics_asset(period: Period, description: str) -> dg.AssetsDefinition:
    table = f"statistics_{'hourly' if period is HOUR else period.name}"

    @dg.asset(
        key=["derived", table],
        group_name="statistics",
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"deltalake", "homeassistant"},
        description=description,
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name, str(dtype)) for name, dtype in SCHEMA.items()]
            )
        },
        check_specs=[
            dg.AssetCheckSpec(
                CONSUMPTION_NOT_NEGATIVE,
                asset=["derived", table],
                blocking=True,
                description="A meter reset never turns into negative consumption.",
            ),
            dg.AssetCheckSpec(
                ONE_ROW_PER_PERIOD,
                asset=["derived", table],
                blocking=True,
                description="One row per (home, statistic_id, start) in the partition.",
            ),
        ],
    )
    def statistics(
        context: dg.AssetExecutionContext, lake: LakeResource, home_assistant: HomeAssistantResource
    ) -> dg.MaterializeResult:
        metadata, rows = asyncio.run(_pull(context, lake, home_assistant, period, table))
        negative = rows.filter(pl.col("consumption") < 0)
        duplicates = rows.filter(pl.struct("home", "statistic_id", "start").is_duplicated())
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name=CONSUMPTION_NOT_NEGATIVE,
                    passed=negative.is_empty(),
                    metadata={"negative_rows": negative.height},
                ),
                dg.AssetCheckResult(
                    check_name=ONE_ROW_PER_PERIOD,
                    passed=duplicates.is_empty(),
                    metadata={"duplicate_rows": duplicates.height},
                ),
            ],
        )

    return statistics


statistics_hourly = _statistics_asset(
    HOUR,
    "Home Assistant's hourly long-term statistics (mean, min, max of measurements; state, sum, change of meters) "
    "for every statistic id, from `recorder/statistics_during_period`, with `consumption` per hour that a meter "
    "reset never makes negative. The first run also imports every older hour HA holds (years).",
)
statistics_5minute = _statistics_asset(
    FIVE_MINUTE,
    "Home Assistant's 5-minute short-term statistics for every statistic id (HA keeps about 10 days of them); "
    "the first run imports all HA still has.",
)
