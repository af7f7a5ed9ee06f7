"""A PNG picture of the automation graph (for the quality report and the asset's metadata)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

DRAWN_RELATIONS = ("trigger", "action", "call", "fire_event")
NODE_STYLE = {  # node_type: (colour, marker)
    "automation": ("#1f77b4", "s"),
    "script": ("#2ca02c", "D"),
    "entity": ("#b0b0b0", "o"),
    "event": ("#ff7f0e", "^"),
    "all_entities": ("#9467bd", "o"),
}
EDGE_STYLE = {"trigger": "#7f7f7f", "action": "#1f1f1f", "call": "#2ca02c", "fire_event": "#ff7f0e"}
CYCLE_COLOUR = "#d62728"


def _label(node_id: str, name: str | None, node_type: str) -> str:
    if node_type in ("automation", "script") and name:
        text = name
    else:
        text = node_id.split(".", 1)[-1] if node_type == "entity" else node_id
    return text if len(text) <= 28 else text[:26] + "…"


def _layered_layout(graph: nx.DiGraph, kinds: dict) -> dict:
    """Columns left to right: what triggers (entities, events), automations, scripts, what is only acted
    on. Each column is ordered by the mean height of its neighbours in the column before, so edges run
    mostly straight; a loop shows as edges going back to the first column."""
    runnable = {n for n in graph if kinds.get(n) in ("automation", "script")}
    sources = {u for u, v, d in graph.edges(data=True) if d["relation"] == "trigger"} - runnable
    columns = [
        sorted(sources, key=lambda n: n[1]),
        sorted((n for n in runnable if kinds[n] == "automation"), key=lambda n: n[1]),
        sorted((n for n in runnable if kinds[n] == "script"), key=lambda n: n[1]),
        sorted((n for n in graph if n not in sources and n not in runnable), key=lambda n: n[1]),
    ]
    height: dict = {}

    def barycentre(node: tuple) -> float:
        around = [height[m] for m in nx.all_neighbors(graph, node) if m in height]
        return (sum(around) / len(around)) if around else 0.5

    for index, column in enumerate(columns):
        if index:
            column.sort(key=barycentre, reverse=True)
        for rank, node in enumerate(column):
            height[node] = 1.0 - (rank + 0.5) / max(len(column), 1)
    xs = (0.0, 1.0, 1.6, 2.6)
    return {node: (xs[index], height[node]) for index, column in enumerate(columns) for node in column}


def render_automation_graph(nodes: pl.DataFrame, edges: pl.DataFrame, path: Path) -> Path:
    """Draw triggers, actions, script calls and fired events of ``automation_graph_nodes`` /
    ``automation_graph_edges`` (one home or several) into a PNG at ``path``; cycle members in red."""
    # configured edges, plus observed calls and triggers; observed-only actions are mostly template
    # sensors recomputed in the run's context and would bury the picture
    drawn = edges.filter(
        pl.col("relation").is_in(DRAWN_RELATIONS)
        & (pl.col("in_config") | pl.col("relation").is_in(["call", "trigger"]))
    ).unique(["home", "src", "dst", "relation"])
    graph = nx.DiGraph()
    info = {(row["home"], row["node_id"]): row for row in nodes.iter_rows(named=True)}
    for row in drawn.iter_rows(named=True):
        src, dst = (row["home"], row["src"]), (row["home"], row["dst"])
        for node in (src, dst):
            graph.add_node(node)
        graph.add_edge(src, dst, relation=row["relation"], observed_only=not row["in_config"])
    fig, ax = plt.subplots(figsize=(20, max(8.0, 0.22 * max(graph.number_of_nodes(), 1))), dpi=90)
    ax.set_axis_off()
    if graph.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "no automations", ha="center", va="center", fontsize=20)
    else:
        kinds = {n: info.get(n, {}).get("node_type", "entity") for n in graph}
        layout = _layered_layout(graph, kinds)
        in_cycle = {node for node in graph if info.get(node, {}).get("in_cycle")}
        for node_type, (colour, marker) in NODE_STYLE.items():
            members = [n for n in graph if info.get(n, {}).get("node_type", "entity") == node_type]
            if members:
                nx.draw_networkx_nodes(
                    graph,
                    layout,
                    nodelist=members,
                    node_shape=marker,
                    ax=ax,
                    node_color=[CYCLE_COLOUR if n in in_cycle else colour for n in members],
                    node_size=[420 if node_type in ("automation", "script") else 160 for _ in members],
                )
        for relation, colour in EDGE_STYLE.items():
            for observed_only in (False, True):
                chosen = [
                    (u, v)
                    for u, v, d in graph.edges(data=True)
                    if d["relation"] == relation and d["observed_only"] == observed_only
                ]
                if chosen:
                    nx.draw_networkx_edges(
                        graph,
                        layout,
                        edgelist=chosen,
                        ax=ax,
                        arrows=True,
                        arrowsize=10,
                        width=1.0,
                        style="dashed" if observed_only else "solid",
                        edge_color=[CYCLE_COLOUR if u in in_cycle and v in in_cycle else colour for u, v in chosen],
                        connectionstyle="arc3,rad=0.05",
                        min_target_margin=8,
                    )
        labels = {
            n: _label(n[1], info.get(n, {}).get("name"), info.get(n, {}).get("node_type", "entity")) for n in graph
        }
        for node, (x, y) in layout.items():
            ax.text(
                x + (0.02 if x > 0 else -0.02),
                y,
                labels[node],
                fontsize=7,
                va="center",
                ha="left" if x > 0 else "right",
            )
        legend = [
            Line2D([], [], marker=marker, linestyle="", color=colour, label=node_type, markersize=9)
            for node_type, (colour, marker) in NODE_STYLE.items()
        ]
        legend += [Line2D([], [], color=colour, label=relation) for relation, colour in EDGE_STYLE.items()]
        legend += [
            Line2D([], [], color="#1f1f1f", linestyle="dashed", label="observed only"),
            Line2D([], [], marker="s", linestyle="", color=CYCLE_COLOUR, label="in a cycle"),
        ]
        ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=6, fontsize=9, frameon=False)
    ax.set_title("Automations: triggers, actions, script calls (solid: configured, dashed: observed only)", fontsize=13)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
