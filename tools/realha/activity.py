#!/usr/bin/env python3
"""Activity generator for a realha Home Assistant.

Drives HA over the WebSocket API so that it emits state_changed,
call_service, automation_triggered, script_started, timer.*, registry update
events, etc.:

* random service calls (call_service) over the entities found with get_states,
  at --rate commands/s spread over --clients connections;
* fire_event of custom events;
* automation.trigger / script.turn_on / scene.turn_on;
* every --registry-every s a registry edit (entity rename, device moved to
  another area, label added/removed, area edited);
* every --burst-every s a burst of --burst-size commands sent as fast as
  possible from --burst-clients connections (input_number.set_value or
  fire_event);
* a timeline of scheduled operations from the profile JSON (--profile), e.g.
  start the ping-pong loop, trigger the automation chain, rename an entity_id,
  change a sensor unit, create/delete areas, restart HA
  (homeassistant.restart; the generator reconnects and goes on).

Usage:
  python activity.py --duration 600 --rate 6 --profile configs/fixture/activity.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import string
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hawsclient import HAWS, default_token_file, load_token  # noqa: E402

DEFAULT_WEIGHTS = {
    "light": 14,
    "switch": 4,
    "input_boolean": 5,
    "input_number": 8,
    "input_select": 4,
    "input_text": 2,
    "input_button": 1,
    "counter": 2,
    "climate": 4,
    "cover": 4,
    "media_player": 5,
    "lock": 2,
    "fan": 4,
    "humidifier": 2,
    "water_heater": 1,
    "number": 3,
    "select": 2,
    "text": 2,
    "siren": 1,
    "vacuum": 1,
    "valve": 1,
    "alarm_control_panel": 1,
    "device_tracker": 3,
    "fire_event": 6,
    "automation": 2,
    "script": 2,
    "scene": 1,
    "timer": 1,
    "notification": 1,
}


class Gen:
    def __init__(self, a, profile: dict) -> None:
        self.a = a
        self.p = profile
        self.rng = random.Random(a.seed)
        self.tok = load_token(a.token_file)
        self.states: dict[str, dict] = {}
        self.stats = collections.Counter()
        self.errors = collections.Counter()
        self.error_samples: list[dict] = []
        self.t0 = time.time()
        self.deadline = self.t0 + a.duration
        self.clients: list[HAWS | None] = [None] * max(a.clients, a.burst_clients, 1)
        self.lock = asyncio.Lock()
        self.seq = 0
        self.exclude = re.compile(profile.get("exclude_random", r"^$"))
        self.texts = profile.get("texts", ["hello", "note"])
        self.weights = dict(DEFAULT_WEIGHTS, **profile.get("weights", {}))
        self.restarting_until = 0.0

    # -- connections --------------------------------------------------------
    async def client(self, i: int) -> HAWS:
        c = self.clients[i]
        if c is not None and not c.closed.is_set():
            return c
        while time.time() < self.deadline:
            try:
                c = await HAWS(self.tok["ws_url"], self.tok["token"]).connect()
                self.clients[i] = c
                if i == 0:
                    await self.refresh_states(c)
                return c
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.5)
        raise TimeoutError("deadline")

    async def refresh_states(self, c: HAWS) -> None:
        states = await c.call("get_states")
        self.states = {s["entity_id"]: s for s in states}

    def collect(self, c: HAWS) -> None:
        for e in c.errors:
            code = (e.get("error") or {}).get("code", "?")
            self.errors[code] += 1
            if len(self.error_samples) < 30:
                self.error_samples.append(e)
        c.errors.clear()

    async def send(self, i: int, type_: str, **payload: Any) -> None:
        try:
            c = await self.client(i)
            await c.send(type_, **payload)
            self.stats[type_ if type_ != "call_service" else "call_service:" + payload.get("domain", "")] += 1
            self.collect(c)
        except (ConnectionError, OSError, TimeoutError):
            self.stats["send_failed_disconnected"] += 1

    async def call(self, type_: str, **payload: Any) -> Any:
        c = await self.client(0)
        return await c.call(type_, **payload)

    # -- entity helpers ------------------------------------------------------
    def ents(self, domain: str) -> list[str]:
        return [e for e in self.states if e.startswith(domain + ".") and not self.exclude.search(e)]

    def text(self) -> str:
        return self.rng.choice(self.texts)

    def svc(self, domain: str, service: str, entity_id: str | None = None, **data: Any) -> tuple[str, dict]:
        payload: dict[str, Any] = {"domain": domain, "service": service, "service_data": data}
        if entity_id:
            payload["target"] = {"entity_id": entity_id}
        return "call_service", payload

    def random_action(self) -> tuple[str, dict] | None:
        r = self.rng
        kinds = [k for k, w in self.weights.items() if w > 0]
        kind = r.choices(kinds, [self.weights[k] for k in kinds])[0]
        if kind == "fire_event":
            self.seq += 1
            et = r.choice(self.p.get("custom_event_types", ["realha_custom_event"]))
            return "fire_event", {
                "event_type": et,
                "event_data": {
                    "seq": self.seq,
                    "note": self.text(),
                    "value": round(r.uniform(-50, 50), 3),
                    "tags": r.sample(["a", "b", "c", "d"], r.randint(0, 3)),
                    "nested": {"level": r.randint(1, 5), "ok": r.random() < 0.5, "none": None},
                },
            }
        if kind == "notification":
            return self.svc(
                "persistent_notification",
                "create",
                message=self.text(),
                title="realha",
                notification_id=f"realha_{r.randint(1, 5)}",
            )
        ents = self.ents(kind)
        if not ents:
            return None
        e = r.choice(ents)
        at = self.states[e]["attributes"]
        if kind == "light":
            op = r.random()
            if op < 0.25:
                return self.svc("light", "turn_off", e)
            if op < 0.35:
                return self.svc("light", "toggle", e)
            data: dict[str, Any] = {"brightness": r.randint(1, 255)}
            modes = set(at.get("supported_color_modes") or [])
            if modes & {"hs", "rgb", "rgbw", "rgbww", "xy"} and r.random() < 0.5:
                data["rgb_color"] = [r.randint(0, 255) for _ in range(3)]
            elif "color_temp" in modes and r.random() < 0.5:
                data["color_temp_kelvin"] = r.randrange(2000, 6500, 100)
            return self.svc("light", "turn_on", e, **data)
        if kind in ("switch", "input_boolean", "siren"):
            return self.svc(kind, "toggle", e)
        if kind in ("input_number", "number"):
            lo, hi = float(at.get("min", 0)), float(at.get("max", 100))
            step = float(at.get("step", 1)) or 1
            n = int((hi - lo) / step)
            v = lo + step * r.randint(0, max(n, 0)) if n < 10**7 else r.uniform(lo, hi)
            v = round(v, 3)
            return self.svc(kind, "set_value", e, value=v)
        if kind in ("input_select", "select"):
            opts = at.get("options") or []
            return self.svc(kind, "select_option", e, option=r.choice(opts)) if opts else None
        if kind == "input_text":
            return self.svc("input_text", "set_value", e, value=self.text()[: int(at.get("max", 100))])
        if kind == "text":
            lo, hi = int(at.get("min", 0)), int(at.get("max", 255))
            if at.get("pattern"):
                v = "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(max(lo, 1), min(hi, 12))))
            else:
                v = self.text()[:hi]
                if len(v) < lo:
                    v = v + "x" * (lo - len(v))
            return self.svc("text", "set_value", e, value=v)
        if kind == "input_button":
            return self.svc("input_button", "press", e)
        if kind == "counter":
            return self.svc("counter", r.choice(["increment", "increment", "decrement"]), e)
        if kind == "climate":
            if r.random() < 0.7:
                lo, hi = float(at.get("min_temp", 7)), float(at.get("max_temp", 35))
                if at.get("target_temp_low") is not None and at.get("temperature") is None:
                    low = round(r.uniform(lo, hi - 3), 1)
                    return self.svc("climate", "set_temperature", e, target_temp_low=low, target_temp_high=low + 3)
                return self.svc("climate", "set_temperature", e, temperature=round(r.uniform(lo, hi) * 2) / 2)
            return self.svc("climate", "set_hvac_mode", e, hvac_mode=r.choice(at.get("hvac_modes") or ["off"]))
        sf = int(at.get("supported_features") or 0)
        strict = r.random() < 0.9  # ~10% of calls ignore supported_features -> realistic errors

        def ok(bit: int) -> bool:
            return not strict or bool(sf & bit)

        if kind == "cover":
            ops = [
                o
                for o, bit in (
                    ("open_cover", 1),
                    ("close_cover", 2),
                    ("set_cover_position", 4),
                    ("stop_cover", 8),
                    ("open_cover_tilt", 16),
                )
                if ok(bit)
            ]
            if not ops:
                return None
            op = r.choice(ops)
            if op == "set_cover_position":
                return self.svc("cover", op, e, position=r.randint(0, 100))
            return self.svc("cover", op, e)
        if kind == "media_player":
            ops = [
                o
                for o, bit in (
                    ("volume_set", 4),
                    ("media_play_pause", 16384 | 1),
                    ("media_next_track", 32),
                    ("volume_mute", 8),
                )
                if ok(bit)
            ]
            if not ops:
                return None
            op = r.choice(ops)
            if op == "volume_set":
                return self.svc("media_player", op, e, volume_level=round(r.random(), 2))
            if op == "volume_mute":
                return self.svc("media_player", op, e, is_volume_muted=r.random() < 0.5)
            return self.svc("media_player", op, e)
        if kind == "lock":
            return self.svc("lock", r.choice(["lock", "unlock"]), e)
        if kind == "fan":
            op = r.choice(
                [
                    o
                    for o, bit in (("set_percentage", 1), ("turn_off", 0), ("oscillate", 2), ("turn_on", 0))
                    if bit == 0 or ok(bit)
                ]
            )
            if op == "set_percentage":
                return self.svc("fan", op, e, percentage=r.choice([0, 25, 33, 50, 66, 75, 100]))
            if op == "oscillate":
                return self.svc("fan", op, e, oscillating=r.random() < 0.5)
            return self.svc("fan", op, e)
        if kind == "humidifier":
            return self.svc("humidifier", "set_humidity", e, humidity=r.randint(30, 70))
        if kind == "water_heater":
            return self.svc("water_heater", "set_temperature", e, temperature=r.randint(40, 60))
        if kind == "vacuum":
            ops = [o for o, bit in (("start", 8192), ("return_to_base", 16), ("stop", 8)) if ok(bit)]
            return self.svc("vacuum", r.choice(ops), e) if ops else None
        if kind == "valve":
            return self.svc("valve", r.choice(["open_valve", "close_valve"]), e)
        if kind == "alarm_control_panel":
            return self.svc("alarm_control_panel", r.choice(["alarm_arm_home", "alarm_disarm"]), e, code="1234")
        if kind == "device_tracker":
            dev = e.split(".", 1)[1]
            zones = [z for z in self.states if z.startswith("zone.")]
            if zones and r.random() < 0.7:
                za = self.states[r.choice(zones)]["attributes"]
                return self.svc(
                    "device_tracker",
                    "see",
                    None,
                    dev_id=dev,
                    gps=[za["latitude"] + r.uniform(-5e-4, 5e-4), za["longitude"] + r.uniform(-5e-4, 5e-4)],
                    gps_accuracy=r.randint(5, 60),
                    battery=r.randint(5, 100),
                )
            return self.svc("device_tracker", "see", None, dev_id=dev, location_name="not_home")
        if kind == "automation":
            return self.svc("automation", "trigger", e, skip_condition=r.random() < 0.5)
        if kind in ("script", "scene"):
            return self.svc(kind, "turn_on", e)
        if kind == "timer":
            return self.svc("timer", r.choice(["start", "start", "cancel", "pause"]), e)
        return None

    # -- loops -----------------------------------------------------------------
    async def random_loop(self, i: int) -> None:
        per_client = self.a.rate / max(self.a.clients, 1)
        if per_client <= 0:
            return
        while time.time() < self.deadline:
            await asyncio.sleep(self.rng.expovariate(per_client))
            if time.time() < self.restarting_until:
                continue
            act = self.random_action()
            if act:
                await self.send(i, act[0], **act[1])

    async def burst_loop(self) -> None:
        if self.a.burst_every <= 0:
            return
        n = 0
        await asyncio.sleep(self.a.burst_every / 2)
        while time.time() < self.deadline - 5:
            n += 1
            kind = "set_value" if n % 2 else "fire_event"
            per = self.a.burst_size // self.a.burst_clients
            target = self.p.get("burst_number", "input_number.bench_value")
            t1 = time.time()

            async def one(ci: int, kind: str = kind, per: int = per, target: str = target, n: int = n) -> None:
                for k in range(per):
                    if kind == "set_value":
                        await self.send(
                            ci,
                            "call_service",
                            domain="input_number",
                            service="set_value",
                            target={"entity_id": target},
                            service_data={"value": (n * 10007 + ci * per + k) % 1000000},
                        )
                    else:
                        await self.send(
                            ci,
                            "fire_event",
                            event_type=self.p.get("burst_event", "realha_burst"),
                            event_data={"burst": n, "client": ci, "k": k},
                        )

            await asyncio.gather(*(one(ci) for ci in range(self.a.burst_clients)))
            self.stats[f"burst_{kind}"] += 1
            print(
                f"[activity] burst {n} ({kind}, {per * self.a.burst_clients} cmds) sent in {time.time() - t1:.2f}s",
                file=sys.stderr,
            )
            await asyncio.sleep(self.a.burst_every)

    async def registry_loop(self) -> None:
        if self.a.registry_every <= 0:
            return
        await asyncio.sleep(self.a.registry_every)
        while time.time() < self.deadline - 5:
            try:
                await self.registry_edit()
            except Exception as e:  # noqa: BLE001
                self.errors["registry_edit:" + type(e).__name__] += 1
                if len(self.error_samples) < 30:
                    self.error_samples.append({"registry_edit": repr(e)})
            await asyncio.sleep(self.a.registry_every * self.rng.uniform(0.6, 1.4))

    async def registry_edit(self) -> None:
        r = self.rng
        op = r.choice(["rename_entity", "move_device", "label_entity", "area_edit", "move_device"])
        if op == "rename_entity":
            ents = [
                e for e in await self.call("config/entity_registry/list") if not self.exclude.search(e["entity_id"])
            ]
            e = r.choice(ents)
            name = None if r.random() < 0.3 else f"{self.text()[:30]} #{r.randint(1, 99)}"
            await self.call("config/entity_registry/update", entity_id=e["entity_id"], name=name)
        elif op == "move_device":
            devs = await self.call("config/device_registry/list")
            areas = await self.call("config/area_registry/list")
            d = r.choice([d for d in devs if d.get("entry_type") != "service"] or devs)
            area = r.choice(areas + [None])
            await self.call(
                "config/device_registry/update", device_id=d["id"], area_id=area["area_id"] if area else None
            )
        elif op == "label_entity":
            labels = await self.call("config/label_registry/list")
            ents = await self.call("config/entity_registry/list")
            e = r.choice(ents)
            lbl = r.sample([x["label_id"] for x in labels], r.randint(0, min(2, len(labels))))
            await self.call("config/entity_registry/update", entity_id=e["entity_id"], labels=lbl)
        else:
            areas = await self.call("config/area_registry/list")
            a = r.choice(areas)
            await self.call(
                "config/area_registry/update",
                area_id=a["area_id"],
                aliases=r.sample(["alpha", "beta", "gamma", self.text()[:20]], r.randint(0, 2)),
            )
        self.stats["registry:" + op] += 1

    async def timeline(self) -> None:
        for item in sorted(self.p.get("timeline", []), key=lambda x: x["at"]):
            delay = self.t0 + item["at"] - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.time() > self.deadline:
                return
            try:
                await self.run_item(item)
                self.stats["timeline"] += 1
                print(
                    f"[activity] t={time.time() - self.t0:.0f}s timeline: {item.get('note') or item}", file=sys.stderr
                )
            except Exception as e:  # noqa: BLE001
                print(f"[activity] timeline item failed {item}: {e!r}", file=sys.stderr)
                self.errors["timeline:" + type(e).__name__] += 1

    async def area_id(self, name: str) -> str:
        for a in await self.call("config/area_registry/list"):
            if a["name"] == name:
                return a["area_id"]
        raise KeyError(name)

    async def run_item(self, item: dict) -> None:
        if "service" in item:
            domain, service = item["service"].split(".", 1)
            payload = {"domain": domain, "service": service, "service_data": item.get("data", {})}
            if "entity_id" in item:
                payload["target"] = {"entity_id": item["entity_id"]}
            if item["service"] == "homeassistant.restart":
                self.restarting_until = time.time() + item.get("pause_s", 20)
                await self.send(0, "call_service", **payload)
                return
            await self.call("call_service", **payload)
        elif "ws" in item:
            await self.call(item["ws"]["type"], **{k: v for k, v in item["ws"].items() if k != "type"})
        elif "move_device" in item:
            spec = item["move_device"]
            aid = await self.area_id(spec["area"]) if spec.get("area") else None
            for d in await self.call("config/device_registry/list"):
                if re.search(spec["name_regex"], d.get("name_by_user") or d.get("name") or ""):
                    await self.call("config/device_registry/update", device_id=d["id"], area_id=aid)
        elif "rename_area" in item:
            aid = await self.area_id(item["rename_area"]["from"])
            await self.call("config/area_registry/update", area_id=aid, name=item["rename_area"]["to"])
        elif "delete_area" in item:
            await self.call("config/area_registry/delete", area_id=await self.area_id(item["delete_area"]))
        elif "create_area" in item:
            spec = dict(item["create_area"])
            if "floor" in spec:
                floors = {f["name"]: f["floor_id"] for f in await self.call("config/floor_registry/list")}
                spec["floor_id"] = floors[spec.pop("floor")]
            await self.call("config/area_registry/create", **spec)
        elif "set_time_in" in item:
            import datetime as dt
            from zoneinfo import ZoneInfo

            spec = item["set_time_in"]
            tz = ZoneInfo((await self.call("get_config"))["time_zone"])
            when = dt.datetime.now(tz) + dt.timedelta(seconds=spec["seconds"])
            await self.call(
                "call_service",
                domain="input_datetime",
                service="set_datetime",
                target={"entity_id": spec["entity_id"]},
                service_data={"time": when.strftime("%H:%M:%S")},
            )
        elif "refresh_states" in item:
            await self.refresh_states(await self.client(0))

    async def run(self) -> dict:
        await self.client(0)
        for i in range(1, len(self.clients)):
            await self.client(i)
        tasks = [asyncio.create_task(self.random_loop(i)) for i in range(self.a.clients)]
        tasks += [
            asyncio.create_task(self.burst_loop()),
            asyncio.create_task(self.registry_loop()),
            asyncio.create_task(self.timeline()),
            asyncio.create_task(self.state_refresher()),
        ]
        await asyncio.sleep(max(0.0, self.deadline - time.time()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(1)
        for c in self.clients:
            if c is not None:
                self.collect(c)
                await c.close()
        return {
            "duration_s": round(time.time() - self.t0, 1),
            "sent": dict(self.stats.most_common()),
            "errors": dict(self.errors.most_common()),
            "error_samples": self.error_samples[:10],
        }

    async def state_refresher(self) -> None:
        while time.time() < self.deadline:
            await asyncio.sleep(30)
            with contextlib.suppress(Exception):
                await self.refresh_states(await self.client(0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--token-file", default=os.environ.get("HA_TOKEN_FILE"))
    p.add_argument("--profile", help="activity profile JSON (timeline, texts, weights, exclude_random)")
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--rate", type=float, default=6, help="random commands per second (all clients together)")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--burst-every", type=float, default=60, help="seconds between bursts (0: none)")
    p.add_argument("--burst-size", type=int, default=300)
    p.add_argument("--burst-clients", type=int, default=3)
    p.add_argument("--registry-every", type=float, default=40, help="seconds between registry edits (0: none)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--report", help="write a JSON report here")
    a = p.parse_args()
    if not a.token_file:
        a.token_file = default_token_file()
    profile = {}
    if a.profile:
        with open(a.profile, encoding="utf-8") as fh:
            profile = json.load(fh)
    rep = asyncio.run(Gen(a, profile).run())
    print(json.dumps(rep, ensure_ascii=False)[:2000], file=sys.stderr)
    if a.report:
        with open(a.report, "w", encoding="utf-8") as fh:
            json.dump(rep, fh, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
