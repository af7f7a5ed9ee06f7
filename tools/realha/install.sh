#!/usr/bin/env bash
# Create the Home Assistant venv ($HA_VENV) and install homeassistant==$HA_VERSION
# plus requirements-integrations.txt, so that hass never pip-installs at start.
#
# Idempotent: when the venv already has homeassistant==$HA_VERSION and every
# pinned package of requirements-integrations.txt, pip is not run at all
# (takes well under a second). A lock on $REALHA_DIR/install.lock serialises
# concurrent installs (e.g. parallel CI jobs sharing the cache).
#
# PYTHON: a Python 3.13 interpreter for a new venv (default: python3.13, else
# pyenv's newest 3.13.x). Only needed when the venv does not exist yet.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
REQS="$REALHA_TOOLS/requirements-integrations.txt"

# Exit 0 when the venv already holds every wanted version (no pip needed).
venv_complete() {
  [ -x "$HA_VENV/bin/python" ] && [ -x "$HA_VENV/bin/hass" ] || return 1
  "$HA_VENV/bin/python" - "$HA_VERSION" "$REQS" <<'PY' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version
want = {"homeassistant": sys.argv[1]}
for line in open(sys.argv[2], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, ver = line.split("==", 1)
        want[name.strip()] = ver.strip()
try:
    bad = [n for n, v in want.items() if version(n) != v]
except PackageNotFoundError:
    sys.exit(1)
sys.exit(1 if bad else 0)
PY
}

exec 9>"$REALHA_DIR/install.lock"
flock 9
if venv_complete; then
  echo "already installed: homeassistant $HA_VERSION in $HA_VENV (pip skipped)"
  exit 0
fi
if [ ! -x "$HA_VENV/bin/python" ]; then
  if [ -z "${PYTHON:-}" ]; then
    if python3.13 -c 'import sys' >/dev/null 2>&1; then PYTHON=python3.13
    elif command -v pyenv >/dev/null && ls -d "$(pyenv root)"/versions/3.13*/bin/python3 >/dev/null 2>&1; then
      PYTHON="$(ls -d "$(pyenv root)"/versions/3.13*/bin/python3 | sort -V | tail -1)"
    else echo "set PYTHON to a Python 3.13 interpreter" >&2; exit 1; fi
  fi
  echo "python: $PYTHON ($("$PYTHON" --version))"
fi
t0=$(date +%s)
[ -x "$HA_VENV/bin/python" ] || "$PYTHON" -m venv "$HA_VENV"
"$HA_VENV/bin/pip" install -q "homeassistant==$HA_VERSION"
CONSTRAINTS="$("$HA_VENV/bin/python" -c 'import homeassistant,os;print(os.path.join(os.path.dirname(homeassistant.__file__),"package_constraints.txt"))')"
"$HA_VENV/bin/pip" install -q -r "$REQS" -c "$CONSTRAINTS"
t1=$(date +%s)
echo "installed homeassistant $("$HA_VENV/bin/hass" --version) in $((t1-t0)) s; venv size $(du -sh "$HA_VENV" | cut -f1)"
