"""``helpdesk-triage emulator``: serve the built-in Zammad-compatible demo helpdesk.

Listens on loopback by default; it has no real authentication beyond the demo
token and its ``/_emulator`` admin routes have none, so never expose it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from connector.emulator import DEMO_TOKEN
from connector.emulator.timings import DEFAULT_TRIAGED_TAG

TOKEN_ENV = "TRIAGE_EMULATOR_TOKEN"
WEBHOOK_SECRET_ENV = "TRIAGE_EMULATOR_WEBHOOK_SECRET"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--token",
        default=None,
        help=f"API token of the triage user (default: ${TOKEN_ENV}, else {DEMO_TOKEN!r})",
    )
    seed = parser.add_mutually_exclusive_group()
    seed.add_argument(
        "--seed-file", type=Path, default=None, help="tickets file shaped like the bundled sample"
    )
    seed.add_argument(
        "--empty", action="store_true", help="start with groups and users only, no tickets"
    )
    parser.add_argument("--webhook-url", default=None, help="POST a webhook here per new ticket")
    parser.add_argument(
        "--webhook-secret",
        default=None,
        help=f"sign webhooks with this token (default: ${WEBHOOK_SECRET_ENV})",
    )
    parser.add_argument(
        "--webhook-retry-delays",
        default="10,20,30,40",
        help="seconds between webhook retries, comma-separated (Zammad: 10,20,30,40)",
    )
    parser.add_argument(
        "--triaged-tag",
        default=DEFAULT_TRIAGED_TAG,
        help="marker tag whose first arrival per ticket /_emulator/timings records",
    )
    parser.add_argument(
        "--groups-need-admin",
        action="store_true",
        help="GET /groups only for admin.group, as in Zammad before 6.5",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")


def main(args: argparse.Namespace) -> int:
    from connector.emulator.server import EmulatorServer

    try:
        delays = tuple(float(part) for part in args.webhook_retry_delays.split(",") if part.strip())
    except ValueError:
        print("--webhook-retry-delays: expected numbers such as 10,20,30,40", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        print(
            f"warning: listening on {args.host}, not loopback; the emulator is for demos and "
            "tests and has no real access control",
            file=sys.stderr,
        )
    token = args.token or os.environ.get(TOKEN_ENV) or DEMO_TOKEN
    secret = args.webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV) or None
    seed: bool | Path = False if args.empty else (args.seed_file or True)
    try:
        server = EmulatorServer(
            args.host,
            args.port,
            seed=seed,
            token=token,
            webhook_url=args.webhook_url,
            webhook_secret=secret,
            webhook_retry_delays=delays,
            triaged_tag=args.triaged_tag,
            log_level=args.log_level,
            groups_need_admin=args.groups_need_admin,
        )
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    tickets = len(server.store.tickets)
    print(f"Zammad-compatible emulator: {server.api_url} ({tickets} tickets)", flush=True)
    shown = token if token == DEMO_TOKEN else "<configured token>"
    print(f"  token: Authorization: Token token={shown}", flush=True)
    print(f"  admin: {server.url}/_emulator/stats", flush=True)
    server.serve_forever()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
