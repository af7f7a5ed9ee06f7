"""``ha-ingestor``: collect a Home Assistant home into the lake, or run the bundled demo."""

from __future__ import annotations

import argparse
import asyncio
import importlib.abc
import logging
import os
import secrets
import sys
from pathlib import Path

from ha_ingestor_live.client import AuthenticationFailed
from ha_ingestor_live.collector import Collector, CollectorSettings
from ha_ingestor_live.spool import FsyncPolicy

DEFAULT_LAKE = "./data/lake"
DEFAULT_STATE = "./data/collector"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _add_collector_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lake",
        default=_env("HA_INGESTOR_LAKE", DEFAULT_LAKE),
        help="lake root (env HA_INGESTOR_LAKE; default %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        default=_env("HA_INGESTOR_STATE", DEFAULT_STATE),
        help="local spool and checkpoint directory, one per collector (env HA_INGESTOR_STATE; default %(default)s)",
    )
    parser.add_argument(
        "--home",
        default=_env("HA_INGESTOR_HOME"),
        help="value of the `home` column (env HA_INGESTOR_HOME; default: from HA's location name)",
    )
    parser.add_argument(
        "--fsync",
        choices=[p.value for p in FsyncPolicy],
        default=FsyncPolicy.BATCH.value,
        help="spool fsync policy: batch = one fsync per batch of frames before they are "
        "processed (default), interval = at most every 50 ms, off = leave it to the OS",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="commit buffered rows to Parquet at least this often (default %(default)s)",
    )
    parser.add_argument(
        "--flush-rows", type=int, default=100_000, help="commit when this many rows are buffered (default %(default)s)"
    )
    parser.add_argument(
        "--flush-mb",
        type=float,
        default=4.0,
        help="commit when the buffered rows' event data and attributes reach this many MB, "
        "which bounds memory (default %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(_env("HA_INGESTOR_METRICS_PORT", "9464")),
        help="loopback port for /metrics and /healthz; 0 picks a free port, -1 disables "
        "(env HA_INGESTOR_METRICS_PORT; default %(default)s)",
    )
    parser.add_argument(
        "--history-days",
        type=float,
        default=10.0,
        help="on the first start against a home, import this much of HA's history "
        "(HA's recorder keeps 10 days by default)",
    )
    parser.add_argument(
        "--backfill-delay",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="wait this long after (re)connecting before asking HA's history for the gap, "
        "so its recorder has committed it (default %(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=4 << 20,
        help="events larger than this go to quarantine (default %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def _settings(args: argparse.Namespace, ha_url: str, token: str) -> CollectorSettings:
    return CollectorSettings(
        ha_url=ha_url,
        token=token,
        lake=Path(args.lake),
        state_dir=Path(args.state_dir),
        home=args.home,
        fsync=FsyncPolicy(args.fsync),
        flush_interval_s=args.flush_interval,
        flush_rows=args.flush_rows,
        flush_bytes=int(args.flush_mb * (1 << 20)),
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        history_days=args.history_days,
        backfill_delay_s=args.backfill_delay,
        max_message_bytes=args.max_message_bytes,
    )


class _RefusePandas(importlib.abc.MetaPathFinder):
    """pyarrow imports pandas on its first array when pandas is installed (Dagster brings it): 35-57 MB of
    resident memory the collector never uses. Refused in collector processes only."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("the collector does not use pandas")
        return None


def refuse_pandas() -> None:
    if "pandas" not in sys.modules and not any(isinstance(f, _RefusePandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _RefusePandas())


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return args.token


async def _collect(settings: CollectorSettings) -> int:
    try:
        await Collector(settings).run()
    except AuthenticationFailed as exc:
        logging.getLogger("ha_ingestor").error("%s (check HA_TOKEN: a long-lived access token of an admin user)", exc)
        return 2
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    refuse_pandas()
    token = _token(args)
    if not args.ha_url or not token:
        print("error: --ha-url (HA_URL) and --token (HA_TOKEN) or --token-file are required", file=sys.stderr)
        return 2
    return asyncio.run(_collect(_settings(args, args.ha_url, token)))


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: your own home with HA_URL and HA_TOKEN set, else the bundled recording."""
    if args.platform:
        from .platform import run_platform

        return run_platform(args, collector_argv(args))
    token = _token(args)
    if args.ha_url and token:
        return cmd_collect(args)
    from .demo import run_demo

    refuse_pandas()
    return asyncio.run(
        run_demo(
            _settings(args, "ws://127.0.0.1:0", secrets.token_hex(16)),
            speed=args.speed,
            capture=Path(args.capture) if args.capture else None,
        )
    )


def cmd_replay_server(args: argparse.Namespace) -> int:
    from .demo import serve_recording

    return asyncio.run(serve_recording(Path(args.capture) if args.capture else None, args.token, args.speed, args.port))


def collector_argv(args: argparse.Namespace) -> list[str]:
    """The ``run`` options the user gave, for the collector child (the token travels in its environment)."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    argv = ["run"]
    for action in commands.choices["run"]._actions:
        if not action.option_strings or action.dest in ("help", "platform", "token", "token_file"):
            continue
        value = getattr(args, action.dest, action.default)
        if value is None or value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(action.option_strings[-1])
        else:
            argv += [action.option_strings[-1], str(value)]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ha-ingestor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def ha_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--ha-url", default=_env("HA_URL"), help="Home Assistant base URL, http(s):// or ws(s):// (env HA_URL)"
        )
        p.add_argument("--token", default=_env("HA_TOKEN"), help="long-lived access token (env HA_TOKEN)")
        p.add_argument("--token-file", help="read the token from this file")

    collect = sub.add_parser(
        "collect",
        help="collect a Home Assistant home into the lake until stopped",
        description="Connect to Home Assistant's WebSocket API and land every event, "
        "state and registry snapshot in the lake. SIGTERM/SIGINT: flush, "
        "commit and exit 0.",
    )
    ha_options(collect)
    _add_collector_options(collect)
    collect.set_defaults(func=cmd_collect)

    run = sub.add_parser(
        "run",
        help="the main job: collect your home (HA_URL and HA_TOKEN set) or the "
        "bundled recording of a real Home Assistant",
        description="Without HA_URL/HA_TOKEN, serve the bundled recording of a real Home "
        "Assistant over a local WebSocket, collect it into the lake, and print "
        "what landed.",
    )
    ha_options(run)
    _add_collector_options(run)
    run.add_argument("--speed", type=float, default=8.0, help="replay speed of the recording (default 8x)")
    run.add_argument("--capture", help="a capture file to replay instead of the bundled one")
    run.add_argument(
        "--platform",
        action="store_true",
        help="also run Dagster's webserver (127.0.0.1:3000) and daemon, so the pipelines run as data "
        "lands (DAGSTER_HOME, default ./data/dagster); Ctrl-C stops everything",
    )
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser(
        "replay-server",
        help="serve a capture over HA's WebSocket protocol",
        description="Serve a recording of a real Home Assistant on 127.0.0.1.",
    )
    replay.add_argument("--capture", help="capture file (default: the bundled recording)")
    replay.add_argument("--token", default=_env("HA_TOKEN") or "demo-token")
    replay.add_argument("--speed", type=float, default=1.0)
    replay.add_argument("--port", type=int, default=8123)
    replay.add_argument("-v", "--verbose", action="store_true")
    replay.set_defaults(func=cmd_replay_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
