"""Prometheus ``/metrics`` and ``/healthz`` on a loopback port.

Counters are read from the collector's own tallies at scrape time, so the hot path pays
nothing for them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class CollectorMetrics(Collector):
    """Exposes ``snapshot()`` (a dict of the collector's tallies) as Prometheus metrics."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        counters = {
            "events_received": ("Home Assistant events received and processed", s["events"]),
            "state_rows": ("State rows produced (live, snapshot and backfill)", s["states"]),
            "quarantined": ("Messages quarantined with a reason", s["quarantined"]),
            "backfilled_states": ("State rows recovered from HA's history after a gap", s["backfilled"]),
            "reconnects": ("Reconnections to Home Assistant", s["reconnects"]),
            "frames_received": ("WebSocket frames received", s["frames"]),
            "command_errors": ("Commands Home Assistant answered with an error", s["command_errors"]),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(f"ha_ingestor_{name}", doc, value=value)
        committed = CounterMetricFamily("ha_ingestor_rows_committed", "Rows committed to the lake", labels=["table"])
        for table, rows in sorted(s["rows_committed"].items()):
            committed.add_metric([table], rows)
        yield committed
        gauges = {
            "spool_depth": ("Spooled records not yet committed to the lake", s["spool_depth"]),
            "lag_seconds": ("Now minus the newest processed event's time_fired", s["lag_seconds"]),
            "connected": ("1 while connected to Home Assistant", 1 if s["connected"] else 0),
            "spool_latency_p99_seconds": (
                "p99 receipt-to-durable-spool latency of recent frames",
                s["spool_latency_p99"],
            ),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(f"ha_ingestor_{name}", doc, value=value)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def serve_metrics(
    snapshot: Callable[[], dict[str, Any]], healthy: Callable[[], bool], host: str = "127.0.0.1", port: int = 9464
) -> WSGIServer:
    """Start the HTTP endpoint in a daemon thread; ``server.shutdown()`` stops it."""
    registry = CollectorRegistry()
    registry.register(CollectorMetrics(snapshot))
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok = healthy()
            body = json.dumps(
                {
                    "status": "ok" if ok else "failing",
                    "time": time.time(),
                    **{k: v for k, v in snapshot().items() if not isinstance(v, dict)},
                }
            ).encode()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return metrics_app(environ, start_response)

    server = make_server(host, port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
