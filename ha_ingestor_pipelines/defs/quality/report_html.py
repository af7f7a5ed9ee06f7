"""The daily quality report as one self-contained HTML page (no scripts, no external files)."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

MAX_LISTED = 50

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2433; margin: 0;
       background: #f4f6f9; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 2px solid #dde3ec; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.sub, p.note { color: #5b6577; margin: 4px 0 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 12px; margin: 18px 0; }
.card { background: #fff; border-radius: 8px; padding: 12px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.08);
        border-left: 4px solid #3b82f6; }
.card.warn { border-left-color: #f59e0b; } .card.bad { border-left-color: #dc2626; }
.card.good { border-left-color: #16a34a; }
.card .value { font-size: 22px; font-weight: 600; } .card .label { color: #5b6577; font-size: 12px; }
table { border-collapse: collapse; width: 100%; background: #fff; border-radius: 8px; overflow: hidden;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); margin: 6px 0 10px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #edf0f5; vertical-align: top; }
th { background: #eef2f8; font-weight: 600; font-size: 12px; color: #394256; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td { background: #fff4f2; }
.bar { display: inline-block; height: 10px; background: #93b4f5; border-radius: 2px; vertical-align: middle; }
.bar.red { background: #f19a8f; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #eef2f8; padding: 1px 4px;
       border-radius: 3px; word-break: break-all; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
figure { margin: 8px 0; background: #fff; border-radius: 8px; padding: 8px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #5b6577; font-size: 12px; margin-top: 4px; }
"""


def _n(value: float | int | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _pct(share: float | None, digits: int = 2) -> str:
    return "–" if share is None else f"{share * 100:.{digits}f} %"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _time(iso: str | None) -> str:
    return "–" if iso is None else escape(iso.replace("T", " ")[:19] + " UTC")


def _card(label: str, value: str, tone: str = "") -> str:
    return f'<div class="card {tone}"><div class="value">{value}</div><div class="label">{escape(label)}</div></div>'


def _table(
    headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), row_classes: list[str] | None = None
) -> str:
    """A table; headers that are all empty mean a plain list of facts without a header row."""
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    head = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(headers)}">none</td></tr>')
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _section(anchor: str, title: str, note: str = "") -> str:
    """A section heading (linkable as ``report.html#anchor``) and an optional note; ``note`` is HTML."""
    return f'<h2 id="{anchor}">{escape(title)}</h2>' + (f'<p class="note">{note}</p>' if note else "")


def _bar(share: float, red: bool = False) -> str:
    width = max(1, round(share * 160)) if share > 0 else 0
    return f'<span class="bar{" red" if red else ""}" style="width:{width}px"></span>'


def _summary(report: dict[str, Any]) -> str:
    states = report["validation"]["states"]
    events = report["validation"]["events"]
    quarantined = states["quarantined_rows"] + events["quarantined_rows"]
    dups = report["duplicates_removed"]
    completeness = report["completeness"]
    silent = len(report["silence"]["silent"])
    pass_rate = (states["validated_rows"] + events["validated_rows"]) / max(
        1, states["input_rows"] + events["input_rows"]
    )
    return (
        '<div class="cards">'
        + "".join(
            [
                _card("events landed", _n(report["events"]["total"])),
                _card("state rows validated", f"{_n(states['validated_rows'])} / {_n(states['input_rows'])}"),
                _card("rows passing validation", _pct(pass_rate), "good" if pass_rate >= 0.999 else "warn"),
                _card("rows quarantined", _n(quarantined), "bad" if quarantined else "good"),
                _card("duplicates removed", _n(dups["events"] + dups["states"]), "warn" if dups["states"] else ""),
                _card(
                    "day covered by the live stream",
                    _pct(completeness["coverage_share"]),
                    "good" if completeness["coverage_share"] > 0.99 else "warn",
                ),
                _collector_card(completeness["collector"]),
                _card(
                    "gaps in the event stream",
                    _n(len(completeness["gaps"])),
                    "warn" if completeness["gaps"] else "good",
                ),
                _card(
                    f"entities silent > {_n(report['silence']['silent_after_hours'])} h",
                    _n(silent),
                    "warn" if silent else "good",
                ),
                _card(
                    "entities with unavailable time",
                    _n(len(report["unavailable"])),
                    "warn" if report["unavailable"] else "good",
                ),
            ]
        )
        + "</div>"
    )


