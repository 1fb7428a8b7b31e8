"""Helpers of the tests that start `run.py dev` and other real processes: free ports, a dev environment of its
own, waiting for the UI."""

import importlib.util
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dev_env(tmp_path: Path, ui_port: int, sandbox_port: int) -> dict:
    """The environment of a `run.py dev` on its own DAGSTER_HOME, lake and ports under ``tmp_path``."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(PROJECT / "dagster.yaml")
    env = {key: value for key, value in os.environ.items() if not key.startswith("CUSTOMERGAUGE_")}
    return env | {
        "DAGSTER_HOME": str(home),
        "CG_LAKE_ROOT": str(tmp_path / "lake"),
        "CG_DAGSTER_PORT": str(ui_port),
        "CG_SANDBOX_PORT": str(sandbox_port),
    }


def wait_for_ui(port: int, process: subprocess.Popen) -> None:
    """Return once the UI on ``port`` answers /server_info; fail if ``process`` exits or 180 s pass."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dev exited early with {process.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the UI did not answer on port {port} within 180 s")


def load_benchmark():
    """scripts/benchmark.py as a module (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("cg_benchmark", PROJECT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
