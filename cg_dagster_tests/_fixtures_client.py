"""Helpers of the API client tests (test_client*.py): a client for a sandbox or a ``ScriptedAPI``
(_fixtures_http.py), and the sandbox's log of responses requests."""

from cg_dagster.lib.client import CustomerGaugeClient
from cg_dagster.sandbox import SandboxServer

CLIENT_ID = "sandbox-client"
SECRET = "sandbox-secret"
RESPONSES_PATH = "/v7/rest/sync/responses"


def make_client(base_url, *, secret=SECRET, max_retries=5, timeout=5.0):
    """A client for ``base_url`` (API and auth) with ``timeout`` seconds (default 5) and fast retries (backoff_factor
    0.01)."""
    return CustomerGaugeClient(
        client_id=CLIENT_ID,
        client_secret=secret,
        api_base_url=base_url,
        auth_base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        backoff_factor=0.01,
    )


def response_requests(server: SandboxServer):
    """The sandbox's log entries of responses requests, in arrival order."""
    return [entry for entry in server.requests_log if entry.path == RESPONSES_PATH]