def _collector_card(collector: dict[str, Any]) -> str:
    if not collector["sessions_recorded"]:
        return _card("events received by the collector in the lake", "no session record", "warn")
    totals = collector["totals"]
    missing = totals["events_received"] - totals["events_in_lake"]
    return _card(
        "events received by the collector in the lake",
        f"{_n(totals['events_in_lake'])} / {_n(totals['events_received'])}",
        "bad" if missing else "good",
    )


def _events(report: dict[str, Any]) -> str:
    rows = report["events"]["by_type"]
    top = rows[0]["count"] if rows else 1
    return _section("events", "Events per type") + _table(
        ["event type", "events", ""],
        [[f"<code>{escape(r['event_type'] or '')}</code>", _n(r["count"]), _bar(r["count"] / top)] for r in rows],
        numeric={1},
    )


def _completeness(report: dict[str, Any]) -> str:
    c = report["completeness"]
    by_source = c["state_rows_by_source"]
    facts = [
        ["state_changed events", _n(c["state_changed_events"])],
        ["live state rows", _n(c["live_state_rows"])],
        ["state_changed events without a live state row", _n(c["state_changed_without_live_row"])],
        ["live state rows without their event", _n(c["live_rows_without_event"])],
        ["snapshot state rows (get_states on connect)", _n(by_source["snapshot"])],
        ["backfilled state rows (HA's history after a gap)", _n(by_source["backfill"])],
        ["connections to Home Assistant (core config snapshots)", _n(c["connects"])],
        [
            "input the collector quarantined",
            _n(c["collector_quarantine_rows"])
            + "".join(f" · {escape(stage)}: {_n(n)}" for stage, n in c["collector_quarantine_by_stage"].items()),
        ],
        [
            f"time in gaps (event stream silent > {_n(c['gap_threshold_minutes'])} min)",
            f"{_duration(c['gap_seconds_total'])} ({_pct(1 - c['coverage_share'])} of the day)",
        ],
    ]
    gaps = _table(
        ["gap from", "to", "length", "backfilled state rows"],
        [[_time(g["start"]), _time(g["end"]), _duration(g["seconds"]), _n(g["backfill_rows"])] for g in c["gaps"]],
        numeric={2, 3},
    )
    note = (
        "The first figures are derived from the lake alone; the collector's own counters and gap records follow "
        "below. A gap is a silence in the event stream longer than the threshold: Home Assistant fires an event "
        "at least every 5 minutes while its recorder runs. The state changes of a gap come back from HA's "
        "history as backfilled rows; other events of a gap are lost for good."
    )
    return (
        _section("completeness", "Completeness", note)
        + _table(["", ""], facts, numeric={1})
        + "<h3>Gaps in the event stream (silences)</h3>"
        + gaps
        + _collector_sessions(c["collector"])
    )


