"""Helpers of the API client tests (test_client*.py): a client for the sandbox, and a tiny scripted server
for answers the sandbox never gives."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from cg_dagster.lib.client import CustomerGaugeClient
from cg_dagster.sandbox import SandboxServer

CLIENT_ID = "sandbox-client"
SECRET = "sandbox-secret"
RESPONSES_PATH = "/v7/rest/sync/responses"
TOKEN_OK = (200, {"access_token": "scripted-token", "expires_in": 3600})


def make_client(base_url, *, secret=SECRET, max_retries=5):
    """A client for ``base_url`` (API and auth) with a 5 s timeout and fast retries (backoff_factor 0.01)."""
    return CustomerGaugeClient(
        client_id=CLIENT_ID,
        client_secret=secret,
        api_base_url=base_url,
        auth_base_url=base_url,
        timeout=5.0,
        max_retries=max_retries,
        backoff_factor=0.01,
    )


def response_requests(server: SandboxServer):
    """The sandbox's log entries of responses requests, in arrival order."""
    return [entry for entry in server.requests_log if entry.path == RESPONSES_PATH]


class ScriptedAPI:
    """A tiny HTTP server: each token POST gets the next of ``token_answers``, each GET the next of
    ``answers`` ((status, body) or (status, body, headers); the last one repeats; a bytes body is sent as
    is, anything else as JSON). ``queries`` records each GET's query, ``token_posts`` counts the POSTs."""

    def __init__(self, answers, token_answers=(TOKEN_OK,)):
        self.answers = list(answers)
        self.token_answers = list(token_answers)
        self.queries = []
        self.token_posts = 0
        api = self

        def next_answer(answers):
            return answers.pop(0) if len(answers) > 1 else answers[0]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                api.token_posts += 1
                self._answer(*next_answer(api.token_answers))

            def do_GET(self):
                api.queries.append(parse_qsl(urlsplit(self.path).query))
                self._answer(*next_answer(api.answers))

            def _answer(self, status, body, headers=None):
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.httpd.shutdown()
        self.httpd.server_close()


def page_body(numbers, cursor):
    """A page body holding one record per number; ``cursor`` ... leaves out the cursor object."""
    body = {"data": [{"number_customergauge": n} for n in numbers]}
    if cursor is not ...:
        body["cursor"] = {"next": cursor}
    return body
