"""What automation and script configs say: which entities trigger them and which they act on.

Input is the lake's ``registry/automations`` and ``registry/scripts`` rows (the ``automation/config`` and
``script/config`` answers: ``{"config": {...}}``). Output is one row per config edge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import polars as pl

# entity domains of Home Assistant (and its common integrations): a dotted name in a template is an
# entity reference only when it starts with one of these (``trigger.to_state`` and ``now().date`` do not)
ENTITY_DOMAINS = frozenset(
    {
        "air_quality",
        "alarm_control_panel",
        "assist_satellite",
        "automation",
        "binary_sensor",
        "button",
        "calendar",
        "camera",
        "climate",
        "conversation",
        "counter",
        "cover",
        "date",
        "datetime",
        "device_tracker",
        "event",
        "fan",
        "group",
        "humidifier",
        "image",
        "image_processing",
        "input_boolean",
        "input_button",
        "input_datetime",
        "input_number",
        "input_select",
        "input_text",
        "lawn_mower",
        "light",
        "lock",
        "media_player",
        "notify",
        "number",
        "person",
        "plant",
        "remote",
        "scene",
        "schedule",
        "script",
        "select",
        "sensor",
        "siren",
        "stt",
        "sun",
        "switch",
        "tag",
        "text",
        "time",
        "timer",
        "todo",
        "tts",
        "update",
        "vacuum",
        "valve",
        "wake_word",
        "water_heater",
        "weather",
        "zone",
    }
)
ENTITY_REF = re.compile(r"(?<![\w.])([a-z_]+)\.([a-z0-9_]+)\b")
# services whose target ends up in a known state: used to tell a real loop from "turns off what turned it on"
ON_OFF_DOMAINS = frozenset(
    {"light", "switch", "fan", "input_boolean", "siren", "humidifier", "remote", "automation", "group"}
)
ON_OFF_SERVICES = {"turn_on": ("on",), "turn_off": ("off",), "toggle": ("on", "off")}
SERVICE_RESULTS: dict[str, tuple[str, ...]] = {
    "lock": ("locked", "locking"),
    "unlock": ("unlocked", "unlocking"),
    "open": ("open", "opening"),
    "open_cover": ("open", "opening"),
    "close_cover": ("closed", "closing"),
    "open_valve": ("open", "opening"),
    "close_valve": ("closed", "closing"),
    "media_play": ("playing",),
    "media_pause": ("paused",),
    "alarm_arm_away": ("armed_away", "arming"),
    "alarm_arm_home": ("armed_home", "arming"),
    "alarm_disarm": ("disarmed",),
}
SCRIPT_SERVICES = ("turn_on", "turn_off", "toggle", "reload")
NESTED_ACTION_KEYS = ("sequence", "default", "then", "else", "parallel")

EDGE_SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "src": pl.String,
        "dst": pl.String,
        "relation": pl.String,
        "service": pl.String,
        "to_states": pl.List(pl.String),
        "trigger_platform": pl.String,
    }
)
NODE_SCHEMA = pl.Schema(
    {
        "home": pl.String,
        "node_id": pl.String,
        "node_type": pl.String,
        "name": pl.String,
        "config_id": pl.String,
        "mode": pl.String,
        "n_triggers": pl.Int64,
        "n_actions": pl.Int64,
    }
)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def template_entities(value: Any) -> list[str]:
    """Entity ids mentioned in any string inside ``value`` (templates like ``states('sensor.x')``)."""
    found: list[str] = []
    if isinstance(value, str):
        found = [f"{d}.{o}" for d, o in ENTITY_REF.findall(value) if d in ENTITY_DOMAINS]
    elif isinstance(value, dict):
        for item in value.values():
            found += template_entities(item)
    elif isinstance(value, list):
        for item in value:
            found += template_entities(item)
    return list(dict.fromkeys(found))


def _entity_ids(value: Any) -> list[str]:
    """Entity ids of an ``entity_id`` field: a string, a comma list, a list, or a template."""
    ids: list[str] = []
    for item in _as_list(value):
        if not isinstance(item, str):
            continue
        if "{" in item:
            ids += template_entities(item)
        else:
            ids += [part.strip() for part in item.split(",") if part.strip()]
    return ids


def _states(value: Any) -> list[str] | None:
    states = [str(v) for v in _as_list(value) if v is not None]
    return states or None


class _Walker:
    """Collects the edges of one automation or script config."""

    def __init__(self, home: str, node: str) -> None:
        self.home, self.node = home, node
        self.edges: list[dict[str, Any]] = []
        self.actions = 0

    def edge(
        self,
        src: str,
        dst: str,
        relation: str,
        *,
        service: str | None = None,
        to_states: list[str] | None = None,
        platform: str | None = None,
    ) -> None:
        self.edges.append(
            {
                "home": self.home,
                "src": src,
                "dst": dst,
                "relation": relation,
                "service": service,
                "to_states": to_states,
                "trigger_platform": platform,
            }
        )

    def triggers(self, triggers: Any) -> None:
        for trigger in _as_list(triggers):
            if not isinstance(trigger, dict):
                continue
            platform = trigger.get("trigger") or trigger.get("platform")
            to_states = None if trigger.get("attribute") else _states(trigger.get("to"))
            for entity in _entity_ids(trigger.get("entity_id")):
                self.edge(entity, self.node, "trigger", to_states=to_states, platform=platform)
            for zone in _entity_ids(trigger.get("zone")):
                self.edge(zone, self.node, "trigger", platform=platform)
            for event_type in _as_list(trigger.get("event_type")):
                self.edge(f"event:{event_type}", self.node, "trigger", platform=platform)
            event_data = trigger.get("event_data") or {}
            for entity in _entity_ids(event_data.get("entity_id")):
                self.edge(entity, self.node, "trigger", platform=platform)
            if platform == "sun":
                self.edge("sun.sun", self.node, "trigger", platform=platform)
            for key in ("value_template", "at"):
                for entity in template_entities(trigger.get(key)):
                    self.edge(entity, self.node, "trigger", platform=platform)

    def conditions(self, conditions: Any) -> None:
        for condition in _as_list(conditions):
            if isinstance(condition, str):
                refs = template_entities(condition)
            elif isinstance(condition, dict):
                refs = _entity_ids(condition.get("entity_id")) + template_entities(condition.get("value_template"))
                self.conditions(condition.get("conditions"))
            else:
                refs = []
            for entity in dict.fromkeys(refs):
                self.edge(entity, self.node, "condition")

    def actions_of(self, steps: Any) -> None:
        for step in _as_list(steps):
            if isinstance(step, dict):
                self.step(step)

    def step(self, step: dict[str, Any]) -> None:
        service = step.get("action") or step.get("service")
        if isinstance(service, str) and "." in service:
            self.service_call(service, step)
        if isinstance(step.get("scene"), str):
            self.actions += 1
            self.edge(self.node, step["scene"], "action", service="scene.turn_on")
        if isinstance(step.get("event"), str):
            self.actions += 1
            self.edge(self.node, f"event:{step['event']}", "fire_event")
        if "condition" in step:
            self.conditions(step)
        self.conditions(step.get("if"))
        for entity in template_entities(step.get("wait_template")):
            self.edge(entity, self.node, "condition")
        for option in _as_list(step.get("choose")):
            if isinstance(option, dict):
                self.conditions(option.get("conditions"))
                self.actions_of(option.get("sequence"))
        repeat = step.get("repeat")
        if isinstance(repeat, dict):
            self.conditions(repeat.get("while"))
            self.conditions(repeat.get("until"))
            self.actions_of(repeat.get("sequence"))
        for key in NESTED_ACTION_KEYS:
            nested = step.get(key)
            if isinstance(nested, dict):
                self.step(nested)
            else:
                self.actions_of(nested)

    def service_call(self, service: str, step: dict[str, Any]) -> None:
        self.actions += 1
        domain, name = service.split(".", 1)
        data = step.get("data") or step.get("data_template") or {}
        target = step.get("target") or {}
        targets = (
            _entity_ids(target.get("entity_id"))
            + _entity_ids(step.get("entity_id"))
            + _entity_ids(data.get("entity_id") if isinstance(data, dict) else None)
        )
        if domain == "script" and name not in SCRIPT_SERVICES:
            self.edge(self.node, service, "call", service=service)
        for entity in dict.fromkeys(targets):
            if entity == "all":
                self.edge(self.node, f"all:{domain}", "action", service=service, to_states=_results(domain, name, data))
            elif domain == "script" and entity.startswith("script.") and name in ("turn_on", "toggle"):
                self.edge(self.node, entity, "call", service=service)
            else:
                self.edge(
                    self.node,
                    entity,
                    "action",
                    service=service,
                    to_states=_results(entity.split(".", 1)[0], name, data),
                )
        for kind in ("area_id", "device_id", "floor_id", "label_id"):
            for item in _as_list(target.get(kind)):
                self.edge(self.node, f"{kind.removesuffix('_id')}:{item}", "action", service=service)
        for entity in template_entities(
            {k: v for k, v in data.items() if k != "entity_id"} if isinstance(data, dict) else data
        ):
            self.edge(entity, self.node, "reads")


def _results(domain: str, service_name: str, data: Any) -> list[str] | None:
    """States the target (of ``domain``) can be in after the call, or None when that is unknown (templates,
    counters, scenes)."""
    if service_name in ON_OFF_SERVICES:
        return list(ON_OFF_SERVICES[service_name]) if domain in ON_OFF_DOMAINS else None
    if service_name in SERVICE_RESULTS:
        return list(SERVICE_RESULTS[service_name])
    if service_name == "select_option" and isinstance(data, dict):
        option = data.get("option")
        if isinstance(option, str) and "{" not in option:
            return [option]
    return None


def _configs(rows: pl.DataFrame) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """The latest config of each automation and script: (home, kind, entity_id, config)."""
    latest = rows.sort("snapshot_at", "snapshot_seq").unique(subset=["home", "kind", "item_id"], keep="last")
    for row in latest.sort("home", "item_id").iter_rows(named=True):
        config = json.loads(row["data"]).get("config")
        if isinstance(config, dict):
            yield row["home"], row["kind"], row["item_id"], config


def config_graph(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(nodes, edges) of automations and scripts from their configs.

    Edge relations: ``trigger`` (entity/zone/``event:<type>`` -> automation, with the trigger's ``to``
    states), ``condition`` and ``reads`` (entity -> automation/script), ``action`` (automation/script ->
    entity, ``all:<domain>``, ``area:<id>``..., with the service and the states it can leave the target in),
    ``call`` (-> script), ``fire_event`` (-> ``event:<type>``).
    """
    nodes, edges = [], []
    for home, kind, entity_id, config in _configs(rows):
        walker = _Walker(home, entity_id)
        if kind == "automations":
            walker.triggers(config.get("triggers", config.get("trigger")))
            walker.conditions(config.get("conditions", config.get("condition")))
            walker.actions_of(config.get("actions", config.get("action")))
        else:
            walker.actions_of(config.get("sequence"))
        nodes.append(
            {
                "home": home,
                "node_id": entity_id,
                "node_type": kind.removesuffix("s"),
                "name": config.get("alias"),
                "config_id": config.get("id"),
                "mode": config.get("mode", "single"),
                "n_triggers": sum(e["relation"] == "trigger" for e in walker.edges),
                "n_actions": walker.actions,
            }
        )
        edges += walker.edges
    edge_frame = pl.DataFrame(edges, schema=EDGE_SCHEMA).unique(maintain_order=True)
    return pl.DataFrame(nodes, schema=NODE_SCHEMA), edge_frame
