#!/usr/bin/env bash
# Stop the Home Assistant started by ha_start.sh for this $HA_PROFILE/$HA_PORT:
# SIGTERM to the supervisor PID in $HA_PIDFILE (it forwards it to hass and does
# not restart it); waits up to 60 s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[ -f "$HA_PIDFILE" ] || { echo "not running (no $HA_PIDFILE)"; exit 0; }
PID="$(cat "$HA_PIDFILE")"
if ! kill -0 "$PID" 2>/dev/null; then rm -f "$HA_PIDFILE"; echo "stale pid file removed"; exit 0; fi
kill -TERM "$PID"
for _ in $(seq 600); do kill -0 "$PID" 2>/dev/null || { echo "stopped (pid $PID)"; exit 0; }; sleep 0.1; done
echo "still running after 60 s: pid $PID" >&2; exit 1
