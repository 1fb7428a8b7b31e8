"""`python3 run.py dev`: the sandbox API plus `dagster dev`, wired together, with a persistent DAGSTER_HOME.

To use a real CustomerGauge account instead, set CUSTOMERGAUGE_CLIENT_ID and CUSTOMERGAUGE_CLIENT_SECRET
(and CUSTOMERGAUGE_REGION) in the environment and run `dagster dev` yourself; see README.
"""

import os
import subprocess
import sys

SANDBOX_PORT = os.environ.get("CG_SANDBOX_PORT", "8765")


def main() -> int:
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
    }
    try:
        return subprocess.run([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"], env=env).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
