"""The triage marker as one text value, for helpdesks without tags.

Znuny's dynamic fields and RT's custom fields hold one value per ticket, so
the claim, the marker and the failure record share it, as one of:

    claimed <run id> <ISO time>
    triaged <run id> <model version> <ISO time>
    failed <ISO time>
    retriage                       (set by an admin to ask for a new run)

An empty value means "never triaged". Anything else an admin typed is kept as
the marker (the ticket counts as triaged), so a hand-set value is never
overwritten by surprise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from connector.domain import Claim

CLAIMED = "claimed"
TRIAGED = "triaged"
FAILED = "failed"
RETRIAGE = "retriage"


@dataclass(frozen=True, slots=True)
class MarkerState:
    """What one marker value says about a ticket."""

    marker: str | None = None  # set when the ticket counts as triaged
    claim: Claim | None = None
    failed: bool = False
    retriage_requested: bool = False


def parse(value: str | None) -> MarkerState:
    text = (value or "").strip()
    if not text:
        return MarkerState()
    words = text.split()
    if words[0] == RETRIAGE and len(words) == 1:
        return MarkerState(retriage_requested=True)
    if words[0] == CLAIMED and len(words) == 3:
        when = _parse_time(words[2])
        if when is not None:
            return MarkerState(claim=Claim(created_at=when, run_id=words[1]))
    if words[0] == FAILED:
        return MarkerState(failed=True)
    return MarkerState(marker=text)


def claimed(claim: Claim) -> str:
    return f"{CLAIMED} {claim.run_id} {_format_time(claim.created_at)}"


def triaged(run_id: str, model_version: str, when: datetime | None = None) -> str:
    version = "-".join(model_version.split()) or "unknown"
    return f"{TRIAGED} {run_id} {version} {_format_time(when or datetime.now(UTC))}"


def failed(when: datetime | None = None) -> str:
    return f"{FAILED} {_format_time(when or datetime.now(UTC))}"


def _format_time(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
