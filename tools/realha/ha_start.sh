#!/usr/bin/env bash
# Start Home Assistant in the background (profile $HA_PROFILE, port $HA_PORT,
# bound to 127.0.0.1) under supervise.py, onboard it when new, and wait until
# the WebSocket API reports state RUNNING.
#   ha_start.sh [--fresh]
# --fresh (or a missing config dir) re-creates $HA_CONFIG from
# configs/$HA_PROFILE; onboarding + registry set-up then run after the start.
# Does nothing if this instance is already running (even with --fresh).
# Start-up timings are appended to $REALHA_DIR/startup-$HA_INSTANCE.jsonl.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
FRESH=0
[ "${1:-}" = "--fresh" ] && FRESH=1
if [ -f "$HA_PIDFILE" ] && kill -0 "$(cat "$HA_PIDFILE")" 2>/dev/null; then
  echo "already running (pid $(cat "$HA_PIDFILE")); url $HA_URL token file $HA_TOKEN_FILE"; exit 0
fi
if [ ! -x "$HA_VENV/bin/hass" ]; then echo "no Home Assistant venv at $HA_VENV: run install.sh" >&2; exit 1; fi
if (exec 3<>/dev/tcp/127.0.0.1/"$HA_PORT") 2>/dev/null; then echo "port $HA_PORT is in use" >&2; exit 1; fi
NEW=0
if [ "$FRESH" = 1 ] || [ ! -f "$HA_CONFIG/configuration.yaml" ]; then
  rm -rf "$HA_CONFIG"; mkdir -p "$HA_CONFIG"
  cp "$REALHA_TOOLS/configs/$HA_PROFILE/"*.yaml "$HA_CONFIG/"
  sed -i "s/__HA_PORT__/$HA_PORT/g" "$HA_CONFIG/configuration.yaml"
  rm -f "$HA_TOKEN_FILE"; NEW=1
fi
EVENTS="$REALHA_DIR/supervisor-$HA_INSTANCE.jsonl"
T0=$("$HA_PY" -c 'import time;print(time.time())')
rm -f "$HA_PIDFILE"
nohup "$HA_PY" "$REALHA_TOOLS/supervise.py" --pidfile "$HA_PIDFILE" --events "$EVENTS" -- \
  "$HA_VENV/bin/hass" -c "$HA_CONFIG" --log-no-color ${HA_EXTRA_ARGS:-} \
  > "$REALHA_DIR/hass-$HA_INSTANCE.stdout" 2>&1 < /dev/null &
for _ in $(seq 50); do [ -f "$HA_PIDFILE" ] && break; sleep 0.1; done
"$HA_PY" "$REALHA_TOOLS/startup_time.py" --t0 "$T0" --url "$HA_URL" --token-file "$HA_TOKEN_FILE" \
  --timeout "$HA_START_TIMEOUT" --out "$REALHA_DIR/startup-$HA_INSTANCE.jsonl" & MEASURE=$!
trap 'kill "$MEASURE" 2>/dev/null || true' EXIT
if [ "$NEW" = 1 ] || [ ! -f "$HA_TOKEN_FILE" ]; then
  REG=()
  [ -f "$REALHA_TOOLS/configs/$HA_PROFILE/registry.json" ] && REG=(--registry "$REALHA_TOOLS/configs/$HA_PROFILE/registry.json")
  "$HA_PY" "$REALHA_TOOLS/onboard.py" --url "$HA_URL" --token-file "$HA_TOKEN_FILE" \
    --timeout "$HA_START_TIMEOUT" "${REG[@]}"
fi
wait "$MEASURE"
trap - EXIT
echo "Home Assistant $HA_INSTANCE running: pid $(cat "$HA_PIDFILE") (supervisor)"
echo "URL:        $HA_URL"
echo "token file: $HA_TOKEN_FILE"
echo "config:     $HA_CONFIG"
echo "log:        $HA_CONFIG/home-assistant.log"
