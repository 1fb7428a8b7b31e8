"""`python3 run.py dev`: `dagster dev` on http://127.0.0.1:3000 with a persistent DAGSTER_HOME (set by run.py).

Without CUSTOMERGAUGE_CLIENT_ID in the environment it also starts the sandbox API on 127.0.0.1:8765
(CG_SANDBOX_PORT) and points the resource at it, on the demo's lake (./demo_lake, unless CG_LAKE_ROOT is set).
That sandbox serves what the demo's served when it ended (``advance_sandbox``: the demo's appended responses
and answered non-responses), so the demo's lake and it agree. With CUSTOMERGAUGE_CLIENT_ID (and
CUSTOMERGAUGE_CLIENT_SECRET, CUSTOMERGAUGE_REGION) set it runs against that real account and starts no
sandbox; the lake is CG_LAKE_ROOT (default ./lake). See README.

The UI's port is CG_DAGSTER_PORT (default 3000). A port already in use stops this script before it starts
anything (exit 2, naming the port and its setting). Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop
everything it started: `dagster dev` and its webserver, daemon and code server (one process group, sent
SIGINT as Ctrl-C would, SIGKILL after STOP_SECONDS), and the sandbox.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from demo import advance_sandbox  # scripts/demo.py, beside this script

from cg_dagster.lib.client import CustomerGaugeConfigError
from cg_dagster.sandbox import project_env
from cg_dagster.settings import CLIENT_ID, DAGSTER_PORT, LAKE_ROOT, SANDBOX_PORT, Setting

DEMO_LAKE = Path(__file__).resolve().parent.parent / "demo_lake"
STOP_SECONDS = 20  # dagster dev stops its services in 5-15 s


class Stop(Exception):
    """Raised in the main thread by SIGINT (Ctrl-C), SIGTERM or SIGHUP, so each stops everything."""


def port_in_use(port: int) -> bool:
    """Whether a server could not listen on 127.0.0.1:``port`` (SO_REUSEADDR, as servers bind: a port
    in TIME_WAIT after a previous run counts as free)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def read_ports(settings: list[Setting]) -> tuple[dict[str, str], list[str]]:
    """The port of each setting (name -> port as text), and errors for the ports that are malformed or in
    use, one per port."""
    ports, errors = {}, []
    for setting in settings:
        try:
            port = setting.integer(minimum=1, maximum=65535)
        except CustomerGaugeConfigError as error:
            errors.append(str(error))
            continue
        if port_in_use(port):
            errors.append(
                f"port {port} on 127.0.0.1 is already in use (another `run.py dev`?): stop that program or "
                f"set {setting.name} to a free port"
            )
        ports[setting.name] = str(port)
    return ports, errors


def main() -> int:
    real_account = bool(CLIENT_ID.text())
    ports, errors = read_ports([DAGSTER_PORT] if real_account else [DAGSTER_PORT, SANDBOX_PORT])
    for error in errors:
        print(f"run.py dev: {error}; nothing was started", file=sys.stderr, flush=True)
    if errors:
        return 2

    def stop(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    # SIGINT too: a shell that starts a program in the background without job control hands it SIGINT ignored
    # (Python then sets no Ctrl-C handler), and the processes started below would inherit that.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    started: list[subprocess.Popen] = []
    try:
        env = dict(os.environ)
        if real_account:
            print("CUSTOMERGAUGE_CLIENT_ID is set: using that CustomerGauge account, no sandbox", flush=True)
        else:
            env = _with_sandbox(env, ports[SANDBOX_PORT.name], started)
        command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", ports[DAGSTER_PORT.name]]
        started.append(subprocess.Popen(command, env=env, process_group=0))
        return started[-1].wait()
    except Stop as reason:
        print(f"run.py dev: stopping ({reason})", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for process in reversed(started):
            _stop_group(process)


def _with_sandbox(env: dict, port: str, started: list) -> dict:
    """Start the sandbox API on ``port`` (appended to ``started``); the environment pointed at it."""
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "cg_dagster.sandbox", "--port", port],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    started.append(sandbox)
    print(sandbox.stdout.readline().strip(), flush=True)
    appended, converted = advance_sandbox(f"http://127.0.0.1:{port}")  # the demo's sandbox as it ended
    print(f"sandbox: {appended} responses appended, {len(converted)} non-responses answered (the demo's)", flush=True)
    return {**env, **project_env(f"http://127.0.0.1:{port}"), LAKE_ROOT.name: dev_lake_root(env)}


def dev_lake_root(env: dict) -> str:
    """The lake of `run.py dev`: ``CG_LAKE_ROOT`` when set (not blank), else the demo's (``demo_lake``), so
    the UI continues from what `run.py demo` loaded (not LAKE_ROOT's own default, ``lake``)."""
    return env.get(LAKE_ROOT.name, "").strip() or str(DEMO_LAKE)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGINT to the process's group (what Ctrl-C sends: dagster dev then stops its webserver, daemon and
    code server), SIGKILL to whatever of the group is left after STOP_SECONDS or once its leader exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


if __name__ == "__main__":
    sys.exit(main())