def _collector_sessions(collector: dict[str, Any]) -> str:
    """The collector's own counters per session against the lake, its gap records, and the day's events no
    session record accounts for."""
    unaccounted = collector["day_events_without_session"]
    without = ""
    if unaccounted:
        without = "<h3>Events of this day that no session record accounts for</h3>" + _table(
            ["written by collector", "events", ""],
            [
                [
                    f"<code>{escape(str(u['collector_id']))}</code>",
                    _n(u["events"]),
                    "received outside its recorded sessions"
                    if u["collector_has_sessions"]
                    else "this collector recorded no sessions (older than <code>collector_sessions</code>?)",
                ]
                for u in unaccounted
            ],
            numeric={1},
        )
    if not collector["sessions_recorded"]:
        return (
            '<h3>The collector\'s own counters</h3><p class="note"><strong>No session record exists for this '
            "day</strong>: the collector that wrote it did not record its sessions in "
            "<code>collector_sessions/</code> (a collector older than that table), or was not running. The "
            "figures above come from the lake alone.</p>" + without
        )
    sessions = collector["sessions"]
    rows, classes = [], []
    for s in sessions:
        ended = (
            _time(s["disconnected_at"])
            if s["closed"]
            else "open (running, or killed) · row of " + _time(s["updated_at"])
        )
        mismatch = (
            s["events_received"] != s["events_in_lake"]
            or s["quarantined"] != s["quarantine_rows_in_lake"]
            or s["backfill_rows"] != s["backfill_rows_in_lake"]
        )
        rows.append(
            [
                f"<code>{escape(s['collector_id'])}</code> {_time(s['connected_at'])} → {ended}"
                + (f"<br><small>{escape(s['disconnect_reason'])}</small>" if s["disconnect_reason"] else ""),
                f"{_n(s['events_received'])} / {_n(s['events_committed'])} / {_n(s['events_in_lake'])}",
                f"{_n(s['quarantined'])} / {_n(s['quarantine_rows_in_lake'])}",
                f"{_n(s['backfill_rows'])} / {_n(s['backfill_rows_in_lake'])}",
                _n(s["frames_received"]),
                _n(s["day_events"]),
            ]
        )
        classes.append("fail" if mismatch and s["closed"] else "")
    table = _table(
        [
            "session (collector, connected → disconnected)",
            "events received / committed / in the lake",
            "quarantined / in the lake",
            "backfilled states / in the lake",
            "frames",
            "events of this day",
        ],
        rows,
        numeric={1, 2, 3, 4, 5},
        row_classes=classes,
    )
    gaps = _table(
        [
            "gap from (last event seen)",
            "to (first event after)",
            "length",
            "history asked from",
            "state rows HA's history returned",
            "of them validated, in this day",
        ],
        [
            [
                _time(g["start"]),
                _time(g["end"]),
                _duration(g["seconds"]),
                _time(g["backfill_from"]),
                _n(g["backfill_rows"]),
                _n(g["backfill_rows_validated_in_day"]),
            ]
            for g in collector["gaps"]
        ],
        numeric={2, 4, 5},
    )
    note = (
        "From the collector's own record of each connection (<code>collector_sessions/</code>): what it counted "
        "against the rows of the lake it received in that session (every day they fall in). On a closed session "
        "the figures match; an open one was last recorded at most a minute before it stopped."
    )
    return (
        "<h3>The collector's own counters</h3>"
        + f'<p class="note">{note}</p>'
        + table
        + without
        + "<h3>Gaps the collector recorded (reconnects and restarts)</h3>"
        + gaps
    )


def _validation_table(title: str, summary: dict[str, Any]) -> str:
    rules = summary["rules"]
    table = _table(
        ["rule", "meaning", "failing rows", "pass rate"],
        [
            [
                f"<code>{escape(r['rule'])}</code>",
                escape(r["description"]),
                _n(r["failed_rows"]),
                _pct(r["pass_rate"], 3),
            ]
            for r in rules
        ],
        numeric={2, 3},
        row_classes=["fail" if r["failed_rows"] else "" for r in rules],
    )
    samples = ""
    if summary["sample_quarantined"]:
        samples = "<h3>Sample quarantined rows</h3>" + _table(
            ["row", "failed rules", "original row"],
            [
                [
                    f"<code>{escape(s['row_key'] or '')}</code>",
                    escape(s["failed_rules"]),
                    f"<code>{escape(s['row_json'][:300])}</code>",
                ]
                for s in summary["sample_quarantined"]
            ],
        )
    return (
        f"<h3>{escape(title)}: {_n(summary['validated_rows'])} of {_n(summary['input_rows'])} rows validated "
        f"({_pct(summary['pass_rate'])}), {_n(summary['quarantined_rows'])} quarantined</h3>" + table + samples
    )


def _validation(report: dict[str, Any]) -> str:
    note = (
        "Rows failing a rule go to <code>derived/validation_quarantine</code> with the rules they failed; "
        "nothing is dropped. A row can fail several rules."
    )
    return (
        _section("validation", "Validation", note)
        + _validation_table("States", report["validation"]["states"])
        + _validation_table("Events", report["validation"]["events"])
    )


def _duplicates_and_lateness(report: dict[str, Any]) -> str:
    dups = report["duplicates_removed"]
    late = report["late"]
    by_source = ", ".join(
        f"{escape(str(k))}: {_n(v)}" for k, v in sorted(dups["states_by_source"].items(), key=lambda kv: str(kv[0]))
    )
    rows = [
        [
            "duplicate state rows removed (same entity and last_updated)",
            _n(dups["states"]) + (f" ({by_source})" if by_source else ""),
        ],
        ["duplicate events removed (same event_id)", _n(dups["events"])],
        ["late state rows (arrival lag far above the day's usual lag)", _n(late["states"]["late"])],
        ["state rows received after a newer state of the same entity", _n(late["states"]["out_of_order"])],
        ["late events", _n(late["events"]["late"])],
        ["events received after a newer event", _n(late["events"]["out_of_order"])],
        [
            "median arrival lag of state rows (received_at − last_updated)",
            "–"
            if late["states"]["median_arrival_lag_s"] is None
            else _duration(late["states"]["median_arrival_lag_s"]),
        ],
    ]
    return _section("late", "Duplicates and late data") + _table(["", ""], rows, numeric={1})


