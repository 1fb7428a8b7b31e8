#!/usr/bin/env python3
"""Project tasks with nothing but Python 3.11: creates .venv, installs the project, then runs a task.

    python3 run.py demo        full sync from the sandbox into ./demo_lake, then an incremental sync
    python3 run.py test [ARGS] the test suite (pytest ARGS)
    python3 run.py dev         the sandbox plus `dagster dev` (UI on http://127.0.0.1:3000)
    python3 run.py sandbox     the sandbox API alone (python -m cg_dagster.sandbox)
    python3 run.py bench       throughput and memory figures (scripts/benchmark.py)

The environment is reinstalled when pyproject.toml changes. DAGSTER_HOME is ./.dagster_home (persistent,
so cursors and run history survive restarts), with ./dagster.yaml linked into it.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".cg_dagster-installed"
DAGSTER_HOME = ROOT / ".dagster_home"


def ensure_venv() -> None:
    """Create .venv and install the project with its test extra, unless pyproject.toml is unchanged."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    print("installing cg_dagster and its dependencies into .venv (first run only)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True, cwd=ROOT)
    STAMP.write_text(digest)


def ensure_dagster_home() -> dict[str, str]:
    """Create ./.dagster_home with dagster.yaml linked in; return the environment with DAGSTER_HOME set."""
    DAGSTER_HOME.mkdir(exist_ok=True)
    link = DAGSTER_HOME / "dagster.yaml"
    if not link.is_symlink():
        link.unlink(missing_ok=True)
        link.symlink_to(ROOT / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(DAGSTER_HOME))}


def main(argv: list[str]) -> int:
    tasks = {"demo", "test", "dev", "sandbox", "bench"}
    if not argv or argv[0] not in tasks:
        print(__doc__)
        return 2
    task, args = argv[0], argv[1:]
    ensure_venv()
    env = ensure_dagster_home()
    commands = {
        "demo": [str(PYTHON), "scripts/demo.py", *args],
        "test": [str(PYTHON), "-m", "pytest", *args],
        "dev": [str(PYTHON), "scripts/dev.py", *args],
        "sandbox": [str(PYTHON), "-m", "cg_dagster.sandbox", *args],
        "bench": [str(PYTHON), "scripts/benchmark.py", *args],
    }
    return subprocess.run(commands[task], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
