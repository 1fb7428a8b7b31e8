#!/usr/bin/env python3
"""Project tasks with nothing but Python 3.11 or 3.12: creates .venv, installs the project, then runs a task.

    python3 run.py demo        full sync from the sandbox into ./demo_lake, then an incremental sync
    python3 run.py test [ARGS] the test suite (pytest ARGS); --fast: without the slow tests (real processes,
                               Dagster runs of the asset group), a loop of about a minute
    python3 run.py lint        ruff check and ruff format --check (pyproject.toml [tool.ruff]), as CI runs them
    python3 run.py dev         the sandbox plus `dagster dev` (UI on http://127.0.0.1:3000)
    python3 run.py sandbox     the sandbox API alone (python -m cg_dagster.sandbox)
    python3 run.py bench       speed and memory against a pure fetch and an Arrow floor (scripts/benchmark.py;
                               --quick, --json PATH)
    python3 run.py init        only prepare .venv and DAGSTER_HOME (for the dagster CLI, see README)

The environment is reinstalled when pyproject.toml changes, and rebuilt when it was made by another Python
than the one running run.py. DAGSTER_HOME is ./.dagster_home unless set (the demo's always; persistent, so
cursors and run history survive restarts), with ./dagster.yaml linked into it. SIGTERM, SIGHUP (the
terminal closed) and Ctrl-C stop the task and every process it started.
"""

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".cg_dagster-installed"
DAGSTER_HOME = ROOT / ".dagster_home"
STOP_GRACE_SECONDS = 30  # above scripts/dev.py's own STOP_SECONDS, so it can stop dagster dev cleanly
PYTHONS = ("3.11", "3.12")  # pyproject.toml's requires-python (the suite passes on both)


def venv_python_version(venv_dir: Path) -> str | None:
    """The "major.minor" Python version a virtual environment was made with (its pyvenv.cfg ``version`` or
    ``version_info``), or None when there is no readable pyvenv.cfg."""
    try:
        lines = (venv_dir / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return None
    settings = dict(line.split("=", 1) for line in lines if "=" in line)
    settings = {key.strip(): value.strip() for key, value in settings.items()}
    version = settings.get("version") or settings.get("version_info") or ""
    return ".".join(version.split(".")[:2]) or None


def ensure_venv() -> None:
    """Create .venv and install the project with its test extra, unless pyproject.toml is unchanged and the
    venv was made by this Python (major.minor); a venv made by another Python is deleted and made again.

    Raises:
        SystemExit: this Python is not one of PYTHONS (the message names the versions that work).
    """
    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    if this not in PYTHONS:
        raise SystemExit(
            f"run.py: Python {this} is not supported; run it with Python {' or '.join(PYTHONS)} "
            f"(e.g. python{PYTHONS[-1]} run.py ...)"
        )
    made_by = venv_python_version(VENV)
    if made_by not in (None, this):
        print(f"rebuilding {VENV}: it was made by Python {made_by}, this is Python {this}", flush=True)
        shutil.rmtree(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV} with Python {this}", flush=True)
        venv.create(VENV, with_pip=True, clear=True)
    print("installing cg_dagster and its dependencies into .venv (first run only)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True, cwd=ROOT)
    STAMP.write_text(digest)


def ensure_dagster_home() -> dict[str, str]:
    """Create DAGSTER_HOME (./.dagster_home unless the environment sets another) with ./dagster.yaml linked
    in (an existing dagster.yaml there is left alone) and its storage created once; return the environment
    with DAGSTER_HOME set."""
    home = Path(os.environ.get("DAGSTER_HOME") or DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists() or (link.is_symlink() and link.resolve() != ROOT / "dagster.yaml"):
        link.unlink(missing_ok=True)
        link.symlink_to(ROOT / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    stamp = home / ".storage-initialized"
    if not stamp.exists():  # two first runs creating a fresh SQLite schema at once race ("table runs already exists")
        create = (
            "import dagster; instance = dagster.DagsterInstance.get(); instance.get_runs(limit=1); instance.dispose()"
        )
        subprocess.run([str(PYTHON), "-c", create], env=env, cwd=ROOT, check=True)
        stamp.touch()
    return env


def session_members(session_id: int) -> list[int]:
    """Pids of the live processes in session ``session_id`` (Linux /proc), whatever their process group."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command name)"
            if int(fields[3]) == session_id and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def run_task(command: list[str], env: dict[str, str]) -> int:
    """Run the task in its own session. SIGTERM, SIGHUP and Ctrl-C are passed on to its process group; what
    is still running in its session when it ends, or STOP_GRACE_SECONDS after the signal, is killed (also
    processes that moved to a group of their own, like the ones scripts/dev.py starts)."""
    child = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    stopping: list[float] = []

    def forward(signum, _frame):
        stopping.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, forward)
    while True:
        try:
            code = child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if stopping and time.monotonic() - stopping[0] > STOP_GRACE_SECONDS:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
    for pid in session_members(child.pid):  # stragglers (e.g. dagster's code servers)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if stopping else signal.SIGTERM)
    if stopping:
        print("run.py: stopped", flush=True)
    return code


def main(argv: list[str]) -> int:
    tasks = {"demo", "test", "dev", "sandbox", "bench", "init", "lint"}
    if not argv or argv[0] not in tasks:
        print(__doc__)
        return 2
    task, args = argv[0], argv[1:]
    ensure_venv()
    if task == "lint":  # both run, whatever the first finds
        checks = [["check", "."], ["format", "--check", "."]]
        return max(subprocess.run([str(PYTHON), "-m", "ruff", *check], cwd=ROOT).returncode for check in checks)
    exported = os.environ.get("DAGSTER_HOME")
    if task == "demo" and exported and Path(exported).resolve() != DAGSTER_HOME.resolve():
        print(f"run.py demo: runs recorded in {DAGSTER_HOME}, not in the exported DAGSTER_HOME ({exported})")
        del os.environ["DAGSTER_HOME"]  # the sandbox's runs stay out of that instance
    env = ensure_dagster_home()
    if task == "init":
        print(f"DAGSTER_HOME {env['DAGSTER_HOME']} is ready (dagster.yaml linked)")
        return 0
    if task == "test" and "--fast" in args:
        args = [arg for arg in args if arg != "--fast"] + ["-m", "not slow"]
    commands = {
        "demo": [str(PYTHON), "scripts/demo.py", *args],
        "test": [str(PYTHON), "-m", "pytest", *args],
        "dev": [str(PYTHON), "scripts/dev.py", *args],
        "sandbox": [str(PYTHON), "-m", "cg_dagster.sandbox", *args],
        "bench": [str(PYTHON), "scripts/benchmark.py", *args],
    }
    return run_task(commands[task], env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
