"""The footer line that identifies a note or draft posted by a triage run.

Every note and draft ends with ``helpdesk-triage <kind> <run id>``. Adapters
look for these lines in a ticket's internal articles, so a run that resumes
after a partial failure (or a webhook delivered twice) never posts twice.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

NOTE = "note"
DRAFT = "draft"

_FOOTER = re.compile(r"helpdesk-triage (note|draft) ([0-9a-f]{12})\b")


def new_run_id() -> str:
    """A short random id for one triage run of one ticket."""
    return secrets.token_hex(6)


def footer(kind: str, run_id: str) -> str:
    """The footer line for a note or draft of ``run_id``."""
    if kind not in (NOTE, DRAFT):
        raise ValueError(f"unknown footer kind {kind!r}")
    return f"helpdesk-triage {kind} {run_id}"


def find_footers(texts: Iterable[str]) -> frozenset[str]:
    """Every footer line found in ``texts`` (article bodies, HTML or plain)."""
    found: set[str] = set()
    for text in texts:
        for kind, run_id in _FOOTER.findall(text or ""):
            found.add(f"helpdesk-triage {kind} {run_id}")
    return frozenset(found)
