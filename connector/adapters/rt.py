"""Request Tracker 5 through its REST2 API (``<url>/REST/2.0``).

RT keeps no tags in its core, so the claim, the marker and the failure record
share one single-value ticket custom field (``rt.marker_field``, see
``connector.adapters.marker_value``), and label tags go to an optional
multi-value custom field (``rt.tags_field``). RT has no webhooks in its core: it
is polled. The queues triage covers are the visible queues the marker field
applies to, so an admin opts a queue in by applying the field to it.

What the code relies on, confirmed in RT 5.0.3's source (``lib/RT/REST2/``, as
shipped by Debian bookworm's ``request-tracker5``) and against a running RT 5.0.3
(``.ci/rt-setup.sh``, ``tests/integration/test_rt_live.py``):

- Auth (``Middleware/Auth.pm``): ``Authorization: token <authstring>`` or basic
  auth; anything else answers 401 ``{"message": "Unauthorized"}``. An auth string
  is ``1-<user id>-<32 hex>`` (``RT::AuthToken::ParseAuthString``), which is how
  the adapter learns which user it is without a "who am I" endpoint.
- Collections (``Resource/Collection.pm``): ``page`` (1-based) and ``per_page``
  (default 20, silently capped at 100); the answer has ``count``, ``page``,
  ``per_page``, ``total``, ``pages`` and ``next_page`` / ``prev_page`` URLs.
  ``total`` and ``pages`` are null when the user may not see every row (always
  for history and attachments, for tickets only when ``$UseSQLForACLChecks`` is
  off), and then there is no ``next_page``: a full page means "ask for more".
  ``pages`` may come as a float (``0.0``). A page past the end is empty.
  ``orderby``/``order`` may repeat and pair up in order. ``fields=A,B`` adds
  record fields to each item; ``fields[Queue]=Name`` expands a linked record.
  On attachments ``fields=Parent`` answers 500 for a top-level part (5.0.3 calls
  a method on the missing parent), so parts are told apart by type and name.
- TicketSQL (``Resource/Tickets.pm``, ``lib/RT/Tickets.pm``): an unparsable
  query answers 400. A quoted date is read by ``RT::Date`` in the *API user's*
  time zone (its preference, else RT's ``$Timezone``), which REST2 does not
  show; an explicit offset in the text is applied and then shifted again. A
  relative date is immune to that: ``LastUpdated >= 'now - N seconds'`` is
  computed on RT's clock, so ``changed_since`` sends that, widened by
  ``CLOCK_MARGIN_SECONDS`` for latency and clock skew. Seen live: with the
  user's zone set to America/New_York, an absolute UTC bound found none of the
  tickets the relative one found. RT's clock is read in whole seconds when the
  query is parsed, so the same N may reach one second further back from one
  request to the next. (The form ``'N seconds ago'`` matched nothing for N of
  3599 and 7200 while 1000 worked: not used.)
  ``'CF.{Name}' IS NULL`` and ``STARTSWITH`` work on custom fields.
- Ticket (``Resource/Ticket.pm``, ``Util.pm``): dates are UTC ``...Z``
  (``1970-01-01T00:00:00Z`` for unset), ``Priority`` a number in a string,
  ``Owner``/``LastUpdatedBy`` a user whose ``id`` is the login, ``Queue`` an id
  (its name with ``fields[Queue]=Name``), ``CustomFields`` a list of ``{"id",
  "name", "values"}`` holding every field that applies to the ticket's queue
  and that the user may see. A ticket the user may not see answers 403, a
  missing one 404.
- Update (``Record/Writable.pm``): ``PUT /ticket/{id}`` answers **200 with a list
  of messages whatever happened**: ``"Ticket 4: Queue Nope does not exist"``,
  ``"Ticket 4: Permission Denied"`` (moving a ticket also needs CreateTicket on
  the new queue), ``"Ticket 4: That user may not own tickets in that queue"``,
  and ``[]`` for an unknown custom field. So every write is read back. Fields
  are applied Owner before Queue, so an owner is set in a second request, after
  the move. A single-value custom field set to ``null`` is cleared; a
  multi-value one is set to exactly the list sent. A missing ticket is 404.
- Comments (``Resource/Message.pm``): ``POST /ticket/{id}/comment`` with JSON
  ``Subject``, ``Content`` and ``ContentType`` (without it: 400) answers 201 with
  ``Location: /REST/2.0/transaction/<id>``; on a missing ticket it answers 400
  ``Permission Denied``. ``/correspond`` would e-mail the requestors: never used.
- Transactions and attachments (``Resource/Transactions.pm``,
  ``Resource/Attachments.pm``, ``Resource/Attachment.pm``): history and
  attachment collections take a JSON ``query`` (``[{"field", "operator",
  "value"}]``; limits on one field are OR-ed, different fields AND-ed). The
  customer's text is in the ``Create`` transaction's attachments; the first is
  often a ``multipart/*`` wrapper without content. ``ContentType`` there is the
  bare type. ``GET /attachment/{id}`` sends ``Content`` **base64-encoded**
  (UTF-8 bytes of RT's decoded text), while ``fields=Content`` on a collection
  sends it as plain JSON text. RT stores a mail's text parts as UTF-8 and says
  so in the part's ``Content-Type`` header (the original charset goes to
  ``X-RT-Original-Encoding``). Other bytes are decoded by the declared
  charset, then a detected one, as a precaution.
- Lookups: ``/queues/all`` lists the queues the user may see;
  ``/queue/{id}/customfields`` the ticket fields that apply there (global ones
  included); ``/queue/{name}`` has the queue's ``AdminCc`` watchers, and answers
  403 alike for a queue that does not exist and one the user may not see;
  ``/group/{id}/members`` needs AdminGroupMembership on the group;
  ``/user/{id or login}`` has ``id`` and ``Name``.

Not in REST2 5.0 and therefore not done here: finding who holds OwnTicket in a
queue (``agents`` takes the queue's AdminCc watchers instead, see docs/rt.md),
and any lock: the marker is one value and the last writer wins, so with several
replicas the poll and sweep are sharded by ticket id and the claim only guards
against the rare overlap.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import charset_normalizer

from connector.adapters import marker_value
from connector.adapters.base import WebhookEvent, WebhookRejected
from connector.circuit import CircuitBreaker
from connector.config import HttpSettings, RTSettings
from connector.domain import (
    Agent,
    ApplyResult,
    ChangeSet,
    Claim,
    ClaimResult,
    Ticket,
    TicketRef,
)
from connector.errors import (
    AuthError,
    BadRequestError,
    ConfigError,
    ConflictError,
    HelpdeskConfigError,
    HelpdeskError,
    NotFoundError,
    ServerError,
)
from connector.footer import DRAFT, NOTE, find_footers, footer
from connector.http import HttpClient, RetryPolicy, Timeouts
from connector.ids import parse_id
from connector.metrics import Metrics

log = logging.getLogger(__name__)

HELPDESK: Final = "rt"
API_PATH: Final = "/REST/2.0"

# Endpoints, relative to <url>/REST/2.0. Metrics and errors name these templates.
RT_INFO: Final = "/rt"
TICKETS: Final = "/tickets"
TICKET: Final = "/ticket/{id}"
TICKET_HISTORY: Final = "/ticket/{id}/history"
TICKET_ATTACHMENTS: Final = "/ticket/{id}/attachments"
TICKET_COMMENT: Final = "/ticket/{id}/comment"
TRANSACTION_ATTACHMENTS: Final = "/transaction/{id}/attachments"
ATTACHMENT: Final = "/attachment/{id}"
QUEUES_ALL: Final = "/queues/all"
QUEUE: Final = "/queue/{id}"
QUEUE_CUSTOM_FIELDS: Final = "/queue/{id}/customfields"
CUSTOM_FIELDS: Final = "/customfields"
USER: Final = "/user/{id}"
GROUP_MEMBERS: Final = "/group/{id}/members"

MAX_PER_PAGE: Final = 100  # RT caps per_page here without saying so
LOOKUP_MAX_PAGES: Final = 20  # bound on lists that are not ticket searches
CLOCK_MARGIN_SECONDS: Final = 2
QUEUE_CACHE_SECONDS: Final = 300.0
TICKET_LOOKUP_TYPE: Final = "RT::Queue-RT::Ticket"

NOTE_SUBJECT: Final = "AI triage"
DRAFT_SUBJECT: Final = "AI draft reply for the agent (not sent to the customer)"
COMMENT_CONTENT_TYPE: Final = "text/plain"

_AUTH_STRING: Final = re.compile(r"1-(\d+)-[0-9a-fA-F]+")
_PERMISSION_DENIED: Final = re.compile(r"permission denied", re.IGNORECASE)
_CHARSET: Final = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_UNSET_DATE: Final = "1970-01-01T00:00:00Z"
NOBODY: Final = "nobody"


# -- pages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of an RT collection, reduced to what paging needs."""

    items: tuple[Mapping[str, Any], ...]
    number: int
    per_page: int
    has_next: bool

    @classmethod
    def from_answer(cls, data: object, *, asked_page: int, asked_per_page: int) -> Page:
        if not isinstance(data, Mapping) or not isinstance(data.get("items"), list):
            raise ValueError("not a collection")
        items = tuple(item for item in data["items"] if isinstance(item, Mapping))
        number = _int(data.get("page")) or asked_page
        per_page = _int(data.get("per_page")) or asked_per_page
        pages = _int(data.get("pages"))
        if data.get("next_page"):
            has_next = True
        elif pages is not None and _int(data.get("total")) is not None:
            has_next = number < pages
        else:
            # No total (the user may not see every row): a full page may have a successor.
            has_next = len(items) >= per_page
        return cls(items=items, number=number, per_page=per_page, has_next=has_next)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(str(item.get("id")) for item in self.items)


