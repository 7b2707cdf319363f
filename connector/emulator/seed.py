"""Fill a ``Store`` from ``sample_tickets.json`` (or another file of the same shape).

The file holds groups, agents, customers and tickets written for this project:
fictitious people and companies with example domains, in German and English,
spread over the bundled model's queue labels. Each ticket's ``expected``
block says which queue, priority and sentiment a person would give it; the
API never shows it, the demo and the benchmarks may compare against it.

The triage API user is created here, not in the file, because its token is
configuration (``DEMO_TOKEN`` unless the caller gives another).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from connector.emulator import DEMO_TOKEN
from connector.emulator.store import Store, User

SAMPLE_FILE = Path(__file__).with_name("sample_tickets.json")
TRIAGE_LOGIN = "triage-bot"


def load(path: Path | str | None = None) -> dict[str, Any]:
    with Path(path or SAMPLE_FILE).open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def seed(
    store: Store,
    data: Mapping[str, Any] | None,
    *,
    token: str = DEMO_TOKEN,
    password: str | None = None,
) -> User:
    """Reset ``store`` to ``data`` (groups, users, tickets) and return the triage user.

    With ``data`` None only the default groups and users exist, no tickets.
    """
    data = data if data is not None else {**load(), "tickets": []}
    store.clear()
    for group in data.get("groups", ()):
        store.add_group(
            group["name"],
            shared_drafts=bool(group.get("shared_drafts", True)),
            active=bool(group.get("active", True)),
        )
    every_group = {g.name: ("full",) for g in store.groups.values()}
    triage = store.add_user(
        TRIAGE_LOGIN,
        roles=("Agent",),
        firstname="AI",
        lastname="Triage",
        email="triage-bot@helpdesk.example",
        groups=every_group,
        token=token,
        password=password,
    )
    for agent in data.get("agents", ()):
        store.add_user(
            agent["login"],
            roles=("Agent",),
            firstname=agent.get("firstname", ""),
            lastname=agent.get("lastname", ""),
            email=agent.get("email", ""),
            groups=agent.get("groups", {}),
        )
    for customer in data.get("customers", ()):
        store.add_user(
            customer["login"],
            roles=("Customer",),
            firstname=customer.get("firstname", ""),
            lastname=customer.get("lastname", ""),
            email=customer.get("email", ""),
        )
    now = store.clock()
    for spec in data.get("tickets", ()):
        store.import_ticket(
            title=spec["title"],
            group=spec.get("group", "Users"),
            priority=spec.get("priority", "2 normal"),
            state=spec.get("state", "new"),
            customer=spec["customer"],
            owner=spec.get("owner"),
            tags=spec.get("tags", ()),
            created_at=now - timedelta(minutes=float(spec.get("minutes_ago", 0))),
            articles=spec.get("articles", ()),
        )
    return triage


def create_payloads(data: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """``POST /tickets`` bodies built from the sample's new tickets, for bulk creation."""
    data = data if data is not None else load()
    payloads = []
    for spec in data.get("tickets", ()):
        if spec.get("state", "new") != "new" or not spec.get("articles"):
            continue
        first = spec["articles"][0]
        body = first.get("body") or ""
        payloads.append(
            {
                "title": spec["title"],
                "group": spec.get("group", "Users"),
                "customer": spec["customer"],
                "article": {
                    "subject": first.get("subject") or spec["title"],
                    "body": "\n".join(body) if isinstance(body, list) else body,
                    "content_type": first.get("content_type", "text/plain"),
                    "type": first.get("type", "email"),
                    "sender": "Customer",
                    "internal": False,
                },
            }
        )
    return payloads
