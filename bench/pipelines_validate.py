"""Validation benchmark: one UTC day of 1 million state rows through validation, typed values and the
contract check (and the enrichment assets when the repo has them), each step in its own process.

The day is made from real rows: the bundled recording of a real Home Assistant is collected into a
lake by the real collector (replay server), and its state rows are replicated across the day with
each copy's entity ids and times varied (``--rows`` in all); the entity registry gets an entry per entity
id copy, so the enrichment finds each row's device, area and labels. Like a real day, it holds a few
duplicates (a backfill that overlaps live rows), a few broken rows, sensors reporting in °F, and
entities going unavailable. Every step runs in a fresh subprocess that has imported the pipeline code
(Dagster included) before its clock starts; it reports its wall and CPU time and its peak RSS (VmHWM:
interpreter and imports included). The enrichment assets are materialised one node per process, by
Dagster, with the project's definitions loaded before the clock starts (as a run's process loads its code
location before it runs a step); their time includes Dagster's run machinery.

    .venv/bin/python bench/pipelines_validate.py                # 1,000,000 rows
    .venv/bin/python bench/pipelines_validate.py --rows 200000 --keep /tmp/bench-lake
    .venv/bin/python bench/pipelines_validate.py --keep /tmp/bench-lake --reuse --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
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

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ha_ingestor.demo import collect_recording  # noqa: E402
from ha_ingestor_lake.schema import STATES  # noqa: E402

FILE_ROWS = 100_000  # the collector's default --flush-rows
ENTITY_VARIANTS = 40
DUPLICATE_SHARE = 0.005
BROKEN_SHARE = 0.0005
FAHRENHEIT_SHARE = 0.1
UNAVAILABLE_SHARE = 0.002


def build_source_lake(work: Path) -> Path:
    """The real collector's lake of the bundled recording."""
    asyncio.run(collect_recording(work / "source" / "lake", work / "source" / "state"))
    return work / "source" / "lake"


