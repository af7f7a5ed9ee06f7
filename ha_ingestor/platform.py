"""``ha-ingestor run --platform``: the collector and Dagster (webserver and daemon) side by side.

The three run as child processes of this supervisor, each in its own session so that a Ctrl-C in the
terminal reaches only the supervisor, which then stops them in order: the collector first (it flushes
and commits what it holds), then Dagster's daemon and webserver (SIGTERM to their process groups, so
code servers and runs stop with them; SIGKILL after a deadline). Dagster's instance lives in
``DAGSTER_HOME`` (default ``./data/dagster``, which gets a copy of the project's ``dagster.yaml`` on the
first start), its web UI on 127.0.0.1 only. The lake sensor in the pipelines then launches runs as
the collector commits data.

With the embedded default (no ``HA_URL``/``HA_TOKEN``) the collector ends when the recording has been
replayed; Dagster keeps running so the runs it launched can be watched, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DAGSTER_HOME = "./data/dagster"
DEFAULT_PORT = 3000
HOST = "127.0.0.1"
COLLECTOR_STOP_S = 60.0
DAGSTER_STOP_S = 30.0
MINIMAL_INSTANCE = "storage:\n  sqlite:\n    base_dir:\n      env: DAGSTER_HOME\ntelemetry:\n  enabled: false\n"
WORKSPACE = "load_from:\n  - python_module:\n      module_name: ha_ingestor_pipelines.definitions\n"


class Child:
    """A supervised process in its own session (its pid is its process group id)."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], log: Path | None = None, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log = log
        output = open(log, "ab") if log is not None else None  # noqa: SIM115 - kept open for the child's life
        try:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stop(self, deadline_s: float, group: bool) -> int:
        """SIGTERM (to the whole process group when ``group``), wait, then SIGKILL."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM, group)
            try:
                self.process.wait(deadline_s)
            except subprocess.TimeoutExpired:
                print(f"{self.name} did not stop within {deadline_s:.0f} s: killing it", file=sys.stderr)
                self._signal(signal.SIGKILL, group)
                self.process.wait()
        if group:  # code servers and run workers the daemon started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.returncode

    def _signal(self, signum: int, group: bool) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)


def prepare_dagster_home(home: Path) -> Path:
    """``DAGSTER_HOME`` with a ``dagster.yaml``: the project's on the first start, the user's own afterwards."""
    home.mkdir(parents=True, exist_ok=True)
    instance = home / "dagster.yaml"
    if not instance.exists():
        source = next((p for p in (Path.cwd() / "dagster.yaml", PROJECT_ROOT / "dagster.yaml") if p.is_file()), None)
        if source is not None:
            shutil.copyfile(source, instance)
        else:
            instance.write_text(MINIMAL_INSTANCE)
    return instance


def workspace_file(home: Path) -> Path:
    """The project's ``workspace.yaml``; an equivalent one in ``DAGSTER_HOME`` for an installed package."""
    for candidate in (Path.cwd() / "workspace.yaml", PROJECT_ROOT / "workspace.yaml"):
        if candidate.is_file():
            return candidate
    generated = home / "workspace.yaml"
    generated.write_text(WORKSPACE)
    return generated


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def _executable(name: str, module: list[str]) -> list[str]:
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", *module]


def _wait_http(url: str, children: list[Child], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(child.returncode is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_platform(args: argparse.Namespace, collector_argv: list[str]) -> int:
    """Run the collector (``ha-ingestor <collector_argv>``; ``args`` are ``ha-ingestor run``'s) with Dagster's
    webserver and daemon until stopped."""
    token = Path(args.token_file).read_text().strip() if getattr(args, "token_file", None) else args.token
    own_home = bool(args.ha_url and token)
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    prepare_dagster_home(home)
    workspace = workspace_file(home)
    logs = home / "process_logs"  # not `logs`: Dagster's telemetry moves $DAGSTER_HOME/logs away
    logs.mkdir(exist_ok=True)
    port = free_port(int(os.environ.get("HA_INGESTOR_DAGSTER_PORT") or DEFAULT_PORT))
    url = f"http://{HOST}:{port}"

    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        HA_INGESTOR_LAKE=str(Path(args.lake).resolve()),
        HA_INGESTOR_WAREHOUSE=str(
            Path(
                os.environ.get("HA_INGESTOR_WAREHOUSE") or Path(args.lake).resolve().parent / "warehouse.duckdb"
            ).resolve()
        ),
    )
    if own_home:  # the statistics assets talk to the same Home Assistant
        env.update(HA_URL=args.ha_url, HA_TOKEN=token)

    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    dagster: list[Child] = []
    collector: Child | None = None
    code = 0
    try:
        # create or upgrade the instance's storage once, before two processes race to do it
        with open(logs / "instance-migrate.log", "wb") as output:
            migrated = subprocess.run(
                [*_executable("dagster", ["dagster"]), "instance", "migrate"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if migrated.returncode != 0:
            print(f"dagster instance migrate failed:\n{_tail(logs / 'instance-migrate.log')}", file=sys.stderr)
            return 1
        dagster.append(
            Child(
                "dagster-webserver",
                [
                    *_executable("dagster-webserver", ["dagster_webserver"]),
                    "-w",
                    str(workspace),
                    "-h",
                    HOST,
                    "-p",
                    str(port),
                ],
                env,
                logs / "webserver.log",
                cwd=workspace.parent,
            )
        )
        dagster.append(
            Child(
                "dagster-daemon",
                [*_executable("dagster-daemon", ["dagster._daemon"]), "run", "-w", str(workspace)],
                env,
                logs / "daemon.log",
                cwd=workspace.parent,
            )
        )
        collector = Child("collector", [sys.executable, "-m", "ha_ingestor", *collector_argv], env)
        print(f"Dagster (DAGSTER_HOME={home}) starting on {url}; logs in {logs}", flush=True)
        if _wait_http(f"{url}/server_info", dagster, 180):
            print(f"Dagster UI: {url}  (runs start on their own as the collector commits data)", flush=True)
        else:
            print(f"Dagster's webserver does not answer on {url} yet; see {logs}", file=sys.stderr)
        while not stop.wait(0.5):
            failed = next((child for child in dagster if child.returncode is not None), None)
            if failed is not None:
                print(f"{failed.name} exited with code {failed.returncode}:\n{_tail(failed.log)}", file=sys.stderr)
                code = 1
                break
            if collector is not None and collector.returncode is not None:
                if collector.returncode != 0 or own_home:
                    code = collector.returncode
                    break
                collector = None
                print(
                    f"\nThe recording has been collected. Dagster keeps running the pipelines at {url}; "
                    "Ctrl-C stops everything.",
                    flush=True,
                )
    finally:
        print("stopping ...", flush=True)
        if collector is not None:
            code = collector.stop(COLLECTOR_STOP_S, group=False) or code
        for child in reversed(dagster):
            child.stop(DAGSTER_STOP_S, group=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