def _silence(report: dict[str, Any]) -> str:
    silence = report["silence"]
    silent = silence["silent"]
    listed = silent[:MAX_LISTED]
    more = f'<p class="note">… and {len(silent) - MAX_LISTED} more.</p>' if len(silent) > MAX_LISTED else ""
    removed = ""
    if silence["removed"]:
        removed = "<h3>Removed entities (last state is a removal)</h3>" + _table(
            ["entity", "removed at"],
            [[f"<code>{escape(r['entity_id'])}</code>", _time(r["last_updated"])] for r in silence["removed"]],
        )
    note = (
        f"{_n(len(silent))} of {_n(silence['entities_seen'])} entities seen had no new state for more than "
        f"{_n(silence['silent_after_hours'])} hours when the day ended."
    )
    return (
        _section("silence", "Entities gone silent", note)
        + _table(
            ["entity", "last state", "last update", "silent for"],
            [
                [
                    f"<code>{escape(r['entity_id'])}</code>",
                    escape(str(r["last_state"])),
                    _time(r["last_updated"]),
                    _duration(r["silent_hours"] * 3600),
                ]
                for r in listed
            ],
            numeric={3},
        )
        + more
        + removed
    )


def _unavailable(report: dict[str, Any]) -> str:
    rows = report["unavailable"]
    note = "Time within the day in the <code>unavailable</code> state, from the intervals between consecutive states."
    return _section("unavailable", "Unavailable time per entity", note) + _table(
        ["entity", "unavailable", "share of the day", "", "times it became unavailable"],
        [
            [
                f"<code>{escape(r['entity_id'])}</code>",
                _duration(r["unavailable_seconds"]),
                _pct(r["share_of_day"]),
                _bar(r["share_of_day"], red=True),
                _n(r["became_unavailable"]),
            ]
            for r in rows[:MAX_LISTED]
        ],
        numeric={1, 2, 4},
    )


def _automation_graph(report: dict[str, Any], picture: bytes | None) -> str:
    graph = report.get("automation_graph") or {"png": None, "exists": False, "drawn_at": None}
    if picture is None:
        return _section(
            "automation-graph",
            "Automation graph",
            f"The picture does not exist yet: <code>{escape(str(graph['png']))}</code> is drawn by the "
            "<code>derived/automation_graph_nodes</code> asset, which has not run on this lake.",
        )
    data = base64.b64encode(picture).decode("ascii")
    return (
        _section("automation-graph", "Automation graph")
        + f'<figure><img alt="automation graph" src="data:image/png;base64,{data}">'
        f"<figcaption>Triggers, actions, script calls and fired events of every automation and script (members of "
        f"a cycle in red), as last drawn {_time(graph['drawn_at'])} from all days of the lake: "
        f"<code>{escape(str(graph['png']))}</code>.</figcaption></figure>"
    )


def render_html(report: dict[str, Any], picture: bytes | None = None) -> str:
    """The report (from ``report_figures.quality_figures``) as a page a person reads top to bottom; ``picture`` is
    the automation graph's PNG, embedded so the page stays one self-contained file."""
    homes = ", ".join(report["homes"]) or "no data"
    p = report["parameters"]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Data quality {escape(report['date'])}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>Data quality · {escape(homes)} · {escape(report['date'])}</h1>"
        f'<p class="sub">UTC day {escape(report["date"])}. Gap threshold {_n(p["gap_minutes"])} min, silence '
        f"threshold {_n(p['silent_after_hours'])} h, look-back {_n(p['lookback_days'])} days.</p>"
        + _summary(report)
        + _completeness(report)
        + _validation(report)
        + _duplicates_and_lateness(report)
        + _events(report)
        + _silence(report)
        + _unavailable(report)
        + _automation_graph(report, picture)
        + "</main></body></html>"
    )