class PageGuard:
    """Decides when a page loop stops: at the cap, on an empty page, on a repeated page.

    A repeated page (the same ids again although a later page was asked for)
    means the server ignores ``page``; without this check the loop would run to
    the cap fetching the same rows.
    """

    def __init__(self, max_pages: int) -> None:
        self.max_pages = max(1, max_pages)
        self.fetched = 0
        self._last: tuple[str, ...] | None = None

    @property
    def may_fetch(self) -> bool:
        return self.fetched < self.max_pages

    def admit(self, page: Page, *, advanced: bool) -> bool:
        """Count ``page``; False when it is empty or repeats the previous one."""
        self.fetched += 1
        if not page.items:
            return False
        if advanced and page.ids == self._last:
            log.warning(
                "RT answered the same page twice; stopping this listing",
                extra={"helpdesk": HELPDESK, "page": page.number},
            )
            return False
        self._last = page.ids
        return True


def paginate(fetch: Callable[[int], Page], *, max_pages: int) -> Iterator[Mapping[str, Any]]:
    """Every item of an offset-paged collection, page after page, within ``max_pages``."""
    guard = PageGuard(max_pages)
    number = 1
    while guard.may_fetch:
        page = fetch(number)
        if not guard.admit(page, advanced=number > 1):
            return
        yield from page.items
        if not page.has_next:
            return
        number = page.number + 1


