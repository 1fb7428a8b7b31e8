"""CLI: ``python -m cg_dagster.sandbox [--port 8765] ...`` serves the sandbox API until SIGINT/SIGTERM."""

import argparse
import ipaddress
import signal
import sys
import threading

from cg_dagster.sandbox.server import EMPTY_NEXT_MODES, FAIL_STATUSES, SandboxFaults, SandboxServer


def build_parser() -> argparse.ArgumentParser:
    """Argument parser; defaults match ``SandboxServer`` and ``SandboxFaults`` except --port (8765)."""
    parser = argparse.ArgumentParser(
        prog="python -m cg_dagster.sandbox",
        description="Local CustomerGauge-compatible v7 sync API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on; 0 picks a free one")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated records: same seed, same records")
    parser.add_argument("--records", type=int, default=2500, help="responses served at start")
    parser.add_argument(
        "--non-responses", type=int, default=None, help="non-responses served at start (None: a third of --records)"
    )
    parser.add_argument("--client-id", default="sandbox-client", help="client_id the token endpoint accepts")
    parser.add_argument("--client-secret", default="sandbox-secret", help="client_secret the token endpoint accepts")
    parser.add_argument("--token-ttl", type=int, default=3600, help="expires_in of tokens, seconds")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds slept before each answer")
    parser.add_argument("--fail-every", type=int, default=0, help="every k-th responses request answers 5xx")
    parser.add_argument("--fail-status", type=int, default=503, choices=FAIL_STATUSES)
    parser.add_argument("--rate-limit-every", type=int, default=0, help="every k-th responses request answers 429")
    parser.add_argument(
        "--retry-after",
        type=retry_after_seconds,
        default=1,
        help="Retry-After seconds on 429, or 'none' to omit the header",
    )
    parser.add_argument(
        "--retry-after-value",
        metavar="TEXT",
        default=None,
        help="Retry-After sent verbatim on 429 instead of --retry-after (e.g. 0.5, 1m0s, -1, an HTTP date)",
    )
    parser.add_argument(
        "--redirect-to",
        metavar="URL",
        default=None,
        help="answer every responses request 302 with this Location (a proxy, a moved host)",
    )
    parser.add_argument(
        "--repeat-page-after",
        metavar="N",
        type=int,
        default=0,
        help="after N pages, repeat page N's records under a growing cursor (broken server)",
    )
    parser.add_argument(
        "--omit-expires-in",
        action="store_true",
        help="token answers without expires_in (clients assume 3600 s and meet a 401)",
    )
    parser.add_argument(
        "--drop-body-every",
        type=int,
        default=0,
        help="every k-th responses request: full Content-Length, half the body, connection closed",
    )
    parser.add_argument(
        "--truncate-json-every",
        type=int,
        default=0,
        help="every k-th responses request: a 200 whose JSON body is cut short",
    )
    parser.add_argument(
        "--empty-next",
        default="same",
        choices=EMPTY_NEXT_MODES,
        help="cursor.next of the empty last page (same: the cursor sent)",
    )
    parser.add_argument(
        "--legacy-drivers",
        action="store_true",
        help="serve drivers in the older `drivers` label shape instead of selected_drivers",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def retry_after_seconds(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def faults_from_args(args: argparse.Namespace) -> SandboxFaults:
    """The SandboxFaults the parsed fault flags ask for (ValueError from SandboxFaults for bad values)."""
    return SandboxFaults(
        fail_every=args.fail_every,
        fail_status=args.fail_status,
        rate_limit_every=args.rate_limit_every,
        retry_after=args.retry_after,
        token_ttl=args.token_ttl,
        latency=args.latency,
        empty_next=args.empty_next,
        omit_expires_in=args.omit_expires_in,
        drop_body_every=args.drop_body_every,
        truncate_json_every=args.truncate_json_every,
        legacy_drivers=args.legacy_drivers,
        retry_after_value=args.retry_after_value,
        redirect_to=args.redirect_to,
        repeat_page_after=args.repeat_page_after,
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; return the exit code (0 on a clean stop)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not _is_loopback(args.host) or ":" in args.host:
        parser.error(
            f"--host {args.host} is not an IPv4 loopback address; the sandbox only serves "
            "this machine: use 127.0.0.1 or localhost"
        )
    try:
        faults = faults_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    server = SandboxServer(
        seed=args.seed,
        records=args.records,
        non_responses=args.non_responses,
        client_id=args.client_id,
        client_secret=args.client_secret,
        host=args.host,
        port=args.port,
        faults=faults,
        verbose=args.verbose,
    )
    try:
        server.start()
    except OSError as error:
        print(f"sandbox cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"sandbox listening on {server.base_url}", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