def make_day(source_lake: Path, target_lake: Path, rows: int, file_rows: int = FILE_ROWS) -> str:
    """Write ``rows`` state rows for one UTC day into ``target_lake``'s landing zone, ``file_rows`` per part file
    (plus the source's registry)."""
    files = sorted((source_lake / "states").glob("date=*/*.parquet"))
    real = pl.read_parquet(files)
    date = real["last_updated"].min().date()
    day_start = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC)
    span = real["last_updated"].max() - real["last_updated"].min()
    copies = -(-rows // real.height)
    step = (dt.timedelta(days=1) - span - dt.timedelta(seconds=1)) / copies
    first = real["last_updated"].min()

    replicas = pl.DataFrame({"copy": pl.int_range(copies, eager=True)})
    shift = pl.lit(day_start - first) + pl.col("copy").cast(pl.Int64) * pl.lit(step)
    day = (
        real.join(replicas, how="cross")
        .head(rows)
        .with_columns(
            (pl.col("entity_id") + "_" + (pl.col("copy") % ENTITY_VARIANTS).cast(pl.String)).alias("entity_id"),
            *[(pl.col(c) + shift).alias(c) for c in ("last_changed", "last_updated", "last_reported", "received_at")],
            pl.when(pl.col("event_id").is_not_null())
            .then(pl.format("{}{}", pl.col("copy").cast(pl.String).str.zfill(8), pl.col("event_id").str.slice(8)))
            .alias("event_id"),
        )
        .drop("copy")
    )
    n = day.height
    row = pl.int_range(n)
    day = day.with_columns(
        ((row % int(1 / FAHRENHEIT_SHARE) == 0) & pl.col("attributes").str.contains('"°C"', literal=True)).alias(
            "_fahrenheit"
        ),
        ((row % int(1 / UNAVAILABLE_SHARE) == 1) & (pl.col("domain") == "sensor")).alias("_unavailable"),
        (row % int(1 / BROKEN_SHARE) == 2).alias("_broken"),
    )
    fahrenheit, unavailable, broken = pl.col("_fahrenheit"), pl.col("_unavailable"), pl.col("_broken")
    fahrenheit_value = (pl.col("state_num") * 9 / 5 + 32).round(1)
    day = day.with_columns(
        pl.when(fahrenheit)
        .then(pl.col("attributes").str.replace('"°C"', '"°F"', literal=True))
        .when(broken)
        .then(pl.col("attributes").str.slice(0, 20))
        .otherwise(pl.col("attributes"))
        .alias("attributes"),
        pl.when(unavailable)
        .then(None)
        .when(fahrenheit)
        .then(fahrenheit_value)
        .otherwise(pl.col("state_num"))
        .alias("state_num"),
        pl.when(unavailable)
        .then(pl.lit("unavailable"))
        .when(fahrenheit)
        .then(fahrenheit_value.cast(pl.String))
        .otherwise(pl.col("state"))
        .alias("state"),
    ).drop("_fahrenheit", "_unavailable", "_broken")
    duplicates = day.gather_every(int(1 / DUPLICATE_SHARE)).with_columns(
        pl.lit("backfill").alias("source"),
        pl.lit(None, pl.String).alias("event_id"),
        pl.lit(None, pl.String).alias("context_id"),
    )
    day = pl.concat([day.head(n - duplicates.height), duplicates])

    out = target_lake / "states" / f"date={date.isoformat()}"
    out.mkdir(parents=True, exist_ok=True)
    table = day.sort("received_at").to_arrow().cast(STATES)
    for i, start in enumerate(range(0, table.num_rows, file_rows)):
        pq.write_table(table.slice(start, file_rows), out / f"part-{i:012d}-{i:012d}-bench.parquet", compression="zstd")
    if (source_lake / "registry").is_dir():
        shutil.copytree(source_lake / "registry", target_lake / "registry", dirs_exist_ok=True)
        register_entity_variants(target_lake / "registry" / "entities")
    return date.isoformat()


def register_entity_variants(entities: Path) -> None:
    """Give each entity's copies (``<entity_id>_<n>``) their own entity registry entries, each with its own
    registry id and otherwise the original's device, area and labels, so the enrichment finds them."""
    for path in sorted(entities.glob("date=*/*.parquet")):
        snapshot = pq.read_table(path)
        variants = []
        for row in snapshot.to_pylist():
            data = json.loads(row["data"]) if row["data"] else None
            for variant in range(ENTITY_VARIANTS):
                copy = dict(row, item_id=f"{row['item_id']}_{variant}")
                if isinstance(data, dict) and data.get("entity_id") == row["item_id"]:
                    renamed = {**data, "entity_id": copy["item_id"], "id": f"{data.get('id')}_{variant}"}
                    copy["data"] = json.dumps(renamed, separators=(",", ":"))
                variants.append(copy)
        pq.write_table(pa.Table.from_pylist(variants, schema=snapshot.schema), path, compression="zstd")


# ---- steps (each runs in its own process) -------------------------------------------------------


def step_load_tables(lake_root: str, date: str) -> dict[str, Any]:
    """The table loader's work: the day's landing files into the raw Delta tables (states deduplicated)."""
    from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
    from ha_ingestor_pipelines.defs.lake.load import load_landing_day

    lake = LakeResource(root=lake_root)
    loaded = load_landing_day(Path(lake_root), lake.store, date)
    return {load.table: {"rows": load.rows, "duplicates": load.duplicates} for load in loaded if load.rows}


def step_validate_states(lake_root: str, date: str) -> dict[str, Any]:
    """The validation asset's work on states: rules, quarantine, duplicates, typed values, lateness, and
    both outputs written (derived/validated_states and a quarantine partition)."""
    import datetime as _dt

    from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
    from ha_ingestor_pipelines.defs.quality.validation import STATES as SPEC
    from ha_ingestor_pipelines.defs.quality.validation import split_with_fallback

    lake = LakeResource(root=lake_root)
    t = time.perf_counter()
    validated, quarantine = split_with_fallback(lake.scan_raw("states", date), SPEC, _dt.timedelta(minutes=10))
    computed = time.perf_counter()
    lake.replace_partition("validated_states", date, validated)
    lake.replace_partition("bench_states_quarantine", date, quarantine)
    return {
        "compute_s": round(computed - t, 2),
        "write_s": round(time.perf_counter() - computed, 2),
        "validated": validated.height,
        "quarantined": quarantine.height,
        "duplicates": quarantine.filter(pl.col("failed_rules").list.contains("duplicate")).height,
        "fahrenheit_rows": validated.filter(pl.col("unit") == "°F").height,
        "late": int(validated["is_late"].sum()),
        "units_normalized": sorted(validated["unit_normalized"].drop_nulls().unique().to_list()),
    }


def step_contract(lake_root: str, date: str) -> dict[str, Any]:
    """The blocking pandera check on derived/validated_states (every rule over every row)."""
    from ha_ingestor_pipelines.defs.common.lake_resource import LakeResource
    from ha_ingestor_pipelines.defs.quality.checks import contract_result, load_checked_table
    from ha_ingestor_pipelines.defs.quality.schemas import SCHEMA_REGISTRY

    entry = next(e for e in SCHEMA_REGISTRY if e.check_name == "validated_states_contract")
    frame = load_checked_table(LakeResource(root=lake_root), entry, date)
    result = contract_result(entry, frame)
    return {"passed": result.passed, "rows_checked": frame.height}


def _definitions(lake_root: str | None = None) -> Any:
    """The project's definitions, its resources pointed at the bench lake (they read the environment when
    the definitions load)."""
    if lake_root is not None:
        os.environ["HA_INGESTOR_LAKE"] = lake_root
        os.environ["HA_INGESTOR_WAREHOUSE"] = str(Path(lake_root).parent / "bench-warehouse.duckdb")
    from ha_ingestor_pipelines.definitions import defs

    return defs()


def enrichment_nodes() -> list[str]:
    """The enrichment group's assets (defs/enrichment, built by another part of the project), one name per
    materialisable node, upstream first; empty when the checkout has none."""
    graph = _definitions().resolve_asset_graph()
    keys = [
        key
        for key in graph.toposorted_asset_keys
        if graph.get(key).group_name == "enrichment" and graph.get(key).is_materializable
    ]
    names: list[str] = []
    for key in keys:
        node = graph.assets_def_for_key(key).node_def.name
        if node not in names:
            names.append(node)
    return names


def prepare_enrich(lake_root: str, date: str, node: str) -> tuple[Any, ...]:
    """Load the code location before the clock starts, as a run's process has before it runs a step."""
    graph = _definitions(lake_root).resolve_asset_graph()
    assets_def = next(
        graph.assets_def_for_key(key)
        for key in graph.toposorted_asset_keys
        if graph.get(key).is_materializable and graph.assets_def_for_key(key).node_def.name == node
    )
    return assets_def, date


def step_enrich(assets_def: Any, date: str) -> dict[str, Any]:
    """One enrichment asset (all outputs of its node), materialised by Dagster for the bench day with the
    project's own resources pointed at the bench lake. ``step_s`` is the step's duration as Dagster reports
    it; the wall time around it adds the run's own work (an ephemeral instance, run and step events)."""
    import dagster as dg

    result = dg.materialize(
        [assets_def], partition_key=date if assets_def.partitions_def else None, raise_on_error=False
    )
    rows = {
        e.asset_key.to_user_string(): e.materialization.metadata.get("dagster/row_count")
        for e in result.get_asset_materialization_events()
    }
    step_ms = sum(e.event_specific_data.duration_ms for e in result.all_events if e.event_type_value == "STEP_SUCCESS")
    return {
        "success": result.success,
        "step_s": round(step_ms / 1000, 2),
        "rows": {key: getattr(value, "value", None) for key, value in rows.items()},
    }


def step_make_day(source_lake: str, target_lake: str, rows: str, file_rows: str = str(FILE_ROWS)) -> dict[str, Any]:
    return {"date": make_day(Path(source_lake), Path(target_lake), int(rows), int(file_rows))}


STEPS = {
    "load_tables": step_load_tables,
    "validate_states": step_validate_states,
    "contract_check": step_contract,
    "enrich": step_enrich,
}
# work done before a step's clock starts; returns the step's arguments
PREPARE = {"enrich": prepare_enrich}


def _peak_rss_mb() -> float:
    """VmHWM of this process: unlike ru_maxrss it is not inherited from the parent across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(step: str, *args: str) -> None:
    # the asset code's imports (Dagster among them) load before the clock starts, as in a run's process
    import ha_ingestor_pipelines.defs.quality.checks  # noqa: F401

    prepared = PREPARE[step](*args) if step in PREPARE else args
    cpu = time.process_time()
    wall = time.perf_counter()
    out = (step_make_day if step == "make_day" else STEPS[step])(*prepared)
    print(
        "RESULT "
        + json.dumps(
            {
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
                "peak_rss_mb": _peak_rss_mb(),
                "out": out,
            }
        )
    )


def _run_step(step: str, *args: str) -> dict[str, Any]:
    """Run one step in a fresh interpreter; times are measured inside it, around the step only."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", step, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--source-lake", type=Path, help="a collector lake to sample (default: built from the bundled recording)"
    )
    parser.add_argument("--keep", type=Path, help="build the bench lake here and keep it")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: measure the lake already there (made by an earlier run) instead of making it again",
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the steps this many times; report medians")
    parser.add_argument("--steps", default=",".join(STEPS))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-validate-"))
    try:
        lake = args.keep or work / "lake"
        existing = sorted((lake / "states").glob("date=*")) if args.reuse else []
        if existing:
            date = existing[0].name.removeprefix("date=")
            rows = pl.scan_parquet(existing[0] / "*.parquet").select(pl.len()).collect().item()
            print(f"bench day {date}: {rows:,} state rows in {lake} (reused)")
        else:
            source = args.source_lake or build_source_lake(work)
            if lake.exists():
                shutil.rmtree(lake)
            made = _run_step("make_day", str(source), str(lake), str(args.rows))
            if "error" in made:
                raise SystemExit(made["error"])
            date, rows = made["out"]["date"], args.rows
            print(f"bench day {date}: {rows:,} state rows in {lake} (made in {made['wall_s']:.1f} s)")
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"polars {pl.__version__}, pyarrow {pa.__version__}, load average {os.getloadavg()[0]:.1f}"
        )
        steps = [(name, ()) for name in args.steps.split(",") if name != "enrich"]
        if "enrich" in args.steps.split(","):
            try:
                steps += [("enrich", (node,)) for node in enrichment_nodes()]
            except Exception as exc:  # the enrichment code is another part of the project: report, go on
                print(f"enrichment not measured: its definitions do not load ({type(exc).__name__}: {exc})")
        runs: dict[str, list[dict[str, Any]]] = {}
        for run in range(args.repeat):
            if args.repeat > 1:
                print(f"run {run + 1} of {args.repeat}, load average {os.getloadavg()[0]:.1f}")
            print(f"{'step':<34}{'wall s':>8}{'cpu s':>8}{'peak RSS MB':>13}  result")
            for name, extra in steps:
                label = f"{name} {' '.join(extra)}".strip()
                result = _run_step(name, str(lake), date, *extra)
                if "error" in result:
                    print(f"{label:<34}{'failed':>8}  {result['error']}")
                    continue
                runs.setdefault(label, []).append(result)
                print(
                    f"{label:<34}{result['wall_s']:>8.2f}{result['cpu_s']:>8.2f}{result['peak_rss_mb']:>13.0f}  "
                    f"{json.dumps(result['out'], ensure_ascii=False)}"
                )
        if args.repeat > 1:
            print(f"medians of {args.repeat} runs")
            print(f"{'step':<34}{'wall s':>8}{'cpu s':>8}{'peak RSS MB':>13}")
            for label, results in runs.items():
                print(
                    f"{label:<34}{_median(results, 'wall_s'):>8.2f}{_median(results, 'cpu_s'):>8.2f}"
                    f"{_median(results, 'peak_rss_mb'):>13.0f}"
                )
        counted = [label for label in runs if not label.startswith(("contract_check", "load_tables"))]
        total = sum(_median(runs[label], "wall_s") for label in counted)
        cpu = sum(_median(runs[label], "cpu_s") for label in counted)
        print(
            f"validation with typed values + enrichment: {total:.2f} s wall ({cpu:.2f} s CPU) for {rows:,} rows "
            f"({'under' if total < 10 else 'OVER'} the 10 s target); the table load before it and the blocking "
            f"contract check after it are not counted (bench/lake_tables.py measures the load)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median(results: list[dict[str, Any]], field: str) -> float:
    return statistics.median(result[field] for result in results)


if __name__ == "__main__":
    main()
