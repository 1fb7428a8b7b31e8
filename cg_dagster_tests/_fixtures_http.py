"""The tests' one fake HTTP server, ``ScriptedAPI``, for answers the sandbox never gives.

Every other HTTP test talks to the sandbox (cg_dagster/sandbox), the stand-in API. The sandbox serves valid
vendor pages of its own records and the faults ``SandboxFaults`` switches on; it cannot serve what no
CustomerGauge server should send and what the client must survive all the same: a cursor that does not
advance or goes back, ids and cursors beyond int64, lone surrogates and other JSON the sandbox would not
write, a page that holds a response twice, a token endpoint that redirects, answers 5xx, or echoes the
secret, a token the HTTP header layer refuses, a body that trickles in byte by byte. ``ScriptedAPI`` sends
exactly the bytes a test scripts, so those tests use it.
"""

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

EMPTY_LAST_PAGE = b'{"data":[],"cursor":{"next":null}}'


def token_reply(token: str = "scripted-token") -> tuple:
    """A token endpoint's 200 answer handing out ``token`` for an hour (shape: api-notes.md)."""
    return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}


TOKEN_OK = (200, {"access_token": "scripted-token", "expires_in": 3600})


@dataclass(frozen=True)
class Trickle:
    """A body sent one byte every ``seconds`` after headers that announce its whole length."""

    data: bytes
    seconds: float


class ScriptedAPI:
    """A tiny HTTP server on a free loopback port (``base_url``); use it as a context manager.

    Each token POST gets the next of ``token_answers``; each GET the next of ``answers``, or
    ``answers(query)`` when ``answers`` is a function of the GET's query pairs (see ``paged``). In a list
    the last answer repeats. An answer is ``(status, body)`` or ``(status, body, headers)``: a bytes body is
    sent as is, a ``Trickle`` byte by byte, anything else as JSON; Content-Type is application/json.
    Recorded: ``queries`` (each GET's query pairs, in order), ``token_posts`` (count) and ``token_bodies``
    (each POST's body bytes).
    """

    def __init__(self, answers, token_answers=(TOKEN_OK,)):
        self.answers = answers if callable(answers) else list(answers)
        self.token_answers = list(token_answers)
        self.queries = []
        self.token_posts = 0
        self.token_bodies = []
        api = self

        def next_answer(answers):
            return answers.pop(0) if len(answers) > 1 else answers[0]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                api.token_bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                api.token_posts += 1
                self._answer(*next_answer(api.token_answers))

            def do_GET(self):
                query = parse_qsl(urlsplit(self.path).query)
                api.queries.append(query)
                self._answer(*(api.answers(query) if callable(api.answers) else next_answer(api.answers)))

            def _answer(self, status, body, headers=None):
                raw = body.data if isinstance(body, Trickle) else body
                raw = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if not isinstance(body, Trickle):
                    self.wfile.write(raw)
                    return
                for i in range(len(raw)):
                    try:
                        self.wfile.write(raw[i : i + 1])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(body.seconds)

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


def paged(pages: dict):
    """``ScriptedAPI`` answers by cursor: a GET gets ``pages[cursor sent]`` (key None: no cursor sent; values
    raw JSON body bytes), and an empty last page for any other cursor."""
    return lambda query: (200, pages.get(dict(query).get("cursor"), EMPTY_LAST_PAGE))


def page_body(numbers, cursor):
    """A page body holding one record per number; ``cursor`` ... leaves out the cursor object."""
    body = {"data": [{"number_customergauge": n} for n in numbers]}
    if cursor is not ...:
        body["cursor"] = {"next": cursor}
    return body
