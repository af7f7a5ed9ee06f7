# Defaults shared by the realha shell scripts (sourced, not executed).
# Any variable can be set in the environment first to override it.
#
# REALHA_DIR lives in a per-user cache outside the repository, so every clone
# (and every CI job) on the same machine shares one Home Assistant venv.
# Per-instance state (config dir, token, PID file, logs) is keyed by profile
# AND port, so two instances on different ports do not trample each other.
REALHA_TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REALHA_DIR="${REALHA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ha-ingestor/realha}"
HA_VERSION="${HA_VERSION:-2025.4.4}"
HA_VENV="${HA_VENV:-$REALHA_DIR/venv}"
HA_PROFILE="${HA_PROFILE:-fixture}"
HA_PORT="${HA_PORT:-18123}"
HA_INSTANCE="${HA_INSTANCE:-$HA_PROFILE-$HA_PORT}"
HA_CONFIG="${HA_CONFIG:-$REALHA_DIR/config-$HA_INSTANCE}"
HA_URL="${HA_URL:-http://127.0.0.1:$HA_PORT}"
HA_TOKEN_FILE="${HA_TOKEN_FILE:-$REALHA_DIR/token-$HA_INSTANCE.json}"
HA_PIDFILE="${HA_PIDFILE:-$REALHA_DIR/ha-$HA_INSTANCE.pid}"
HA_START_TIMEOUT="${HA_START_TIMEOUT:-300}"
HA_PY="$HA_VENV/bin/python"
mkdir -p "$REALHA_DIR"
REALHA_DIR="$(cd "$REALHA_DIR" && pwd)"
export REALHA_DIR HA_VERSION HA_VENV HA_PROFILE HA_PORT HA_INSTANCE HA_CONFIG HA_URL \
  HA_TOKEN_FILE HA_PIDFILE HA_START_TIMEOUT