class TicketWalk:
    """Walks a ticket search in (LastUpdated, id) order, re-anchoring after every page.

    Offset paging over a result that shrinks while it is read (every finished
    ticket leaves the "needs triage" search) would skip tickets. So each page
    after the first asks again from the last ticket's update time, at page 1;
    the tickets seen already are skipped. When the page ends at the anchor
    (tickets seen before crowd the second or two around it) the walk asks for a
    bigger page first, and steps page numbers only at RT's largest page: the
    relative time moves by a second now and then, which would shift offsets.
    """

    def __init__(
        self,
        fetch: Callable[[datetime | None, int, int], Page],
        *,
        since: datetime | None,
        per_page: int,
        max_pages: int,
    ) -> None:
        self._fetch = fetch
        self._since = since
        self._per_page = max(1, min(per_page, MAX_PER_PAGE))
        self._guard = PageGuard(max_pages)

    def __iter__(self) -> Iterator[TicketRef]:
        anchor = self._since
        number, size = 1, self._per_page
        seen: set[int] = set()
        while self._guard.may_fetch:
            page = self._fetch(anchor, number, size)
            if not self._guard.admit(page, advanced=number > 1):
                return
            refs = [ref for ref in map(_ticket_ref, page.items) if ref is not None]
            for ref in refs:
                if ref.id not in seen:
                    seen.add(ref.id)
                    yield ref
            if not page.has_next or not refs:
                return
            last = refs[-1].updated_at
            if anchor is None or last > anchor:
                anchor, number, size = last, 1, self._per_page
            elif number == 1 and size < MAX_PER_PAGE:
                size = min(MAX_PER_PAGE, size * 2)
            else:
                number += 1


def _ticket_ref(item: Mapping[str, Any]) -> TicketRef | None:
    # Not _int: that one reads counts leniently ("12.0"), an id must be plain digits.
    ticket_id = parse_id(item.get("id"))
    updated = parse_time(item.get("LastUpdated"))
    if ticket_id is None or updated is None:
        return None
    return TicketRef(id=ticket_id, updated_at=updated)


# -- TicketSQL --------------------------------------------------------------------------


def quote_sql(value: str) -> str:
    """A TicketSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def needs_triage_query(
    *,
    queue_ids: Sequence[int],
    statuses: Sequence[str],
    marker_field: str,
    updated_since: str | None,
) -> str:
    """Active tickets of the triage queues whose marker is empty, a re-triage request or a claim.

    Claims are included so a claim left by a run that died is found again; the
    pipeline skips a live one. ``updated_since`` is a TicketSQL date such as
    ``relative_time`` makes.
    """
    cf = quote_sql(f"CF.{{{marker_field}}}")
    parts = [
        "(" + " OR ".join(f"Queue = {queue_id}" for queue_id in queue_ids) + ")",
        "(" + " OR ".join(f"Status = {quote_sql(status)}" for status in statuses) + ")",
        f"({cf} IS NULL OR {cf} = {quote_sql(marker_value.RETRIAGE)}"
        f" OR {cf} STARTSWITH {quote_sql(marker_value.CLAIMED + ' ')})",
    ]
    if updated_since is not None:
        parts.append(f"LastUpdated >= {quote_sql(updated_since)}")
    return " AND ".join(parts)


def relative_time(since: datetime, now: datetime) -> str:
    """``since`` as a TicketSQL date relative to RT's clock, widened by the clock margin.

    Whole seconds, rounded towards the past so nothing at the boundary is lost.
    """
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    back = math.ceil((now - since).total_seconds()) + CLOCK_MARGIN_SECONDS
    return f"now - {back} seconds" if back >= 0 else f"now + {-back} seconds"


# -- priorities -------------------------------------------------------------------------


class PriorityLevels:
    """RT's numeric priorities as the named levels triage reads and writes."""

    def __init__(self, levels: Mapping[str, int]) -> None:
        self._by_number = sorted(levels.items(), key=lambda item: (item[1], item[0]))
        self._by_name = {name.casefold(): number for name, number in levels.items()}

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._by_number]

    def name_for(self, number: int) -> str:
        """The level at or below ``number``; numbers below every level get the lowest."""
        chosen = self._by_number[0][0]
        for name, level in self._by_number:
            if level <= number:
                chosen = name
        return chosen

    def number_for(self, name: str) -> int | None:
        return self._by_name.get(name.casefold())


# -- attachments ------------------------------------------------------------------------


