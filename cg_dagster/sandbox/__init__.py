"""Local CustomerGauge-compatible HTTP API (v7 sync responses and non-responses + OAuth2 token).

Used by the demo, ``run.py dev``, the tests and the benchmark; ``project_env`` is the environment that
points the project at a sandbox.

Run it with ``python -m cg_dagster.sandbox``; from Python use ``SandboxServer`` (a context manager).
"""

from cg_dagster.sandbox.data import generate_records
from cg_dagster.sandbox.server import RequestLogEntry, SandboxFaults, SandboxServer, project_env

__all__ = ["RequestLogEntry", "SandboxFaults", "SandboxServer", "generate_records", "project_env"]
