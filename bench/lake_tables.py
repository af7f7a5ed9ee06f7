"""Delta tables benchmark: one landed day of state rows into the ``states`` table, and DuckDB over 30 days.

1. The day: ``--rows`` state rows (default 1,000,000, made from the bundled recording of a real Home
   Assistant by ``pipelines_validate.make_day``, duplicates included) landed the way the collector lands a
   busy day, in ``--files`` part files (default 8,640: one per 10 s flush). The loader's work (read every
   file, check its schema, deduplicate, one Delta transaction) runs in a fresh process: wall, CPU and peak
   RSS (VmHWM) around the load only.
2. Thirty such days in the Delta table, as the warehouse's ``states`` view reads it (the files of its current
   version), before and after Delta's ``optimize``; the same GROUP BY query on each, median of ``--repeat``
   runs, and the files per day. With ``--glob-days N`` also the landing zone as the old warehouse view read
   it (a glob over every part file, the day's files hard-linked under N dates): slow, as it reads every
   small file's footer.

    .venv/bin/python bench/lake_tables.py
    .venv/bin/python bench/lake_tables.py --rows 200000 --files 864 --days 7 --keep /tmp/bench-tables
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import pipelines_validate  # noqa: E402

from ha_ingestor_lake.schema import DATE_COLUMN  # noqa: E402
from ha_ingestor_lake.tables import TableStore, default_tables_root  # noqa: E402

QUERY = "SELECT entity_id, count(*) AS n, avg(state_num) AS mean FROM {source} GROUP BY 1 ORDER BY n DESC LIMIT 10"


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child_load(lake_root: str, date: str) -> None:
    from ha_ingestor_pipelines.defs.lake.load import load_day

    store = TableStore(default_tables_root(lake_root))
    cpu, wall = time.process_time(), time.perf_counter()
    loaded = load_day(Path(lake_root), "states", date)
    read = time.perf_counter()
    version = store.write("states", loaded.rows, day=date)
    result = {
        "wall_s": time.perf_counter() - wall,
        "read_dedupe_s": read - wall,
        "write_s": time.perf_counter() - read,
        "cpu_s": time.process_time() - cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "files": len(loaded.files),
        "landed_rows": loaded.landed_rows,
        "rows": loaded.rows.num_rows,
        "duplicates": loaded.duplicates,
        "version": version,
    }
    print("RESULT " + json.dumps(result))


def _load_in_child(lake: Path, date: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child-load", str(lake), date], capture_output=True, text=True, cwd=REPO
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def _files_per_day(store: TableStore) -> float:
    table = store.table("states")
    assert table is not None
    actions = pa.table(table.get_add_actions(flatten=True))
    return actions.num_rows / len(set(actions.column(f"partition.{DATE_COLUMN}").to_pylist()))


def _time_query(connection: duckdb.DuckDBPyConnection, source: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        connection.execute(QUERY.format(source=source)).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _warehouse_view(store: TableStore) -> duckdb.DuckDBPyConnection:
    from ha_ingestor_pipelines.defs.sql_models.project import default_models_dir, load_project
    from ha_ingestor_pipelines.defs.sql_models.warehouse import refresh_source_views

    project = load_project(default_models_dir())
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    refresh_source_views(connection, [project.sources["main.states"]], store)
    return connection


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-load":
        _child_load(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8640, help="landing part files the day is spread over")
    parser.add_argument("--days", type=int, default=30, help="days for the query comparison")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--glob-days", type=int, default=0, help="days of the landing glob to query (0: none)")
    parser.add_argument("--keep", type=Path, help="build the bench lake here and keep it")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    lake = args.keep or work / "lake"
    try:
        if lake.exists():
            shutil.rmtree(lake)
        source = pipelines_validate.build_source_lake(work)
        started = time.perf_counter()
        date = pipelines_validate.make_day(source, lake, args.rows, file_rows=-(-args.rows // args.files))
        landing_day = lake / "states" / f"date={date}"
        files = len(list(landing_day.glob("part-*.parquet")))
        print(
            f"bench day {date}: {args.rows:,} state rows in {files:,} landing files (made in "
            f"{time.perf_counter() - started:.0f} s)"
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"polars {pl.__version__}, duckdb {duckdb.__version__}, load average {os.getloadavg()[0]:.1f}"
        )

        load = _load_in_child(lake, date)
        print(
            f"load one day into states: {load['wall_s']:.2f} s wall (read+check+dedupe {load['read_dedupe_s']:.2f} s, "
            f"Delta write {load['write_s']:.2f} s), {load['cpu_s']:.2f} s CPU, peak RSS {load['peak_rss_mb']:.0f} MB; "
            f"{load['files']:,} files, {load['landed_rows']:,} rows landed, {load['duplicates']:,} duplicates "
            f"dropped, {load['rows']:,} rows in the table ({'under' if load['wall_s'] < 10 else 'OVER'} the 10 s "
            f"target)"
        )

        store = TableStore(default_tables_root(lake))
        day_rows = store.scan("states").collect()
        first = dt.date.fromisoformat(date)
        for offset in range(1, args.days):
            day = first + dt.timedelta(days=offset)
            if offset < args.glob_days:
                (lake / "states" / f"date={day}").mkdir()
                for path in landing_day.glob("part-*.parquet"):
                    os.link(path, lake / "states" / f"date={day}" / path.name)
            shifted = day_rows.with_columns(
                pl.col("last_updated") + dt.timedelta(days=offset), pl.lit(day).alias(DATE_COLUMN)
            )
            store.write("states", shifted, day=day.isoformat())
        del day_rows
        print(f"{args.days} days in the table: {args.days * args.rows:,} rows")

        landing_s = None
        if args.glob_days:
            glob = duckdb.connect()
            glob.execute(
                f"CREATE VIEW states AS SELECT * FROM read_parquet('{lake}/states/date=*/*.parquet', "
                f"hive_partitioning = true, union_by_name = true)"
            )
            landing_s = _time_query(glob, "states", args.repeat)
        before_files = _files_per_day(store)
        view_s = _time_query(_warehouse_view(store), "states", args.repeat)
        for offset in range(args.days):
            store.optimize("states", (first + dt.timedelta(days=offset)).isoformat())
        after_files = _files_per_day(store)
        optimized_s = _time_query(_warehouse_view(store), "states", args.repeat)
        print(f"query: {QUERY.format(source='states')}")
        print(f"{'':<52}{'median s':>10}{'files/day':>11}")
        if landing_s is not None:
            print(f"{f'landing glob, {args.glob_days} days (the old view)':<52}{landing_s:>10.2f}{files:>11,}")
        print(f"{f'warehouse states view, {args.days} days, as loaded':<52}{view_s:>10.2f}{before_files:>11,.1f}")
        print(f"{f'warehouse states view, {args.days} days, optimized':<52}{optimized_s:>10.2f}{after_files:>11,.1f}")
        print(f"ratio as loaded / optimized: {view_s / optimized_s:.2f}")
        if landing_s is not None:
            print(
                f"ratio landing glob ({args.glob_days} days) / optimized table ({args.days} days): "
                f"{landing_s / optimized_s:.1f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