def pick_text_part(parts: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The part of a message that holds its text: plain text first, else HTML.

    Skipped: ``multipart/*`` wrappers (no content of their own) and files
    (a part with a file name is an attachment, even a ``.txt`` one).
    """
    candidates = [
        part
        for part in parts
        if not str(part.get("Filename") or "").strip() and _content_length(part) != 0
    ]
    for wanted in ("text/plain", "text/html"):
        for part in candidates:
            if _bare_type(part.get("ContentType")) == wanted:
                return part
    return None


def decode_content(content: object, *, base64_encoded: bool, charset: str | None = None) -> str:
    """An attachment's text from REST2's ``Content``, whatever form it came in.

    ``GET /attachment/{id}`` sends base64 of UTF-8 bytes; older REST2 versions
    and collection ``fields=Content`` send plain text. The declared charset is
    tried when the bytes are not UTF-8, then a detected one.
    """
    if not isinstance(content, str):
        return ""
    if not base64_encoded:
        return content
    try:
        raw = base64.b64decode("".join(content.split()), validate=True)
    except (binascii.Error, ValueError):
        return content  # not base64 after all: already text
    return decode_bytes(raw, charset)


def decode_bytes(raw: bytes, charset: str | None) -> str:
    for encoding in ("utf-8", charset):
        if not encoding:
            continue
        try:
            return raw.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    best = charset_normalizer.from_bytes(raw).best()
    if best is not None:
        return str(best)
    return raw.decode("utf-8", errors="replace")


def charset_of(headers: object) -> str | None:
    """The charset named in a part's ``Content-Type`` header, if any."""
    if not isinstance(headers, str):
        return None
    for line in headers.splitlines():
        if line.lower().startswith("content-type:"):
            match = _CHARSET.search(line)
            return match.group(1) if match else None
    return None


def _bare_type(value: object) -> str:
    return str(value or "").split(";", 1)[0].strip().lower()


def _content_length(part: Mapping[str, Any]) -> int | None:
    return _int(part.get("ContentLength"))


# -- small readers ----------------------------------------------------------------------


def parse_time(value: object) -> datetime | None:
    """An RT date (``2026-11-25T19:40:34Z``, UTC); None when unset or unreadable."""
    if not isinstance(value, str) or not value or value == _UNSET_DATE:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value)) if value.strip() else None
        except ValueError:
            return None
    return None


def _login(value: object) -> str | None:
    """A user reference's login (REST2 uses the login as the user's ``id``)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if value is None:
        return None
    return str(value)


def _custom_field_values(ticket: Mapping[str, Any], name: str) -> list[str] | None:
    """The values of the ticket's custom field ``name``; None when it does not apply."""
    fields = ticket.get("CustomFields")
    if not isinstance(fields, list):
        return None
    for field in fields:
        if isinstance(field, Mapping) and field.get("name") == name:
            values = field.get("values")
            if not isinstance(values, list):
                return []
            return [str(value) for value in values if value is not None and str(value) != ""]
    return None


def _messages(data: object) -> list[str]:
    if isinstance(data, list):
        return [str(item) for item in data if item is not None]
    return []


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.casefold() == b.casefold()


@dataclass(frozen=True, slots=True)
class _Identity:
    login: str


@dataclass(frozen=True, slots=True)
class _History:
    create_id: int | None
    comment_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _TriageQueues:
    ids: tuple[int, ...]
    expires: float


class RTAdapter:
    """``HelpdeskAdapter`` for Request Tracker 5 (REST2)."""

    kind = HELPDESK
    supports_webhooks = False

    def __init__(
        self,
        settings: RTSettings,
        client: HttpClient,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.token is None and not (settings.username and settings.password):
            raise ConfigError("rt.token, or rt.username and rt.password, is required")
        for name, value in (
            ("marker_field", settings.marker_field),
            ("tags_field", settings.tags_field),
        ):
            if value is not None and (not value.strip() or any(c in value for c in "{}'\\")):
                raise ConfigError(f"rt.{name}: a custom field name without braces or quotes")
        if not settings.active_statuses:
            raise ConfigError("rt.active_statuses: at least one status is required")
        self._settings = settings
        self._http = client
        self._now = now
        self._monotonic = monotonic
        self._levels = PriorityLevels(settings.priority_levels)
        self._lock = threading.Lock()
        self._identity: _Identity | None = None
        self._identity_known = False
        self._triage_queues: _TriageQueues | None = None

    @classmethod
    def from_settings(
        cls,
        settings: RTSettings,
        http: HttpSettings,
        *,
        metrics: Metrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
        breaker: CircuitBreaker | None = None,
    ) -> RTAdapter:
        headers: dict[str, str] = {}
        auth: tuple[str, str] | None = None
        if settings.token is not None:
            headers["Authorization"] = f"token {settings.token.get_secret_value()}"
        elif settings.username and settings.password is not None:
            auth = (settings.username, settings.password.get_secret_value())
        client = HttpClient(
            helpdesk=HELPDESK,
            base_url=api_url(settings.url),
            headers=headers,
            auth=auth,
            timeouts=Timeouts(connect=http.connect_timeout_seconds, read=http.read_timeout_seconds),
            retry=RetryPolicy(
                attempts=http.retry_attempts,
                total_seconds=http.retry_total_seconds,
                backoff_initial=http.retry_backoff_initial_seconds,
                backoff_max=http.retry_backoff_max_seconds,
                retry_after_max=http.retry_after_max_seconds,
            ),
            metrics=metrics,
            verify_tls=str(http.ca_bundle) if http.ca_bundle else http.verify_tls,
            pool_size=http.pool_size,
            sleep=sleep,
            breaker=breaker,
        )
        return cls(settings, client)

    # -- the protocol -----------------------------------------------------------------------

    def check(self) -> None:
        """Credentials, the API user, the custom fields and the queues triage covers."""
        self._get(RT_INFO)
        if self._whoami() is None:
            log.warning(
                "cannot tell which RT user the token belongs to; own edits are not recognised",
                extra={"helpdesk": HELPDESK},
            )
        self._check_custom_field("marker_field", self._settings.marker_field, single=True)
        if self._settings.tags_field is not None:
            self._check_custom_field("tags_field", self._settings.tags_field, single=False)
        self._queues_for_triage(refresh=True)

    def changed_since(
        self, since: datetime | None, *, page_size: int, max_pages: int
    ) -> Iterator[TicketRef]:
        queue_ids = self._queues_for_triage().ids

        def fetch(anchor: datetime | None, number: int, per_page: int) -> Page:
            query = needs_triage_query(
                queue_ids=queue_ids,
                statuses=self._settings.active_statuses,
                marker_field=self._settings.marker_field,
                updated_since=relative_time(anchor, self._now()) if anchor is not None else None,
            )
            return self._search_page(query, page=number, per_page=per_page)

        return iter(TicketWalk(fetch, since=since, per_page=page_size, max_pages=max_pages))

    def untriaged(self, *, page_size: int, max_pages: int) -> Iterator[TicketRef]:
        return self.changed_since(None, page_size=page_size, max_pages=max_pages)

    def get_ticket(self, ticket_id: int) -> Ticket:
        raw = self._ticket(ticket_id)
        marker_values = _custom_field_values(raw, self._settings.marker_field) or []
        state = marker_value.parse(marker_values[0] if marker_values else None)
        tags: frozenset[str] = frozenset()
        if self._settings.tags_field is not None:
            tags = frozenset(_custom_field_values(raw, self._settings.tags_field) or [])
        me = self._whoami()
        history = self._history(ticket_id, me)
        body, content_type = ("", "text/plain")
        if history.create_id is not None:
            body, content_type = self._create_text(history.create_id, ticket_id)
        footers = (
            self._footers(ticket_id, history.comment_ids) if history.comment_ids else frozenset()
        )
        owner = _login(raw.get("Owner"))
        priority = _int(raw.get("Priority"))
        return Ticket(
            id=ticket_id,
            subject=str(raw.get("Subject") or ""),
            body=body,
            content_type=content_type,
            number=str(ticket_id),
            queue=self._queue_name(raw.get("Queue")),
            priority=self._levels.name_for(priority) if priority is not None else None,
            owner=None if owner is None or owner.casefold() == NOBODY else owner,
            state=str(raw["Status"]) if raw.get("Status") else None,
            tags=tags,
            created_at=parse_time(raw.get("Created")),
            updated_at=parse_time(raw.get("LastUpdated")),
            marker=state.marker,
            updated_by_self=me is not None and _same(_login(raw.get("LastUpdatedBy")), me.login),
            has_customer_article=bool(body.strip()),
            claims=(state.claim,) if state.claim is not None else (),
            footers=footers,
            retriage_requested=state.retriage_requested,
            failed=state.failed,
        )

    def queues(self) -> list[str]:
        items = paginate(
            lambda number: self._page(QUEUES_ALL, {"fields": "Name"}, page=number),
            max_pages=LOOKUP_MAX_PAGES,
        )
        return [str(item["Name"]) for item in items if item.get("Name")]

    def priorities(self) -> list[str]:
        return self._levels.names

    def agents(self, queue: str) -> list[Agent]:
        """The queue's AdminCc watchers (members of watcher groups included where visible).

        REST2 cannot ask who holds OwnTicket on a queue, so the AdminCc role
        stands for "the queue's agents" (docs/rt.md); RT still refuses an owner
        without OwnTicket, and ``apply`` reports that as a conflict.
        """
        try:
            raw = self._get(QUEUE, path={"id": queue})
        except (AuthError, NotFoundError):
            # 403 for a queue that is missing or hidden alike: which one decides the error.
            if self._queue_visible(queue):
                raise
            raise self._counted(
                ConflictError(
                    "the queue does not exist or the API user may not see it",
                    helpdesk=HELPDESK,
                    method="GET",
                    endpoint=QUEUE,
                    code="queue_not_found",
                )
            ) from None
        logins: list[str] = []
        for watcher in raw.get("AdminCc") or []:
            if not isinstance(watcher, Mapping):
                continue
            if watcher.get("type") == "user":
                login = _login(watcher)
                if login is not None:
                    logins.append(login)
            elif watcher.get("type") == "group":
                logins.extend(self._group_logins(watcher.get("id")))
        agents: list[Agent] = []
        for login in dict.fromkeys(logins):  # de-duplicated, order kept
            if login.casefold() == NOBODY:
                continue
            agents.append(Agent(id=login, login=login, open_tickets=self._open_tickets(login)))
        return agents

    def claim(self, ticket_id: int, claim: Claim) -> ClaimResult:
        """Write the claim into the marker field unless a marker is there; read it back.

        One value, last writer wins: a worker that reads another's claim back
        has lost. A ``failed`` value counts as done: another worker gave up.
        """
        previous = self._read_marker(ticket_id)
        before = marker_value.parse(previous)
        if (before.marker is not None or before.failed) and not before.retriage_requested:
            return ClaimResult(claims=(), triaged=True)
        written = marker_value.claimed(claim)
        value, messages = self._put_marker(ticket_id, written)
        if value == previous:
            # Nothing changed, so RT refused the write (no other worker writes this value).
            raise self._refusal(ticket_id, ["marker"], messages)
        if value == written:
            # Compared as text: the field keeps whole seconds, the claim may not.
            return ClaimResult(claims=(claim,))
        after = marker_value.parse(value)
        return ClaimResult(
            claims=(after.claim,) if after.claim is not None else (),
            triaged=after.marker is not None or after.failed,
            retriage_requested=after.retriage_requested,
        )

    def apply(self, ticket: Ticket, change: ChangeSet) -> ApplyResult:
        wanted: dict[str, str] = {}
        move: dict[str, Any] = {}
        if change.queue and not _same(ticket.queue, change.queue):
            move["Queue"] = wanted["queue"] = change.queue
        if change.priority and not _same(ticket.priority, change.priority):
            number = self._levels.number_for(change.priority)
            if number is None:
                raise self._counted(
                    HelpdeskConfigError(
                        "priority is not one of rt.priority_levels",
                        helpdesk=HELPDESK,
                        method="PUT",
                        endpoint=TICKET,
                        ticket_id=ticket.id,
                        code="unknown_priority",
                    )
                )
            move["Priority"] = number
            wanted["priority"] = change.priority
        skipped: list[str] = []
        tags: frozenset[str] | None = None
        if change.add_tags or change.remove_tags:
            if self._settings.tags_field is None:
                skipped.append("tags")
            else:
                new_tags = (ticket.tags | change.add_tags) - change.remove_tags
                if new_tags != ticket.tags:
                    tags = new_tags
                    move["CustomFields"] = {self._settings.tags_field: sorted(new_tags)}
        owner = None
        if change.owner and not _same(ticket.owner, change.owner):
            owner = self._owner_login(change.owner, ticket.id)
            if _same(ticket.owner, owner):
                owner = None
        messages: list[str] = []
        if move:
            messages += self._update(ticket.id, move)
        if owner is not None:
            # RT checks the owner's rights on the ticket's queue at the time: after the move.
            messages += self._update(ticket.id, {"Owner": owner})
            wanted["owner"] = owner
        if move or owner is not None:
            self._confirm(ticket.id, wanted, tags, messages)

        note_created = False
        if change.note:
            if footer(NOTE, change.run_id) in ticket.footers:
                skipped.append("note")
            else:
                self._comment(ticket.id, NOTE_SUBJECT, change.note)
                note_created = True
        draft_created = False
        if change.draft:
            if footer(DRAFT, change.run_id) in ticket.footers:
                skipped.append("draft")
            else:
                self._comment(ticket.id, DRAFT_SUBJECT, change.draft)
                draft_created = True
        changed = tuple(wanted) + (("tags",) if tags is not None else ())
        return ApplyResult(
            ticket_id=ticket.id,
            changed=changed,
            skipped=tuple(skipped),
            note_created=note_created,
            draft_created=draft_created,
        )

    def finish(self, ticket_id: int, claim: Claim, model_version: str) -> None:
        # One value holds the request, the marker and the claim: one write does all three.
        self._write_marker(
            ticket_id, marker_value.triaged(claim.run_id, model_version, self._now())
        )

    def release(self, ticket_id: int, claim: Claim) -> None:
        if self._read_marker(ticket_id) == marker_value.claimed(claim):
            self._write_marker(ticket_id, None)

    def mark_failed(self, ticket_id: int, claim: Claim | None) -> None:
        self._write_marker(ticket_id, marker_value.failed(self._now()))

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        raise WebhookRejected("ignored", "Request Tracker has no webhooks; it is polled")

    def close(self) -> None:
        self._http.close()

    # -- reading ----------------------------------------------------------------------------

    def _ticket(self, ticket_id: int) -> Mapping[str, Any]:
        return self._get(
            TICKET, path={"id": ticket_id}, params={"fields[Queue]": "Name"}, ticket_id=ticket_id
        )

    def _queue_name(self, value: object) -> str | None:
        if isinstance(value, Mapping):
            name = value.get("Name")
            if name:
                return str(name)
            value = value.get("id")
        if value is None or value == "":
            return None
        return str(value)

    def _history(self, ticket_id: int, me: _Identity | None) -> _History:
        """The ``Create`` transaction and the comments this user wrote, oldest first."""
        query = json.dumps(
            [{"field": "Type", "value": "Create"}, {"field": "Type", "value": "Comment"}]
        )
        items = paginate(
            lambda number: self._page(
                TICKET_HISTORY,
                {"query": query, "fields": "Type,Creator", "orderby": "id", "order": "ASC"},
                page=number,
                path={"id": ticket_id},
                ticket_id=ticket_id,
            ),
            max_pages=LOOKUP_MAX_PAGES,
        )
        create_id: int | None = None
        comments: list[int] = []
        for item in items:
            txn = _int(item.get("id"))
            if txn is None:
                continue
            if item.get("Type") == "Create" and create_id is None:
                create_id = txn
            elif item.get("Type") == "Comment" and (
                me is None or _same(_login(item.get("Creator")), me.login)
            ):
                comments.append(txn)
        return _History(create_id=create_id, comment_ids=tuple(comments))

    def _create_text(self, transaction_id: int, ticket_id: int) -> tuple[str, str]:
        """The customer's text from the ticket's first transaction, and its content type."""
        parts = list(
            paginate(
                lambda number: self._page(
                    TRANSACTION_ATTACHMENTS,
                    {
                        "fields": "ContentType,Filename,ContentLength",
                        "orderby": "id",
                        "order": "ASC",
                    },
                    page=number,
                    path={"id": transaction_id},
                    ticket_id=ticket_id,
                ),
                max_pages=LOOKUP_MAX_PAGES,
            )
        )
        part = pick_text_part(parts)
        part_id = _int(part.get("id")) if part is not None else None
        if part is None or part_id is None:
            return "", "text/plain"
        attachment = self._get(ATTACHMENT, path={"id": part_id}, ticket_id=ticket_id)
        text = decode_content(
            attachment.get("Content"),
            base64_encoded=True,
            charset=charset_of(attachment.get("Headers")),
        )
        return text, _bare_type(attachment.get("ContentType") or part.get("ContentType"))

    def _footers(self, ticket_id: int, comment_ids: Sequence[int]) -> frozenset[str]:
        """Footer lines in the text of the given comment transactions, in one listing."""
        limits: list[dict[str, Any]] = [
            {"field": "TransactionId", "value": txn} for txn in comment_ids
        ]
        limits.append({"field": "ContentType", "operator": "LIKE", "value": "text/"})
        items = paginate(
            lambda number: self._page(
                TICKET_ATTACHMENTS,
                {"query": json.dumps(limits), "fields": "ContentType,Content"},
                page=number,
                path={"id": ticket_id},
                ticket_id=ticket_id,
            ),
            max_pages=LOOKUP_MAX_PAGES,
        )
        return find_footers(
            decode_content(item.get("Content"), base64_encoded=False) for item in items
        )

    def _read_marker(self, ticket_id: int) -> str:
        values = self._marker_values(self._ticket(ticket_id), ticket_id)
        return values[0] if values else ""

    def _marker_values(self, raw: Mapping[str, Any], ticket_id: int) -> list[str]:
        values = _custom_field_values(raw, self._settings.marker_field)
        if values is None:
            # The field is applied per queue: a ticket moved out of the triage queues
            # is no longer ours, which is about this ticket, not the whole setup.
            raise self._counted(
                ConflictError(
                    "the marker custom field does not apply to the ticket's queue",
                    helpdesk=HELPDESK,
                    method="GET",
                    endpoint=TICKET,
                    ticket_id=ticket_id,
                    code="marker_not_applicable",
                )
            )
        return values

    # -- writing ----------------------------------------------------------------------------

    def _update(self, ticket_id: int, body: Mapping[str, Any]) -> list[str]:
        data = self._http.request_json(
            "PUT", TICKET, path={"id": ticket_id}, json=dict(body), ticket_id=ticket_id
        )
        return _messages(data)

    def _put_marker(self, ticket_id: int, value: str | None) -> tuple[str, list[str]]:
        """Set (or with None clear) the marker; return what RT holds after, and its messages."""
        messages = self._update(ticket_id, {"CustomFields": {self._settings.marker_field: value}})
        return self._read_marker(ticket_id), messages

    def _write_marker(self, ticket_id: int, value: str | None) -> None:
        """Set or clear the marker field and make sure RT did."""
        after, messages = self._put_marker(ticket_id, value)
        if after != (value or ""):
            raise self._refusal(ticket_id, ["marker"], messages)

    def _confirm(
        self,
        ticket_id: int,
        wanted: Mapping[str, str],
        tags: frozenset[str] | None,
        messages: Sequence[str],
    ) -> None:
        """Read the ticket back and raise unless every change is there."""
        raw = self._ticket(ticket_id)
        refused: list[str] = []
        if "queue" in wanted and not _same(self._queue_name(raw.get("Queue")), wanted["queue"]):
            refused.append("queue")
        if "priority" in wanted:
            number = _int(raw.get("Priority"))
            if number != self._levels.number_for(wanted["priority"]):
                refused.append("priority")
        if "owner" in wanted and not _same(_login(raw.get("Owner")), wanted["owner"]):
            refused.append("owner")
        if tags is not None and self._settings.tags_field is not None:
            held = frozenset(_custom_field_values(raw, self._settings.tags_field) or [])
            if held != tags:
                refused.append("tags")
        if refused:
            if "queue" in refused and not self._queue_visible(wanted["queue"]):
                raise self._counted(
                    ConflictError(
                        "the queue does not exist or the API user may not see it",
                        helpdesk=HELPDESK,
                        method="PUT",
                        endpoint=TICKET,
                        ticket_id=ticket_id,
                        code="queue_not_found",
                    )
                )
            raise self._refusal(ticket_id, refused, messages)

    def _refusal(
        self, ticket_id: int, fields: Sequence[str], messages: Sequence[str]
    ) -> HelpdeskError:
        """The error for changes RT answered 200 to but did not make.

        RT's messages are in the API user's language; "Permission Denied" is
        recognised in English (the default), anything else counts as a conflict.
        """
        where: dict[str, Any] = {
            "helpdesk": HELPDESK,
            "method": "PUT",
            "endpoint": TICKET,
            "ticket_id": ticket_id,
        }
        names = ",".join(fields)
        if any(_PERMISSION_DENIED.search(message) for message in messages):
            return self._counted(
                AuthError(
                    f"RT refused to change {names}: permission denied",
                    code="permission_denied",
                    **where,
                )
            )
        return self._counted(
            ConflictError(f"RT did not change {names}", code="not_applied", **where)
        )

    def _comment(self, ticket_id: int, subject: str, text: str) -> None:
        """Post an internal comment; never retried, as a second POST is a second comment."""
        response = self._http.request(
            "POST",
            TICKET_COMMENT,
            path={"id": ticket_id},
            json={"Subject": subject, "Content": text, "ContentType": COMMENT_CONTENT_TYPE},
            ticket_id=ticket_id,
            retry=False,
        )
        if response.status_code != 201:
            raise self._counted(
                ServerError(
                    "comment not confirmed",
                    helpdesk=HELPDESK,
                    method="POST",
                    endpoint=TICKET_COMMENT,
                    status=response.status_code,
                    ticket_id=ticket_id,
                )
            )

    # -- lookups ----------------------------------------------------------------------------

    def _whoami(self) -> _Identity | None:
        """The API user: from ``rt.username``, else from the token's auth string."""
        with self._lock:
            if self._identity_known:
                return self._identity
        key: str | int | None = self._settings.username
        if self._settings.token is not None:
            match = _AUTH_STRING.fullmatch(self._settings.token.get_secret_value().strip())
            key = int(match.group(1)) if match else self._settings.username
        identity: _Identity | None = None
        if key is not None:
            try:
                raw = self._get(USER, path={"id": key})
            except NotFoundError:
                raise HelpdeskConfigError(
                    "the API user cannot be looked up",
                    helpdesk=HELPDESK,
                    method="GET",
                    endpoint=USER,
                ) from None
            login = raw.get("Name")
            if login:
                identity = _Identity(login=str(login))
        with self._lock:
            self._identity, self._identity_known = identity, True
        return identity

    def _check_custom_field(self, setting: str, name: str, *, single: bool) -> None:
        query = json.dumps(
            [
                {"field": "Name", "value": name},
                {"field": "LookupType", "value": TICKET_LOOKUP_TYPE},
            ]
        )
        found = [
            item
            for item in paginate(
                lambda number: self._page(
                    CUSTOM_FIELDS,
                    {"query": query, "fields": "Name,MaxValues,Disabled"},
                    page=number,
                ),
                max_pages=1,
            )
            if item.get("Name") == name and str(item.get("Disabled") or "0") == "0"
        ]
        where: dict[str, Any] = {"helpdesk": HELPDESK, "method": "GET", "endpoint": CUSTOM_FIELDS}
        if not found:
            raise HelpdeskConfigError(
                f"the ticket custom field named by rt.{setting} does not exist or is not visible",
                **where,
            )
        max_values = _int(found[0].get("MaxValues"))
        if single and max_values != 1:
            raise HelpdeskConfigError(f"the custom field rt.{setting} must hold one value", **where)
        if not single and max_values == 1:
            raise HelpdeskConfigError(
                f"the custom field rt.{setting} must hold many values", **where
            )

    def _queues_for_triage(self, *, refresh: bool = False) -> _TriageQueues:
        """Visible queues the marker field applies to; cached for a few minutes."""
        with self._lock:
            cached = self._triage_queues
        if cached is not None and not refresh and cached.expires > self._monotonic():
            return cached
        ids: list[int] = []
        for item in paginate(
            lambda number: self._page(QUEUES_ALL, {"fields": "Name"}, page=number),
            max_pages=LOOKUP_MAX_PAGES,
        ):
            queue_id = _int(item.get("id"))
            if queue_id is not None and self._marker_applies(queue_id):
                ids.append(queue_id)
        if not ids:
            raise HelpdeskConfigError(
                "the marker custom field applies to no queue the API user can see",
                helpdesk=HELPDESK,
                method="GET",
                endpoint=QUEUE_CUSTOM_FIELDS,
            )
        fresh = _TriageQueues(ids=tuple(ids), expires=self._monotonic() + QUEUE_CACHE_SECONDS)
        with self._lock:
            self._triage_queues = fresh
        return fresh

    def _marker_applies(self, queue_id: int) -> bool:
        items = paginate(
            lambda number: self._page(
                QUEUE_CUSTOM_FIELDS, {"fields": "Name"}, page=number, path={"id": queue_id}
            ),
            max_pages=LOOKUP_MAX_PAGES,
        )
        return any(item.get("Name") == self._settings.marker_field for item in items)

    def _queue_visible(self, name: str) -> bool:
        # GET /queue/{name} answers 403 both for a missing queue and for one the
        # user may not see, so the visible queues are listed instead.
        return any(_same(name, queue) for queue in self.queues())

    def _owner_login(self, owner: str, ticket_id: int) -> str:
        """RT accepts a login or a user id as owner; the ticket shows the login."""
        if not owner.isdigit():
            return owner
        raw = self._get(USER, path={"id": owner}, ticket_id=ticket_id)
        return str(raw.get("Name") or owner)

    def _group_logins(self, group_id: object) -> list[str]:
        """Users of a watcher group, or none when the API user may not list its members."""
        if _int(group_id) is None:
            return []
        try:
            members = list(
                paginate(
                    lambda number: self._page(
                        GROUP_MEMBERS,
                        {"users": 1, "groups": 0, "recursively": 1},
                        page=number,
                        path={"id": group_id},
                    ),
                    max_pages=LOOKUP_MAX_PAGES,
                )
            )
        except AuthError:
            log.info(
                "cannot list a watcher group's members (needs AdminGroupMembership); skipped",
                extra={"helpdesk": HELPDESK, "endpoint": GROUP_MEMBERS},
            )
            return []
        logins: list[str] = []
        for member in members:
            user_id = _int(member.get("id"))
            if member.get("type") == "user" and user_id is not None:
                name = self._get(USER, path={"id": user_id}).get("Name")
                if name:
                    logins.append(str(name))
        return logins

    def _open_tickets(self, login: str) -> int:
        query = " AND ".join(
            [
                f"Owner = {quote_sql(login)}",
                "("
                + " OR ".join(f"Status = {quote_sql(s)}" for s in self._settings.active_statuses)
                + ")",
            ]
        )
        data = self._get(TICKETS, params={"query": query, "per_page": 1, "fields": "id"})
        total = _int(data.get("total"))
        if total is not None:
            return total
        # No total without global ShowTicket and SQL ACL checks: count the visible ones.
        return sum(
            1
            for _ in paginate(
                lambda number: self._page(TICKETS, {"query": query, "fields": "id"}, page=number),
                max_pages=LOOKUP_MAX_PAGES,
            )
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _search_page(self, query: str, *, page: int, per_page: int) -> Page:
        params = {
            "query": query,
            "fields": "LastUpdated",
            "orderby": ["LastUpdated", "id"],
            "order": ["ASC", "ASC"],
        }
        try:
            return self._page(TICKETS, params, page=page, per_page=per_page)
        except BadRequestError as error:
            # The query is built from settings (statuses, field name): a 400 is a setup error.
            raise HelpdeskConfigError(
                "RT rejected the ticket search; check rt.active_statuses and rt.marker_field",
                helpdesk=HELPDESK,
                method="GET",
                endpoint=TICKETS,
                status=error.status,
            ) from None

    def _page(
        self,
        endpoint: str,
        params: Mapping[str, Any],
        *,
        page: int,
        per_page: int = MAX_PER_PAGE,
        path: Mapping[str, object] | None = None,
        ticket_id: int | None = None,
    ) -> Page:
        data = self._http.request_json(
            "GET",
            endpoint,
            path=path,
            params={**params, "page": page, "per_page": per_page},
            ticket_id=ticket_id,
        )
        try:
            return Page.from_answer(data, asked_page=page, asked_per_page=per_page)
        except ValueError:
            raise self._counted(
                ServerError(
                    "answer is not a collection",
                    helpdesk=HELPDESK,
                    method="GET",
                    endpoint=endpoint,
                    ticket_id=ticket_id,
                )
            ) from None

    def _get(
        self,
        endpoint: str,
        *,
        path: Mapping[str, object] | None = None,
        params: Mapping[str, Any] | None = None,
        ticket_id: int | None = None,
    ) -> Mapping[str, Any]:
        data = self._http.request_json(
            "GET", endpoint, path=path, params=params, ticket_id=ticket_id
        )
        if not isinstance(data, Mapping):
            raise self._counted(
                ServerError(
                    "answer is not a JSON object",
                    helpdesk=HELPDESK,
                    method="GET",
                    endpoint=endpoint,
                    ticket_id=ticket_id,
                )
            )
        return data

    def _counted(self, error: HelpdeskError) -> HelpdeskError:
        # Errors found in a 200 answer never reach the HTTP layer's counter.
        metrics = self._http.metrics
        if metrics is not None:
            metrics.helpdesk_errors.labels(helpdesk=HELPDESK, kind=error.kind).inc()
        return error


def api_url(url: str) -> str:
    """``<url>/REST/2.0``, accepting a URL that already ends in it."""
    base = url.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


__all__ = [
    "Page",
    "PageGuard",
    "PriorityLevels",
    "RTAdapter",
    "TicketWalk",
    "api_url",
    "decode_content",
    "needs_triage_query",
    "paginate",
    "pick_text_part",
    "relative_time",
]
