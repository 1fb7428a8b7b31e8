"""run.py and scripts/dev.py with real processes: `run.py dev` stops everything it started on SIGHUP, SIGTERM or
Ctrl-C; a busy port stops it before it starts anything; a .venv made by another Python is recognised."""

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import psutil
import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(PROJECT), str(PROJECT / "scripts")]
import dev  # noqa: E402 (scripts/ on sys.path first)

import run  # noqa: E402
from cg_dagster_tests._fixtures_dev import dev_env, free_port, wait_for_ui  # noqa: E402


def run_dev(env: dict) -> subprocess.CompletedProcess:
    """`run.py dev` (scripts/dev.py) run to its end with ``env``, output captured: for the runs it refuses."""
    command = [sys.executable, "scripts/dev.py"]
    return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60, check=False)


RUN_TASK = "import os, sys, run; sys.exit(run.run_task(sys.argv[1:], dict(os.environ)))"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def started_tree(root: subprocess.Popen) -> dict[int, str]:
    """{pid: command line} of every process under ``root``, once the code server has started."""
    deadline = time.monotonic() + 120
    while True:
        tree = {}
        for child in psutil.Process(root.pid).children(recursive=True):
            try:
                tree[child.pid] = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
        if any("grpc" in line for line in tree.values()) or time.monotonic() > deadline:
            return tree
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "entry, signum, sigint_ignored",
    [
        ("run.py", signal.SIGHUP, False),
        ("run.py", signal.SIGTERM, False),
        ("dev.py", signal.SIGHUP, False),
        ("dev.py", signal.SIGINT, False),
        # `python3 run.py dev &` from a script: the shell starts it with SIGINT ignored; `kill -INT` must still
        # stop it (it was ignored by scripts/dev.py and the processes it started: killed after the grace time)
        ("run.py", signal.SIGINT, True),
    ],
)
def test_dev_stops_every_process_it_started(tmp_path, entry, signum, sigint_ignored):
    ui_port, sandbox_port = free_port(), free_port()
    dev_py = [sys.executable, "scripts/dev.py"]
    command = [sys.executable, "-c", RUN_TASK, *dev_py] if entry == "run.py" else dev_py
    output = tmp_path / "stdout.txt"  # a file, not a pipe: nothing can block on a full pipe
    process = subprocess.Popen(
        command,
        cwd=PROJECT,
        env=dev_env(tmp_path, ui_port, sandbox_port),
        start_new_session=True,
        stdout=output.open("w"),
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )
    try:
        wait_for_ui(ui_port, process)
        tree = started_tree(process)
        lines = list(tree.values())
        for part in ("cg_dagster.sandbox", "dagster dev", "dagster_webserver", "dagster._daemon", "grpc"):
            assert any(part in line for line in lines), f"{part} not started: {lines}"
        os.kill(process.pid, signum)  # the process alone, as a closed terminal or `kill` would
        process.wait(timeout=90)
        stopped = f"run.py dev: stopping ({signal.Signals(signum).name})"
        assert stopped in output.read_text()  # it stopped itself, not killed by run.py after its grace time
        deadline = time.monotonic() + 10  # processes killed last may take a moment to go
        while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [tree[pid] for pid in tree if alive(pid)] == []
        assert run.session_members(process.pid) == []
        assert not dev.port_in_use(ui_port) and not dev.port_in_use(sandbox_port)
    finally:
        for pid in run.session_members(process.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("busy", ["CG_DAGSTER_PORT", "CG_SANDBOX_PORT"])
def test_a_busy_port_is_an_error_before_anything_starts(tmp_path, busy):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        ports = {"CG_DAGSTER_PORT": free_port(), "CG_SANDBOX_PORT": free_port()}
        ports[busy] = blocker.getsockname()[1]
        env = dev_env(tmp_path, ports["CG_DAGSTER_PORT"], ports["CG_SANDBOX_PORT"])
        done = run_dev(env)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"run.py dev: port {ports[busy]} on 127.0.0.1 is already in use (another `run.py dev`?): stop that "
        f"program or set {busy} to a free port; nothing was started"
    )
    assert done.stdout == ""  # the sandbox prints its address first thing: it was not started


@pytest.mark.slow
def test_a_malformed_port_names_its_setting(tmp_path):
    env = dev_env(tmp_path, free_port(), free_port()) | {"CG_DAGSTER_PORT": "30o0"}
    done = run_dev(env)
    assert done.returncode == 2
    assert "CG_DAGSTER_PORT='30o0' is not a TCP port: set a number from 1 to 65535" in done.stderr


@pytest.mark.parametrize(
    "cfg, version",
    [
        ("home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.7\n", "3.11"),
        ("home = /x\nversion_info = 3.12.1.final.0\n", "3.12"),  # virtualenv's key
        ("home = /x\n", None),
    ],
)
def test_venv_python_version_reads_pyvenv_cfg(tmp_path, cfg, version):
    (tmp_path / "pyvenv.cfg").write_text(cfg)
    assert run.venv_python_version(tmp_path) == version


def test_venv_python_version_of_no_venv_is_none(tmp_path):
    assert run.venv_python_version(tmp_path / "missing") is None


def test_the_pythons_run_py_accepts_are_the_ones_pyproject_states():
    requires = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={run.PYTHONS[0]},<3.{int(run.PYTHONS[-1].split('.')[1]) + 1}"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in run.PYTHONS


@pytest.mark.parametrize(
    "env, lake",
    [
        ({}, str(dev.DEMO_LAKE)),
        ({"CG_LAKE_ROOT": "  "}, str(dev.DEMO_LAKE)),
        ({"CG_LAKE_ROOT": "/data/cg"}, "/data/cg"),
    ],
)
def test_run_py_dev_uses_the_demo_lake_unless_cg_lake_root_is_set(env, lake):
    assert dev.dev_lake_root(env) == lake
