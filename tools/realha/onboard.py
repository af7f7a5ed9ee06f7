#!/usr/bin/env python3
"""Headless onboarding of a fresh Home Assistant + registry set-up.

Steps (each skipped when already done):
  1. POST /api/onboarding/users  -> owner user + auth_code (also creates the
     default areas Living Room / Kitchen / Bedroom and a person for the owner)
  2. POST /auth/token (authorization_code) -> access + refresh token
  3. POST /api/onboarding/analytics and /api/onboarding/integration
     (core_config is skipped unless --core-config: it starts met,
     radio_browser, google_translate, shopping_list, which need the internet)
  4. WebSocket auth/long_lived_access_token -> token file
  5. optional --registry FILE.json: floors, labels, areas, device/entity
     assignments via config/*_registry/* WebSocket commands.

Usage:
  python onboard.py --url http://127.0.0.1:18123 [--registry configs/fixture/registry.json]
Token file: --token-file, else $HA_TOKEN_FILE, else $REALHA_DIR/token-$HA_PROFILE-$HA_PORT.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hawsclient import HAWS, HAError, default_token_file, wait_http  # noqa: E402


async def _post_json(s, url, data, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with s.post(url, json=data, headers=headers) as r:
        body = await r.text()
        if r.status >= 400:
            raise RuntimeError(f"POST {url} -> {r.status} {body}")
        return json.loads(body) if body else {}


async def _token_from_code(s, base, code, client_id):
    async with s.post(
        base + "/auth/token",
        data={"grant_type": "authorization_code", "code": code, "client_id": client_id},
    ) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"/auth/token -> {r.status} {body}")
        return body


async def _login_flow(s, base, client_id, username, password):
    """Password login for an already onboarded instance (re-run)."""
    flow = await _post_json(
        s,
        base + "/auth/login_flow",
        {"client_id": client_id, "handler": ["homeassistant", None], "redirect_uri": client_id},
    )
    res = await _post_json(
        s,
        f"{base}/auth/login_flow/{flow['flow_id']}",
        {"client_id": client_id, "username": username, "password": password},
    )
    if res.get("type") != "create_entry":
        raise RuntimeError(f"login failed: {res}")
    return await _token_from_code(s, base, res["result"], client_id)


async def onboard(args) -> dict:
    base = args.url.rstrip("/")
    ws_url = base.replace("http", "ws", 1) + "/api/websocket"
    client_id = base + "/"
    waited = await wait_http(base, timeout=args.timeout)
    print(f"HTTP up after {waited:.1f}s of waiting", file=sys.stderr)
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/api/onboarding") as r:
            steps = {x["step"]: x["done"] for x in await r.json()}
        if not steps.get("user"):
            res = await _post_json(
                s,
                base + "/api/onboarding/users",
                {
                    "client_id": client_id,
                    "name": args.name,
                    "username": args.username,
                    "password": args.password,
                    "language": args.language,
                },
            )
            tokens = await _token_from_code(s, base, res["auth_code"], client_id)
        else:
            tokens = await _login_flow(s, base, client_id, args.username, args.password)
        access = tokens["access_token"]
        if not steps.get("analytics"):
            await _post_json(s, base + "/api/onboarding/analytics", {}, access)
        if args.core_config and not steps.get("core_config"):
            await _post_json(s, base + "/api/onboarding/core_config", {}, access)
        if not steps.get("integration"):
            await _post_json(
                s,
                base + "/api/onboarding/integration",
                {"client_id": client_id, "redirect_uri": client_id + "?auth_callback=1"},
                access,
            )
    c = await HAWS(ws_url, access).connect()
    try:
        llat = await c.call("auth/long_lived_access_token", client_name=args.client_name, lifespan=3650)
    finally:
        await c.close()
    info = {"url": base, "ws_url": ws_url, "token": llat, "ha_version": c.ha_version}
    os.makedirs(os.path.dirname(os.path.abspath(args.token_file)), exist_ok=True)
    tmp = args.token_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=1)
    os.chmod(tmp, 0o600)
    os.replace(tmp, args.token_file)
    print(f"token written to {args.token_file}", file=sys.stderr)
    return info


# --------------------------------------------------------------------------
# registry set-up
# --------------------------------------------------------------------------
async def setup_registry(info: dict, spec_path: str, wait_s: float = 90) -> None:
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    c = await HAWS(info["ws_url"], info["token"]).connect()
    try:
        # Config-entry platforms (demo) may still be loading when HA reports
        # RUNNING: wait until the wanted entities exist and the registry is stable.
        wanted = {r["entity_id"] for r in spec.get("entity_assignments", []) if "entity_id" in r}
        t_end, last, stable_since = time.monotonic() + wait_s, -1, time.monotonic()
        while time.monotonic() < t_end:
            ents = {e["entity_id"] for e in await c.call("config/entity_registry/list")}
            if len(ents) != last:
                last, stable_since = len(ents), time.monotonic()
            if wanted <= ents and time.monotonic() - stable_since > 3:
                break
            await asyncio.sleep(0.5)
        floors = {f["name"]: f for f in await c.call("config/floor_registry/list")}
        for f in spec.get("floors", []):
            if f["name"] not in floors:
                floors[f["name"]] = await c.call("config/floor_registry/create", **f)
        labels = {lb["name"]: lb for lb in await c.call("config/label_registry/list")}
        for lb in spec.get("labels", []):
            if lb["name"] not in labels:
                labels[lb["name"]] = await c.call("config/label_registry/create", **lb)

        def label_ids(names):
            return [labels[n]["label_id"] for n in names]

        areas = {a["name"]: a for a in await c.call("config/area_registry/list")}
        for a in spec.get("areas", []):
            payload = {k: v for k, v in a.items() if k not in ("floor", "labels")}
            if a.get("floor"):
                payload["floor_id"] = floors[a["floor"]]["floor_id"]
            if a.get("labels"):
                payload["labels"] = label_ids(a["labels"])
            if a["name"] in areas:
                await c.call(
                    "config/area_registry/update",
                    area_id=areas[a["name"]]["area_id"],
                    **{k: v for k, v in payload.items() if k != "name"},
                )
            else:
                areas[a["name"]] = await c.call("config/area_registry/create", **payload)
        for old, new in spec.get("rename_areas", {}).items():
            if old in areas:
                await c.call("config/area_registry/update", area_id=areas[old]["area_id"], name=new)
        for name in spec.get("delete_areas", []):
            if name in areas:
                await c.call("config/area_registry/delete", area_id=areas[name]["area_id"])

        devices = await c.call("config/device_registry/list")
        n_dev = 0
        for rule in spec.get("device_assignments", []):
            rx = re.compile(rule["name_regex"])
            for d in devices:
                name = d.get("name_by_user") or d.get("name") or ""
                if rx.search(name):
                    payload = {"device_id": d["id"]}
                    if rule.get("area"):
                        payload["area_id"] = areas[rule["area"]]["area_id"]
                    if rule.get("labels"):
                        payload["labels"] = label_ids(rule["labels"])
                    if rule.get("name_by_user"):
                        payload["name_by_user"] = rule["name_by_user"]
                    await c.call("config/device_registry/update", **payload)
                    n_dev += 1
        n_ent = 0
        ents = {e["entity_id"] for e in await c.call("config/entity_registry/list")}
        for rule in spec.get("entity_assignments", []):
            ids = (
                [rule["entity_id"]]
                if "entity_id" in rule
                else [e for e in sorted(ents) if re.search(rule["entity_regex"], e)]
            )
            for eid in ids:
                if eid not in ents:
                    print(f"  (entity {eid} not in entity registry; skipped)", file=sys.stderr)
                    continue
                payload = {"entity_id": eid}
                if rule.get("area"):
                    payload["area_id"] = areas[rule["area"]]["area_id"]
                if rule.get("labels"):
                    payload["labels"] = label_ids(rule["labels"])
                for k in (
                    "name",
                    "icon",
                    "aliases",
                    "new_entity_id",
                    "disabled_by",
                    "hidden_by",
                    "options_domain",
                    "options",
                ):
                    if k in rule:
                        payload[k] = rule[k]
                try:
                    await c.call("config/entity_registry/update", **payload)
                    n_ent += 1
                except HAError as e:
                    print(f"  entity update {eid} failed: {e}", file=sys.stderr)
        print(
            f"registry: {len(floors)} floors, {len(labels)} labels, {len(areas)} areas,"
            f" {n_dev} device updates, {n_ent} entity updates",
            file=sys.stderr,
        )
    finally:
        await c.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("HA_URL", f"http://127.0.0.1:{os.environ.get('HA_PORT', '18123')}"))
    p.add_argument("--token-file", default=default_token_file())
    p.add_argument("--name", default="Owner")
    p.add_argument("--username", default="owner")
    p.add_argument("--password", default="realha-local-only")
    p.add_argument("--language", default="en")
    p.add_argument("--client-name", default="realha-tools")
    p.add_argument("--core-config", action="store_true", help="also finish the core_config step (needs internet)")
    p.add_argument("--registry", help="registry spec JSON (floors/labels/areas/assignments)")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    t0 = time.time()
    info = asyncio.run(onboard(args))
    if args.registry:
        asyncio.run(setup_registry(info, args.registry))
    print(f"onboarding done in {time.time() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
