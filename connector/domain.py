"""The pipeline's own vocabulary: tickets, predictions and change sets.

Adapters translate between these and a helpdesk's API; the classifier and the
policy see nothing else. All are frozen so that a value handed from one stage to
the next cannot be changed behind the other's back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position in a helpdesk's change stream: last update time, then id.

    The id breaks ties between tickets updated in the same second, so a poll
    can resume exactly after the last ticket it finished.
    """

    updated_at: datetime
    ticket_id: int


@dataclass(frozen=True, slots=True)
class TicketRef:
    """A ticket as a listing names it: enough to order, de-duplicate and fetch."""

    id: int
    updated_at: datetime

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.updated_at, self.id)


@dataclass(frozen=True, slots=True, order=True)
class Claim:
    """One worker's claim on a ticket: which run started and when.

    Ordered by time, then run id, so every worker that reads the same claims
    agrees on the earliest one. A claim older than the configured time-to-live
    belongs to a run that died; the next worker resumes it under the same run id.
    """

    created_at: datetime
    run_id: str


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The ticket's claims as read back right after writing one, with its marker state.

    ``triaged`` and ``retriage_requested`` are read in the same look as the
    claims: a run that finished between our first read and our claim shows up
    here, and this run steps back instead of triaging a second time.
    """

    claims: tuple[Claim, ...]
    triaged: bool = False
    retriage_requested: bool = False

    @property
    def done_elsewhere(self) -> bool:
        return self.triaged and not self.retriage_requested


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ticket with the text the classifier reads and the fields triage may change.

    ``body`` is the first customer article as the helpdesk stores it (HTML or
    plain text, see ``content_type``); cleaning it is the classifier's job.
    ``queue``, ``priority`` and ``owner`` are the helpdesk's own names.
    ``marker`` is the on-ticket triage marker's value, None when absent.
    ``updated_by_self`` says the last change was made by the triage user, so a
    poll that sees it does not triage again in answer to its own write.
    ``claims`` are the runs that started on this ticket (see ``Claim``), in the
    helpdesk's order; ``footers`` are the ``connector.footer`` lines found in
    internal notes, so a resumed run does not post a note twice.
    ``retriage_requested`` says an admin asked for the ticket to be triaged again.
    ``failed`` says triage gave up on it before (``triage-error``).
    """

    id: int
    subject: str
    body: str
    content_type: str = "text/plain"
    number: str = ""
    queue: str | None = None
    priority: str | None = None
    owner: str | None = None
    state: str | None = None
    tags: frozenset[str] = frozenset()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    marker: str | None = None
    updated_by_self: bool = False
    has_customer_article: bool = True
    claims: tuple[Claim, ...] = ()
    footers: frozenset[str] = frozenset()
    retriage_requested: bool = False
    failed: bool = False

    @property
    def is_triaged(self) -> bool:
        return self.marker is not None


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent who may own tickets of a queue, with their current open-ticket count."""

    id: str
    login: str
    open_tickets: int = 0


@dataclass(frozen=True, slots=True)
class HeadPrediction:
    """The classifier's answer for one head (queue, priority, sentiment, ...)."""

    label: str
    confidence: float
    probabilities: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Prediction:
    """All heads' answers for one ticket, and the model that gave them."""

    heads: Mapping[str, HeadPrediction]
    model_version: str

    def __getitem__(self, head: str) -> HeadPrediction:
        return self.heads[head]


class Action(StrEnum):
    """What the policy decided for one head of one ticket."""

    APPLY = "apply"
    SUGGEST = "suggest"
    REVIEW = "review"
    KEEP = "keep"  # a human already set this field and the policy respects it
    NONE = "none"  # the head has no mapping for this helpdesk (e.g. sentiment)


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict for one head: the action and why."""

    head: str
    label: str
    confidence: float
    action: Action
    target: str | None = None  # the helpdesk value the label maps to, if any
    threshold: float | None = None


# C0 controls except tab, newline and carriage return, which are text.
_C0_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def strip_controls(text: str) -> str:
    """``text`` without C0 control characters other than tab, newline and carriage return."""
    return _C0_CONTROLS.sub("", text)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Everything triage writes to one ticket, applied as one unit where the API allows.

    Fields left None are not touched. ``note`` and ``draft`` already end in
    their ``connector.footer`` line for ``run_id``; an adapter skips either when
    that footer is among the ticket's ``footers``.
    """

    ticket_id: int
    queue: str | None = None
    priority: str | None = None
    owner: str | None = None
    add_tags: frozenset[str] = frozenset()
    remove_tags: frozenset[str] = frozenset()
    note: str | None = None
    draft: str | None = None
    run_id: str = ""

    def __post_init__(self) -> None:
        # Every write-back passes through a ChangeSet, so stripping here covers every
        # adapter and every way a note, draft or tag is composed (ticket subjects end up
        # in draft templates). A NUL is refused or truncates text in helpdesk databases,
        # and an ESC sequence would reach whatever terminal or log shows the note.
        # ``remove_tags`` is left alone: a tag is removed by the exact name it is stored under.
        for name in ("note", "draft"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, strip_controls(value))
        tags = (strip_controls(tag) for tag in self.add_tags)
        object.__setattr__(self, "add_tags", frozenset(tag for tag in tags if tag))

    @property
    def is_empty(self) -> bool:
        return not (
            self.queue
            or self.priority
            or self.owner
            or self.add_tags
            or self.remove_tags
            or self.note
            or self.draft
        )


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an adapter actually changed, after checking the helpdesk's answer."""

    ticket_id: int
    changed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default_factory=tuple)
    note_created: bool = False
    draft_created: bool = False
