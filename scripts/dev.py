"""`python3 run.py dev`: `dagster dev` on http://127.0.0.1:3000 with a persistent DAGSTER_HOME (set by run.py).

Without CUSTOMERGAUGE_CLIENT_ID in the environment it also starts the sandbox API on 127.0.0.1:8765
(CG_SANDBOX_PORT) and points the resource at it, on the demo's lake (./demo_lake, unless CG_LAKE_ROOT is set).
With CUSTOMERGAUGE_CLIENT_ID (and CUSTOMERGAUGE_CLIENT_SECRET, CUSTOMERGAUGE_REGION) set it runs against
that real account and starts no sandbox; the lake is CG_LAKE_ROOT (default ./lake). See README.
"""

import os
import subprocess
import sys
from pathlib import Path

SANDBOX_PORT = os.environ.get("CG_SANDBOX_PORT", "8765")
DEMO_LAKE = Path(__file__).resolve().parent.parent / "demo_lake"


def main() -> int:
    if os.environ.get("CUSTOMERGAUGE_CLIENT_ID"):
        print("CUSTOMERGAUGE_CLIENT_ID is set: using that CustomerGauge account, no sandbox", flush=True)
        return _dagster_dev(dict(os.environ))
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "cg_dagster.sandbox", "--port", SANDBOX_PORT], stdout=subprocess.PIPE, text=True
    )
    print(sandbox.stdout.readline().strip(), flush=True)
    base_url = f"http://127.0.0.1:{SANDBOX_PORT}"
    env = {
        **os.environ,
        "CUSTOMERGAUGE_CLIENT_ID": "sandbox-client",
        "CUSTOMERGAUGE_CLIENT_SECRET": "sandbox-secret",
        "CUSTOMERGAUGE_API_BASE_URL": base_url,
        "CUSTOMERGAUGE_AUTH_BASE_URL": base_url,
        "CG_LAKE_ROOT": os.environ.get("CG_LAKE_ROOT", str(DEMO_LAKE)),
    }
    try:
        return _dagster_dev(env)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)


def _dagster_dev(env: dict) -> int:
    try:
        return subprocess.run([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"], env=env).returncode
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
