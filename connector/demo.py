"""``helpdesk-triage demo``: the whole pipeline against the built-in demo helpdesk.

Starts the Zammad-compatible emulator on loopback, seeded with sample tickets
in German and English, and the triage service against it with the bundled
model. The seeded tickets arrive through the start-up sweep (as after a
restart); a few more are then created through the API and arrive by signed
webhook (as in production). When every ticket is triaged it prints what was
done to each, a summary, and where the metrics are.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from importlib import resources
from typing import Any, TextIO

import yaml

DEMO_TEMPLATES = {
    "Billing and Payments": (
        "Hello,\n\nthank you for contacting us about ticket {number}. Our billing team is "
        "checking the invoice and payment details now and will get back to you shortly."
    ),
    "Technical Support": (
        "Hello,\n\nthanks for your report ({number}). Could you send us the exact error "
        "message and the time it happened? We are looking into it."
    ),
    "IT Support": (
        "Hello,\n\nwe received your request ({number}). A colleague from IT will contact you; "
        "please keep the device connected to the network."
    ),
    "Returns and Exchanges": (
        "Hello,\n\nwe are sorry the product did not work out. We have noted your return "
        "request ({number}) and will send you the return label."
    ),
    "Service Outages and Maintenance": (
        "Hello,\n\nthank you for letting us know. We are aware of a disruption and are "
        "working on it; we will update ticket {number} as soon as service is restored."
    ),
}

NEW_TICKETS = [
    (
        "Rechnung doppelt abgebucht",
        "Guten Tag, Sie haben meine Rechnung vom Oktober zweimal "
        "abgebucht. Bitte erstatten Sie den doppelten Betrag umgehend zurück.",
    ),
    (
        "VPN connection drops every few minutes",
        "Since this morning the VPN client disconnects "
        "every five minutes and I cannot reach the file server. Please help, I have a deadline.",
    ),
    (
        "Return of a damaged monitor",
        "The monitor I received last week has a cracked screen. "
        "I would like to return it and get a replacement.",
    ),
    (
        "Ausfall des Kundenportals",
        "Das Kundenportal ist seit einer Stunde nicht erreichbar, "
        "alle unsere Mitarbeiter sind betroffen.",
    ),
    ("Thank you!", "Just wanted to say your support team solved my issue quickly. Great job!"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the demo helpdesk and the service running after the report (Ctrl-C stops)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for every ticket"
    )


def main(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.emulator import EmulatorServer
    from connector.errors import TriageError
    from connector.logs import configure_logging
    from connector.service import Service

    out = sys.stdout
    webhook_secret = secrets.token_hex(16)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    service_port = sock.getsockname()[1]
    sock.close()

    emulator = EmulatorServer(
        webhook_url=f"http://127.0.0.1:{service_port}/webhooks/zammad",
        webhook_secret=webhook_secret,
    )
    emulator.start()
    overrides: dict[str, Any] = {
        "helpdesk": "zammad",
        "zammad": {
            "url": emulator.url,
            "token": emulator.token,
            "webhook_secret": webhook_secret,
        },
        "server": {"host": "127.0.0.1", "port": service_port},
        "ingest": {"poll_interval_seconds": 2.0, "sweep_interval_seconds": 30.0},
        "policy": {
            "intake_queues": ["Users"],
            "default_priority": "2 normal",
            "queues": demo_queues(),
        },
        "drafts": {"templates": DEMO_TEMPLATES},
        "logging": {"level": "WARNING", "format": "text"},
    }
    if args.model:
        overrides["model"] = {"path": args.model}
    records: dict[int, tuple[Any, str]] = {}
    done = threading.Condition()

    def on_record(record: Any, item: Any) -> None:
        with done:
            if record.outcome not in ("already_triaged", "retry"):
                records[record.ticket_id] = (record, item.source)
            done.notify_all()

    service = None
    try:
        settings = load_settings(**overrides)
        configure_logging(settings.logging)
        print("helpdesk-triage demo", file=out)
        print(f"  demo helpdesk (Zammad API): {emulator.url}/api/v1", file=out)
        started = time.monotonic()
        service = Service(settings, on_record=on_record)
        print(f"  model {service.classifier.version} loaded", file=out)
        service.start_server_thread()
        service.check()
        service.start_background()
        print(f"  triage service: {service.url} (metrics at {service.url}/metrics)", file=out)
        waiting = len(emulator.ticket_ids())
        print(f"  {waiting} sample tickets waiting; the start-up sweep finds them", file=out)
        for subject, body in NEW_TICKETS:
            emulator.create_customer_ticket(subject, body)
        print(f"  {len(NEW_TICKETS)} new tickets created; they arrive by signed webhook", file=out)
        expected = set(emulator.ticket_ids())
        deadline = time.monotonic() + args.timeout
        with done:
            while not expected <= set(records) and time.monotonic() < deadline:
                done.wait(0.5)
        elapsed = time.monotonic() - started
        report(out, emulator, records, expected, elapsed)
        missing = expected - set(records)
        if args.keep_running and not missing:
            print(
                f"\nStill running: {service.url}/metrics and {emulator.url}/api/v1 "
                "(Ctrl-C to stop)",
                file=out,
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 1 if missing else 0
    except TriageError as error:
        print(f"helpdesk-triage demo: {error}", file=sys.stderr)
        return 2
    finally:
        if service is not None:
            service.stop()
        emulator.stop()


def report(
    out: TextIO,
    emulator: Any,
    records: dict[int, tuple[Any, str]],
    expected: set[int],
    elapsed: float,
) -> None:
    print("", file=out)
    header = f"{'#':>4}  {'via':<7} {'subject':<38} {'queue':<34} {'priority':<13} "
    header += f"{'sentiment':<15} outcome"
    print(header, file=out)
    print("-" * len(header), file=out)
    outcomes: Counter[str] = Counter()
    for ticket_id in sorted(expected):
        subject = _cut(emulator.ticket_subject(ticket_id), 38)
        if ticket_id not in records:
            print(f"{ticket_id:>4}  {'-':<7} {subject:<38} (not triaged in time)", file=out)
            outcomes["not triaged"] += 1
            continue
        record, source = records[ticket_id]
        heads = {d.head: d for d in record.decisions}
        outcomes[record.outcome] += 1
        cells = [
            _head_cell(heads.get(h), width)
            for h, width in (("queue", 34), ("priority", 13), ("sentiment", 15))
        ]
        changed = ", ".join(record.changed) if record.changed else "-"
        print(
            f"{ticket_id:>4}  {source:<7} {subject:<38} {cells[0]} {cells[1]} {cells[2]} "
            f"{record.outcome} ({changed})",
            file=out,
        )
    print("", file=out)
    summary = ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items()))
    print(f"{len(expected)} tickets in {elapsed:.1f} s: {summary}", file=out)
    print(
        "Each triaged ticket now carries the ai-triaged tag, label tags, an internal note that "
        "explains the decision and, where a template fits, a draft reply.",
        file=out,
    )
    print(
        "Legend: applied = changed on the ticket; suggested = tagged and noted only; "
        "review = tagged needs-review.",
        file=out,
    )


def _head_cell(decision: Any, width: int) -> str:
    if decision is None:
        return f"{'-':<{width}}"
    mark = {"apply": "", "suggest": "?", "review": "??", "keep": "=", "none": ""}[
        decision.action.value
    ]
    text = f"{decision.label} {decision.confidence:.0%}{mark}"
    return f"{_cut(text, width):<{width}}"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def demo_queues() -> dict[str, Any]:
    """The demo helpdesk's queues as its admin describes them (policy.queues)."""
    text = resources.files("connector.emulator").joinpath("demo_queues.yaml").read_text("utf-8")
    queues: dict[str, Any] = yaml.safe_load(text)
    return queues
