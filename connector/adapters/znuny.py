"""Znuny, OTRS 6 and OTOBO through the GenericTicketConnectorREST web service.

The web service is the one the systems ship as ``GenericTicketConnectorREST.yml``;
its routes are settings (``ZnunyRoutes``) because every installation may change them.
Credentials travel as operation parameters, never as headers: the query string on
GET, the JSON body otherwise. They therefore never appear in what this module
raises or logs: errors carry the operation's error *code*, never its message
(which can echo input), and ``HttpClient`` records the path template only.

What the code relies on, confirmed in the public source of znuny/Znuny (the same
files exist in RotherOSS/otobo):

- Transport (``Kernel/GenericInterface/Transport/HTTP/REST.pm``): a request is
  matched against ``RouteOperationMapping`` per request method, operations tried
  in sorted name order; ``:Name`` segments match ``[^/]+`` and are URI-unescaped,
  so ``/Ticket/12%2C13`` reaches TicketGet as ``TicketID=12,13``. Query parameters
  are read for every method, a body only when the method is not GET, so a GET
  cannot carry nested search filters. A request that no route matches answers
  HTTP 500 with the plain-text body ``HTTP::REST Error while determine Operation
  ...``; a body above ``MaxLength`` answers 413; an undecodable body 500.
- Errors (``Operation/Common.pm`` ``ReturnError``): an operation refusal is HTTP 200
  with ``{"Error": {"ErrorCode": "<Operation>.<Reason>", "ErrorMessage": ...}}``.
  An operation that fails without a code is HTTP 500 with ``{"faultcode":
  "Server", "faultstring": ...}`` (``ProviderGenerateResponse``). A bad or expired
  session answers ``<Operation>.AuthFail``; SessionCreate answers ``{"SessionID"}``.
- TicketGet (``Operation/Ticket/TicketGet.pm``): ``TicketID`` may list several ids
  separated by commas; ``Ticket`` in the answer is a list; the access check runs
  before the existence check, so a missing ticket answers ``TicketGet.AccessDenied``
  (ids that are not positive integers: ``TicketGet.WrongStructure``). With
  ``DynamicFields=1`` every valid ticket dynamic field is listed, an empty one with
  ``Value: null`` (``Kernel/System/Ticket.pm`` TicketGet); a multiselect's value is
  a list. ``Created``/``Changed`` are ``YYYY-MM-DD HH:MM:SS`` in the system's time
  zone (SysConfig ``OTRSTimeZone`` since OTRS 6; the host's zone on OTRS 5).
- TicketSearch (``Operation/Ticket/TicketSearch.pm``, ``Kernel/System/Ticket/
  TicketSearch.pm``): no offset; ``Limit`` (else the web service's SearchLimit, else
  500), ``SortBy=Changed``, ``OrderBy=Up``; ``TicketLastChangeTimeNewerDate`` and
  ``...OlderDate`` compare ``change_time`` with ``>=`` and ``<=``; a newer-date in
  the server's future returns nothing. Dynamic-field conditions use the legacy
  ``DynamicField_<Name>: {"Empty": 1}`` form (names must be alphanumeric) or
  ``{"Like": [...]}`` with ``*`` wildcards, values of one operator OR-ed. The
  answer is ``{"TicketID": ["12", "13"]}``, or ``{}`` when nothing matches.
- TicketUpdate (``Operation/Ticket/TicketUpdate.pm``): validates everything before
  changing anything, then sets ticket fields (a field already holding the value is
  skipped silently), then the article, then dynamic fields. ``IsVisibleForCustomer``
  defaults to 1 (or the SysConfig default): always sent as 0. Subject, Body and
  ContentType are required; values are trimmed. The answer is ``{"TicketID",
  "TicketNumber", "ArticleID"}``. A text field set to ``""`` or a multiselect set to
  ``[]`` is deleted (``Kernel/System/DynamicFieldValue.pm``), so ``Empty`` finds the
  ticket again; a multiselect accepts only its configured possible values.
- Invoker ``Ticket::Generic`` (``Invoker/Ticket/Generic.pm``) posts ``{"Ticket":
  <TicketDeepGet of the ticket>, "Event": <the event's data, with TicketID>}``; the
  REST requester can add basic auth (``Transport/HTTP/REST.pm``) and newer Znuny
  releases extra headers, but nothing signs the body.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from connector.adapters import marker_value
from connector.adapters.base import WebhookEvent, WebhookRejected
from connector.circuit import CircuitBreaker
from connector.config import HttpSettings, ZnunySettings
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
from connector.ids import INVALID_TICKET_ID, load_json, parse_id
from connector.metrics import Metrics

log = logging.getLogger(__name__)

HELPDESK: Final = "znuny"
SERVER_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

NOTE_SUBJECT: Final = "AI triage"
DRAFT_SUBJECT: Final = "AI draft reply for the agent (not sent to the customer)"
# The charset spelling the web service documents for article content types.
ARTICLE_CONTENT_TYPE: Final = "text/plain; charset=utf8"

# Operation error codes are "<Operation>.<Reason>"; the reason decides what the caller does.
_ERROR_BY_REASON: Final[Mapping[str, type[HelpdeskError]]] = {
    "AuthFail": AuthError,
    "InvalidSessionID": AuthError,
    "SessionInvalid": AuthError,
    "AccessDenied": AuthError,
    "NotValidTicketID": NotFoundError,
    "NotTicketData": NotFoundError,
    "InvalidParameter": ConflictError,
    "MissingParameter": BadRequestError,
    "WrongStructure": BadRequestError,
    "EmptyRequest": BadRequestError,
    "InvalidConfiguration": HelpdeskConfigError,
}
# Reasons that mean "this session is no good": worth one new session before giving up.
_SESSION_REASONS: Final = frozenset({"AuthFail", "InvalidSessionID", "SessionInvalid"})
_UNKNOWN_ROUTE_TEXT: Final = "determine Operation"
_FIELD_NAME: Final = re.compile(r"[A-Za-z0-9]+")
# OTRS 5 has article types instead of IsVisibleForCustomer; these are the internal ones.
_INTERNAL_ARTICLE_TYPES: Final = frozenset(
    {"note-internal", "note-report", "email-internal", "email-notification-int", "chat-internal"}
)


def error_for_code(code: str) -> type[HelpdeskError]:
    """The error class for an operation error code such as ``TicketGet.AccessDenied``."""
    reason = code.rsplit(".", 1)[-1]
    return _ERROR_BY_REASON.get(reason, ServerError)


def _is_session_failure(code: str) -> bool:
    return code.rsplit(".", 1)[-1] in _SESSION_REASONS


# -- server time ------------------------------------------------------------------------


class ServerClock:
    """Converts between aware datetimes and the server's local ``YYYY-MM-DD HH:MM:SS``."""

    def __init__(self, zone_name: str) -> None:
        self.zone: tzinfo
        if zone_name.upper() in ("UTC", "ETC/UTC", "Z"):
            # No time zone database needed for the most common setting.
            self.zone = UTC
            return
        try:
            self.zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"znuny.server_time_zone: unknown time zone {zone_name!r} "
                "(an IANA name such as Europe/Berlin; the tzdata package provides them)"
            ) from None

    def parse(self, text: object) -> datetime | None:
        if not isinstance(text, str) or not text.strip():
            return None
        try:
            naive = datetime.strptime(text.strip()[:19], SERVER_TIME_FORMAT)
        except ValueError:
            return None
        return naive.replace(tzinfo=self.zone)

    def format(self, when: datetime) -> str:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(self.zone).strftime(SERVER_TIME_FORMAT)


def _shift_server_text(text: str, seconds: int) -> str:
    """``text`` moved by whole seconds, as the server writes times (local, naive)."""
    moved = datetime.strptime(text, SERVER_TIME_FORMAT) + timedelta(seconds=seconds)
    return moved.strftime(SERVER_TIME_FORMAT)


# -- paging by change time ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedTicket:
    """A ticket as one listing page describes it."""

    id: int
    changed: str  # the server's own text, which orders exactly as the server's search does
    updated_at: datetime
    needs_triage: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.changed, self.id)

    @property
    def ref(self) -> TicketRef:
        return TicketRef(id=self.id, updated_at=self.updated_at)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """The ids one TicketSearch answered, in its order, and the server's time then."""

    ids: tuple[int, ...]
    server_now: str | None = None


SearchFn = Callable[[str | None, str | None, int], SearchPage]
DescribeFn = Callable[[Sequence[int]], list[ListedTicket]]


class ChangeTimeWalk:
    """Pages through TicketSearch, which has no offset, by last change time and id.

    Each page asks for tickets changed at or after the newest change time seen so
    far (the server compares with ``>=``), so the boundary second is read again
    and de-duplicated. Rows at the newest second of a page are held back until the
    next page shows that second is complete, so rows come out ordered by (change
    time, id) across pages. A page whose rows all share one second cannot move the
    boundary, so that second is fetched whole with a larger limit, then the walk
    goes on from the next second. A page identical to the previous one stops the
    walk (a server that ignores the sort would otherwise loop), and so does the
    page cap.

    The walk never goes past its start: from the first answer's ``Date`` header on,
    searches are limited to tickets changed before that instant, and a row found to
    have changed after it (edited while the walk ran) is left for the next walk,
    unread, rather than letting it pull the boundary past tickets not yet seen.

    ``complete`` is true when the walk reached the end rather than a cap.
    """

    def __init__(
        self,
        search: SearchFn,
        describe: DescribeFn,
        *,
        since: str | None,
        page_size: int,
        max_pages: int,
        now_text: Callable[[], str],
    ) -> None:
        if page_size < 1 or max_pages < 1:
            raise ValueError("page_size and max_pages must be at least 1")
        self._search = search
        self._describe = describe
        self._since = since
        self._page_size = page_size
        self._max_pages = max_pages
        self._now_text = now_text
        self.pages = 0
        self.complete = False
        self._seen: dict[int, ListedTicket] = {}
        self._cutoff = ""

    def __iter__(self) -> Iterator[ListedTicket]:
        bound = self._since
        older: str | None = None
        held: list[ListedTicket] = []
        previous: tuple[int, ...] | None = None
        while self.pages < self._max_pages:
            page = self._search(bound, older, self._page_size)
            self.pages += 1
            if not self._cutoff:
                self._cutoff = page.server_now or self._now_text()
                older = _shift_server_text(self._cutoff, -1)
            ids = _unique(page.ids)
            if ids == previous:
                log.warning(
                    "ticket search answered the same page twice; stopping this walk",
                    extra={"helpdesk": HELPDESK, "pages": self.pages},
                )
                return
            previous = ids
            fresh = self._take(ids)
            on_page = [self._seen[i] for i in ids if i in self._seen]
            if len(ids) < self._page_size or not on_page:
                self.complete = True
                yield from sorted(held + fresh, key=_row_key)
                return
            newest = max(row.changed for row in on_page)
            if min(row.changed for row in on_page) == newest:
                whole = self._whole_second(newest)
                if whole is None:
                    return
                yield from sorted(held + fresh + whole, key=_row_key)
                held = []
                bound = _shift_server_text(newest, 1)
                continue
            pending = held + fresh
            yield from sorted((r for r in pending if r.changed < newest), key=_row_key)
            held = [r for r in pending if r.changed == newest]
            bound = newest
        log.info(
            "ticket walk stopped at the page cap; the rest follows in the next poll",
            extra={"helpdesk": HELPDESK, "pages": self.pages},
        )

    def _take(self, ids: Sequence[int]) -> list[ListedTicket]:
        """Describe the ids not seen yet; keep those that changed before the walk began."""
        unseen = [i for i in ids if i not in self._seen]
        if not unseen:
            return []
        kept = []
        for row in self._describe(unseen):
            if row.changed >= self._cutoff or row.id in self._seen:
                continue
            self._seen[row.id] = row
            kept.append(row)
        return kept

    def _whole_second(self, second: str) -> list[ListedTicket] | None:
        """Every ticket changed in ``second``, or None when they exceed the page budget."""
        budget = (self._max_pages - self.pages) * self._page_size
        if budget < 1:
            return None
        page = self._search(second, second, budget)
        ids = _unique(page.ids)
        self.pages += max(1, -(-len(ids) // self._page_size))
        if len(ids) >= budget:
            log.warning(
                "more tickets changed in one second than this poll may read; "
                "raise ingest.max_pages or ingest.page_size",
                extra={"helpdesk": HELPDESK, "tickets": len(ids)},
            )
            return None
        rows: list[ListedTicket] = []
        for start in range(0, len(ids), self._page_size):
            rows.extend(self._take(ids[start : start + self._page_size]))
        return rows


def _row_key(row: ListedTicket) -> tuple[str, int]:
    return row.key


def _unique(ids: Sequence[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(ids))


def merge_walks(walks: Sequence[ChangeTimeWalk]) -> Iterator[ListedTicket]:
    """Rows of several walks in (change time, id) order, each ticket once.

    Stops as soon as a walk that ended at its cap runs dry: rows of the other walks
    beyond that point could overtake tickets the capped walk has not read yet, and a
    caller that keeps its cursor at the last row must not skip those.
    """
    iterators = [iter(walk) for walk in walks]
    heads: dict[int, ListedTicket] = {}

    def advance(index: int) -> bool:
        row = next(iterators[index], None)
        if row is None:
            heads.pop(index, None)
            return walks[index].complete
        heads[index] = row
        return True

    for index in range(len(iterators)):
        if not advance(index):
            return
    yielded: set[int] = set()
    while heads:
        index = min(heads, key=lambda i: heads[i].key)
        row = heads[index]
        if row.id not in yielded:
            yielded.add(row.id)
            yield row
        if not advance(index):
            return


# -- the adapter ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer:
    data: dict[str, Any]
    server_now: datetime | None


class ZnunyAdapter:
    """``HelpdeskAdapter`` for Znuny, OTRS 6 and OTOBO (GenericTicketConnectorREST)."""

    kind = HELPDESK
    supports_webhooks = True

    def __init__(
        self,
        settings: ZnunySettings,
        client: HttpClient,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if settings.password is None:
            raise ConfigError("znuny.password: required (or znuny.password_file)")
        for name, value in (
            ("marker_field", settings.marker_field),
            ("tags_field", settings.tags_field),
        ):
            if value is not None and not _FIELD_NAME.fullmatch(value):
                raise ConfigError(
                    f"znuny.{name}: dynamic field names are letters and digits only, got {value!r}"
                )
        self._settings = settings
        self._routes = settings.routes
        self._http = client
        self._now = now
        self._clock = ServerClock(settings.server_time_zone)
        self._session_lock = threading.Lock()
        self._session_id: str | None = None

    @classmethod
    def from_settings(
        cls,
        settings: ZnunySettings,
        http: HttpSettings,
        *,
        metrics: Metrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
        breaker: CircuitBreaker | None = None,
    ) -> ZnunyAdapter:
        client = HttpClient(
            helpdesk=HELPDESK,
            base_url=settings.url,
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
        """Credentials, the search route and the dynamic fields, read from one ticket."""
        if self._settings.use_session:
            self._session()
        if self._routes.ticket_search_method == "POST":
            # Proves the added route exists and takes a JSON body with the condition.
            self._search(newer=None, older=None, limit=1, condition={"Empty": 1})
        found = self._search(newer=None, older=None, limit=1, condition=None)
        if not found.ids:
            log.info(
                "no open ticket to check the dynamic fields against; checked at first ticket",
                extra={"helpdesk": HELPDESK},
            )
            return
        raw = self._get_tickets(found.ids[:1], articles=False)
        names = set(_dynamic_fields(raw[0])) if raw else set()
        for setting, name in (
            ("marker_field", self._settings.marker_field),
            ("tags_field", self._settings.tags_field),
        ):
            if name is not None and name not in names:
                raise HelpdeskConfigError(
                    f"dynamic field named by znuny.{setting} does not exist or is not valid",
                    helpdesk=HELPDESK,
                    method="GET",
                    endpoint=self._routes.ticket_get,
                )

    def changed_since(
        self, since: datetime | None, *, page_size: int, max_pages: int
    ) -> Iterator[TicketRef]:
        start = self._clock.format(since) if since is not None else None
        for row in merge_walks(self._walks(start, page_size, max_pages)):
            if row.needs_triage:
                yield row.ref

    def untriaged(self, *, page_size: int, max_pages: int) -> Iterator[TicketRef]:
        return self.changed_since(None, page_size=page_size, max_pages=max_pages)

    def get_ticket(self, ticket_id: int) -> Ticket:
        try:
            raw = self._get_tickets([ticket_id], articles=True)
        except AuthError as error:
            # A deleted ticket answers AccessDenied too; reporting it as our credentials
            # failing would mark the sidecar unhealthy and retry it forever.
            if not (error.code or "").startswith("TicketGet.") or not _is_unreadable_ticket(error):
                raise
            raise NotFoundError(
                "ticket not readable",
                helpdesk=HELPDESK,
                method="GET",
                endpoint=self._routes.ticket_get,
                status=error.status,
                ticket_id=ticket_id,
                code=error.code,
            ) from error
        if not raw:
            raise NotFoundError(
                "ticket not found",
                helpdesk=HELPDESK,
                method="GET",
                endpoint=self._routes.ticket_get,
                ticket_id=ticket_id,
            )
        return self._ticket_from(raw[0], ticket_id)

    def queues(self) -> list[str]:
        # The web service has no queue list operation; the configured list is the truth.
        return list(self._settings.queues)

    def priorities(self) -> list[str]:
        return list(self._settings.priorities)

    def agents(self, queue: str) -> list[Agent]:
        # No operation of the web service lists users or their queue permissions.
        return []

    def claim(self, ticket_id: int, claim: Claim) -> ClaimResult:
        """Write the claim into the marker field unless a marker is there; read it back.

        The field holds one value, so the last writer wins: a worker that reads
        another's claim back has lost the race. A ``failed`` value counts as done
        here too: another worker gave up on the ticket meanwhile.
        """
        before = marker_value.parse(self._read_marker(ticket_id))
        if (before.marker is not None or before.failed) and not before.retriage_requested:
            return ClaimResult(claims=(), triaged=True)
        written = marker_value.claimed(claim)
        self._set_marker(ticket_id, written)
        value = self._read_marker(ticket_id)
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
        fields = self._field_changes(change)
        changed = tuple(name for name, value in fields if getattr(ticket, name) != value)
        skipped: list[str] = []
        request: dict[str, Any] = {}
        if fields:
            request["Ticket"] = {name.capitalize(): value for name, value in fields}

        note_due = False
        if change.note:
            if _posted(change.note, NOTE, change.run_id, ticket):
                skipped.append("note")
            else:
                note_due = True
                request["Article"] = _internal_article(NOTE_SUBJECT, change.note)

        tags_changed = False
        if change.add_tags or change.remove_tags:
            if self._settings.tags_field is None:
                skipped.append("tags")
            else:
                tags = (ticket.tags | change.add_tags) - change.remove_tags
                if tags != ticket.tags:
                    tags_changed = True
                    request["DynamicField"] = [
                        {"Name": self._settings.tags_field, "Value": sorted(tags)}
                    ]

        note_created = False
        if request:
            try:
                answer = self._update(ticket.id, request, with_article=note_due)
            except ConflictError as error:
                raise self._named_refusal(error, fields) from None
            note_created = note_due and self._confirm_article(answer, ticket.id)
        if fields:
            self._confirm_fields(ticket.id, fields)

        draft_created = False
        if change.draft:
            if _posted(change.draft, DRAFT, change.run_id, ticket):
                skipped.append("draft")
            else:
                answer = self._update(
                    ticket.id,
                    {"Article": _internal_article(DRAFT_SUBJECT, change.draft)},
                    with_article=True,
                )
                draft_created = self._confirm_article(answer, ticket.id)
        if tags_changed:
            changed += ("tags",)
        return ApplyResult(
            ticket_id=ticket.id,
            changed=changed,
            skipped=tuple(skipped),
            note_created=note_created,
            draft_created=draft_created,
        )

    def finish(self, ticket_id: int, claim: Claim, model_version: str) -> None:
        # One value holds request, marker and claim, so one write does all three.
        self._set_marker(ticket_id, marker_value.triaged(claim.run_id, model_version, self._now()))

    def release(self, ticket_id: int, claim: Claim) -> None:
        if self._read_marker(ticket_id) == marker_value.claimed(claim):
            self._set_marker(ticket_id, "")

    def mark_failed(self, ticket_id: int, claim: Claim | None) -> None:
        self._set_marker(ticket_id, marker_value.failed(self._now()))

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        self._check_secret(headers)
        try:
            payload = load_json(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected("malformed", "body is not JSON") from None
        if not isinstance(payload, dict):
            raise WebhookRejected("malformed", "body is not a JSON object")
        ticket = payload.get("Ticket")
        event = payload.get("Event")
        # The first TicketID present decides: a bad one is refused, not skipped.
        raw_id = next(
            (
                part["TicketID"]
                for part in (ticket, event)
                if isinstance(part, dict) and part.get("TicketID") is not None
            ),
            None,
        )
        if raw_id is None:
            raise WebhookRejected("malformed", "no ticket id (TicketID) in Ticket or Event")
        ticket_id = parse_id(raw_id)
        if ticket_id is None:
            raise WebhookRejected("malformed", INVALID_TICKET_ID)
        name = event.get("Event") if isinstance(event, dict) else None
        return WebhookEvent(ticket_id=ticket_id, event=name if isinstance(name, str) else None)

    def close(self) -> None:
        self._http.close()

    # -- webhook secret -----------------------------------------------------------------

    def _check_secret(self, headers: Mapping[str, str]) -> None:
        secret = self._settings.webhook_secret
        if secret is None:
            # Fail closed: without a secret anyone could make the sidecar read tickets.
            raise WebhookRejected("missing_signature", "znuny.webhook_secret is not set")
        expected = secret.get_secret_value().encode("utf-8")
        presented = [
            value.encode("utf-8")
            for value in (
                headers.get(self._settings.webhook_secret_header.lower()),
                _basic_auth_password(headers.get("authorization")),
            )
            if value
        ]
        if not presented:
            raise WebhookRejected("missing_signature")
        # Compare every candidate, so timing does not tell which one was looked at.
        matches = [hmac.compare_digest(value, expected) for value in presented]
        if not any(matches):
            raise WebhookRejected("bad_signature")

    # -- searching --------------------------------------------------------------------------

    def _walks(self, since: str | None, page_size: int, max_pages: int) -> list[ChangeTimeWalk]:
        """One walk per search condition: with GET, one unfiltered walk checked after reading."""
        if self._routes.ticket_search_method == "POST":
            # A triage-worthy marker is empty, a claim (maybe of a run that died) or a
            # re-triage request; operators are AND-ed, so that is two searches.
            conditions: list[dict[str, Any] | None] = [
                {"Empty": 1},
                {"Like": [f"{marker_value.CLAIMED} *", marker_value.RETRIAGE]},
            ]
        else:
            conditions = [None]
        return [
            ChangeTimeWalk(
                self._searcher(condition),
                self._describe,
                since=since,
                page_size=page_size,
                max_pages=max_pages,
                now_text=lambda: self._clock.format(self._now()),
            )
            for condition in conditions
        ]

    def _searcher(self, condition: dict[str, Any] | None) -> SearchFn:
        def search(newer: str | None, older: str | None, limit: int) -> SearchPage:
            return self._search(newer=newer, older=older, limit=limit, condition=condition)

        return search

    def _search(
        self, *, newer: str | None, older: str | None, limit: int, condition: dict[str, Any] | None
    ) -> SearchPage:
        query: dict[str, Any] = {
            "StateType": list(self._settings.open_state_types),
            "SortBy": "Changed",
            "OrderBy": "Up",
            "Limit": limit,
        }
        if newer is not None:
            query["TicketLastChangeTimeNewerDate"] = newer
        if older is not None:
            query["TicketLastChangeTimeOlderDate"] = older
        if condition is not None:
            query[f"DynamicField_{self._settings.marker_field}"] = condition
        method = self._routes.ticket_search_method
        answer = self._call(method, self._routes.ticket_search, data=query, retry=True)
        ids = _id_list(answer.data.get("TicketID"))
        if ids is None:
            raise ServerError(
                "search answer has no ticket id list",
                helpdesk=HELPDESK,
                method=method,
                endpoint=self._routes.ticket_search,
            )
        server_now = self._clock.format(answer.server_now) if answer.server_now else None
        return SearchPage(ids=tuple(ids), server_now=server_now)

    def _describe(self, ids: Sequence[int]) -> list[ListedTicket]:
        rows = []
        for raw in self._get_tickets_tolerant(ids):
            ticket_id = parse_id(raw.get("TicketID"))
            changed = raw.get("Changed")
            updated_at = self._clock.parse(changed)
            if ticket_id is None or updated_at is None or not isinstance(changed, str):
                continue
            state = marker_value.parse(self._field_text(raw, self._settings.marker_field))
            needs = (state.marker is None and not state.failed) or state.retriage_requested
            rows.append(ListedTicket(ticket_id, changed.strip()[:19], updated_at, needs))
        return rows

    def _get_tickets_tolerant(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """Several tickets in one TicketGet; one by one when one of them is refused.

        TicketGet fails as a whole when any id is not readable, and a ticket that
        was deleted after the search answers AccessDenied like a forbidden one.
        """
        try:
            return self._get_tickets(ids, articles=False)
        except (AuthError, NotFoundError) as error:
            if not _is_unreadable_ticket(error):
                raise
        rows = []
        for ticket_id in ids if len(ids) > 1 else ():
            try:
                rows.extend(self._get_tickets([ticket_id], articles=False))
            except (AuthError, NotFoundError) as error:
                if not _is_unreadable_ticket(error):
                    raise
                log.info(
                    "ticket listed by the search is not readable; skipped",
                    extra={"helpdesk": HELPDESK, "ticket_id": ticket_id, "code": error.code},
                )
        return rows

    # -- reading ------------------------------------------------------------------------------

    def _get_tickets(self, ids: Sequence[int], *, articles: bool) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"DynamicFields": 1}
        if articles:
            query["AllArticles"] = 1
        single = ids[0] if len(ids) == 1 else None
        answer = self._call(
            "GET",
            self._routes.ticket_get,
            path={"id": ",".join(str(i) for i in ids)},
            data=query,
            ticket_id=single,
        )
        tickets = answer.data.get("Ticket")
        if isinstance(tickets, dict):  # defensive: a mapping layer may unwrap one ticket
            tickets = [tickets]
        if not isinstance(tickets, list):
            raise ServerError(
                "ticket answer has no Ticket list",
                helpdesk=HELPDESK,
                method="GET",
                endpoint=self._routes.ticket_get,
                ticket_id=single,
            )
        return [t for t in tickets if isinstance(t, dict)]

    def _ticket_from(self, raw: Mapping[str, Any], ticket_id: int) -> Ticket:
        articles = [a for a in _list(raw.get("Article")) if isinstance(a, dict)]
        customer = next((a for a in articles if _sender(a) == "customer"), None)
        state = marker_value.parse(self._field_text(raw, self._settings.marker_field))
        internal_agent = [a for a in articles if _sender(a) == "agent" and _is_internal(a)]
        return Ticket(
            id=parse_id(raw.get("TicketID")) or ticket_id,
            subject=_text(raw.get("Title")),
            body=_text(customer.get("Body")) if customer else "",
            content_type=_mime_type(customer.get("ContentType")) if customer else "text/plain",
            number=_text(raw.get("TicketNumber")),
            queue=_optional_text(raw.get("Queue")),
            priority=_optional_text(raw.get("Priority")),
            owner=_optional_text(raw.get("Owner")),
            state=_optional_text(raw.get("State")),
            tags=self._tags(raw),
            created_at=self._clock.parse(raw.get("Created")),
            updated_at=self._clock.parse(raw.get("Changed")),
            marker=state.marker,
            # TicketGet names the last changer by user id only, and the web service
            # has no cheap way to learn our own id; the marker keeps our writes from
            # re-triggering triage instead (see docs/znuny.md).
            updated_by_self=False,
            has_customer_article=customer is not None,
            claims=(state.claim,) if state.claim is not None else (),
            footers=find_footers(_text(a.get("Body")) for a in internal_agent),
            retriage_requested=state.retriage_requested,
            failed=state.failed,
        )

    def _tags(self, raw: Mapping[str, Any]) -> frozenset[str]:
        name = self._settings.tags_field
        if name is None:
            return frozenset()
        value = _dynamic_fields(raw).get(name)
        if isinstance(value, list):
            return frozenset(str(v) for v in value if v not in (None, ""))
        if isinstance(value, str) and value:
            return frozenset({value})
        return frozenset()

    def _field_text(self, raw: Mapping[str, Any], name: str) -> str | None:
        value = _dynamic_fields(raw).get(name)
        if isinstance(value, list):  # a field configured as a multiselect by mistake
            value = value[0] if value else None
        return value if isinstance(value, str) else None

    def _read_marker(self, ticket_id: int) -> str:
        raw = self._get_tickets([ticket_id], articles=False)
        if not raw:
            raise NotFoundError(
                "ticket not found",
                helpdesk=HELPDESK,
                method="GET",
                endpoint=self._routes.ticket_get,
                ticket_id=ticket_id,
            )
        return (self._field_text(raw[0], self._settings.marker_field) or "").strip()

    # -- writing ----------------------------------------------------------------------------

    def _set_marker(self, ticket_id: int, value: str) -> None:
        # Setting a field to a value is idempotent, so these updates may be retried.
        self._update(
            ticket_id,
            {"DynamicField": [{"Name": self._settings.marker_field, "Value": value}]},
            with_article=False,
        )

    def _update(self, ticket_id: int, request: dict[str, Any], *, with_article: bool) -> _Answer:
        # An update that creates an article is not retried blindly: a lost answer
        # would post the note twice. The footer check catches it on the next run.
        return self._call(
            self._routes.ticket_update_method,
            self._routes.ticket_update,
            path={"id": ticket_id},
            data=request,
            ticket_id=ticket_id,
            retry=not with_article,
        )

    def _named_refusal(self, error: ConflictError, fields: Sequence[tuple[str, str]]) -> Exception:
        """Znuny's bare ``TicketUpdate.InvalidParameter``, with the values it may mean.

        Znuny names neither the field nor the value; a queue listed in
        ``znuny.queues`` that Znuny lacks is the usual cause.
        """
        if not (error.code or "").endswith("InvalidParameter") or not fields:
            return error
        values = ", ".join(f"{name} {value!r}" for name, value in fields)
        hint = ""
        queue = dict(fields).get("queue")
        if queue is not None and queue in self._settings.queues:
            hint = f"; is queue {queue!r} (listed in znuny.queues) really in Znuny?"
        return ConflictError(
            f"Znuny refused the update as InvalidParameter, setting {values}{hint}",
            helpdesk=HELPDESK,
            method=error.method,
            endpoint=error.endpoint,
            status=error.status,
            ticket_id=error.ticket_id,
            code=error.code,
        )

    def _field_changes(self, change: ChangeSet) -> list[tuple[str, str]]:
        wanted = (("queue", change.queue), ("priority", change.priority), ("owner", change.owner))
        return [(name, value) for name, value in wanted if value]

    def _confirm_fields(self, ticket_id: int, fields: Sequence[tuple[str, str]]) -> None:
        """TicketUpdate answers success even when a field did not change: read it back."""
        raw = self._get_tickets([ticket_id], articles=False)
        current = raw[0] if raw else {}
        for name, value in fields:
            if _optional_text(current.get(name.capitalize())) != value:
                raise ConflictError(
                    f"{name} change did not take",
                    helpdesk=HELPDESK,
                    method=self._routes.ticket_update_method,
                    endpoint=self._routes.ticket_update,
                    ticket_id=ticket_id,
                )

    def _confirm_article(self, answer: _Answer, ticket_id: int) -> bool:
        created = answer.data.get("ArticleID") or answer.data.get("ArticleIDs")
        if not created:
            raise ServerError(
                "article not confirmed by the update answer",
                helpdesk=HELPDESK,
                method=self._routes.ticket_update_method,
                endpoint=self._routes.ticket_update,
                ticket_id=ticket_id,
            )
        return True

    # -- one operation call ---------------------------------------------------------------

    def _call(
        self,
        method: str,
        endpoint: str,
        *,
        data: Mapping[str, Any],
        path: Mapping[str, object] | None = None,
        ticket_id: int | None = None,
        retry: bool | None = None,
    ) -> _Answer:
        """Send one operation with credentials; on a session failure, renew it once."""
        for attempt in (1, 2):
            session = self._session() if self._settings.use_session else None
            payload = {**data, **self._credentials(session)}
            response = self._http.request(
                method,
                endpoint,
                path=path,
                params=payload if method == "GET" else None,
                json=None if method == "GET" else payload,
                ticket_id=ticket_id,
                retry=retry,
                ok_statuses=frozenset({500}),
            )
            where: dict[str, Any] = {
                "helpdesk": HELPDESK,
                "method": method,
                "endpoint": endpoint,
                "ticket_id": ticket_id,
            }
            if response.status_code == 500:
                raise self._counted(_fault(response, where))
            body = _json_object(response, where)
            error = body.get("Error")
            if error is None:
                return _Answer(body, _server_date(response))
            code = str(error.get("ErrorCode") or "") if isinstance(error, dict) else ""
            if session is not None and attempt == 1 and _is_session_failure(code):
                log.info(
                    "znuny session no longer accepted; creating a new one",
                    extra={"helpdesk": HELPDESK, "endpoint": endpoint, "code": code},
                )
                self._forget_session(session)
                continue
            error_class = error_for_code(code) if code else ServerError
            raise self._counted(
                error_class(
                    "operation refused" if code else "operation error without a code",
                    status=response.status_code,
                    code=code or None,
                    **where,
                )
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _credentials(self, session: str | None) -> dict[str, str]:
        if session is not None:
            return {"SessionID": session}
        password = self._settings.password
        assert password is not None  # checked in __init__
        return {"UserLogin": self._settings.username, "Password": password.get_secret_value()}

    def _session(self) -> str:
        with self._session_lock:
            if self._session_id is None:
                self._session_id = self._create_session()
            return self._session_id

    def _forget_session(self, stale: str) -> None:
        with self._session_lock:
            # Another thread may already have replaced it.
            if self._session_id == stale:
                self._session_id = None

    def _create_session(self) -> str:
        endpoint = self._routes.session_create
        password = self._settings.password
        assert password is not None  # checked in __init__
        response = self._http.request(
            "POST",
            endpoint,
            json={"UserLogin": self._settings.username, "Password": password.get_secret_value()},
            retry=True,  # a second session is harmless
            ok_statuses=frozenset({500}),
        )
        where: dict[str, Any] = {
            "helpdesk": HELPDESK,
            "method": "POST",
            "endpoint": endpoint,
            "ticket_id": None,
        }
        if response.status_code == 500:
            raise self._counted(_fault(response, where))
        body = _json_object(response, where)
        session = body.get("SessionID")
        if isinstance(session, str) and session:
            return session
        error = body.get("Error")
        code = str(error.get("ErrorCode") or "") if isinstance(error, dict) else ""
        error_class = error_for_code(code) if code else ServerError
        raise self._counted(
            error_class(
                "session not created",
                status=response.status_code,
                code=code or None,
                **where,
            )
        )

    def _counted(self, error: HelpdeskError) -> HelpdeskError:
        # Errors inside an HTTP 200 (and the 500s handled here) never reach the
        # HTTP layer's error counter, so they are counted here.
        metrics = self._http.metrics
        if metrics is not None:
            metrics.helpdesk_errors.labels(helpdesk=HELPDESK, kind=error.kind).inc()
        return error


# -- helpers for answers --------------------------------------------------------------------


def _is_unreadable_ticket(error: HelpdeskError) -> bool:
    """A refusal about one ticket (gone, or not ours to read), not about our credentials."""
    return (error.code or "").endswith((".AccessDenied", ".NotValidTicketID", ".NotTicketData"))


def _fault(response: requests.Response, where: Mapping[str, Any]) -> HelpdeskError:
    """An HTTP 500: a wrong route is the operator's to fix, anything else the server's."""
    text = response.text[:500]
    if _UNKNOWN_ROUTE_TEXT in text:
        return HelpdeskConfigError(
            "no route for this method and path: check znuny.routes and the web service",
            status=500,
            **where,
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "faultcode" in body:
        return ServerError("operation failed without an error code", status=500, **where)
    return ServerError("server error", status=500, **where)


def _json_object(response: requests.Response, where: Mapping[str, Any]) -> dict[str, Any]:
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ServerError("answer is not a JSON object", status=response.status_code, **where)
    return body


def _server_date(response: requests.Response) -> datetime | None:
    value = response.headers.get("Date")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _internal_article(subject: str, body: str) -> dict[str, Any]:
    # IsVisibleForCustomer defaults to 1 on the server: a note without it is public.
    return {
        "CommunicationChannel": "Internal",
        "IsVisibleForCustomer": 0,
        "SenderType": "agent",
        "Subject": subject,
        "Body": body,
        "ContentType": ARTICLE_CONTENT_TYPE,
    }


def _posted(text: str, kind: str, run_id: str, ticket: Ticket) -> bool:
    """Whether the note or draft ``text`` (ending in its footer) is already on the ticket."""
    own = set(find_footers([text]))
    if run_id:
        own.add(footer(kind, run_id))
    return bool(own & ticket.footers)


def _dynamic_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for item in _list(raw.get("DynamicField")):
        if isinstance(item, dict) and isinstance(item.get("Name"), str):
            fields[item["Name"]] = item.get("Value")
    return fields


def _id_list(value: object) -> list[int] | None:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    ids = [parse_id(item) for item in items]
    if any(i is None for i in ids):
        return None
    return [i for i in ids if i is not None]


def _list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return []


def _sender(article: Mapping[str, Any]) -> str:
    return _text(article.get("SenderType")).strip().lower()


def _is_internal(article: Mapping[str, Any]) -> bool:
    visible = article.get("IsVisibleForCustomer")
    if visible is not None:
        return str(visible).strip() == "0"
    return _text(article.get("ArticleType")).strip().lower() in _INTERNAL_ARTICLE_TYPES


def _mime_type(content_type: object) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``: the body arrives already decoded."""
    mime = _text(content_type).split(";", 1)[0].strip().lower()
    return mime or "text/plain"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _basic_auth_password(value: str | None) -> str | None:
    if not value or value[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


__all__ = [
    "ChangeTimeWalk",
    "ListedTicket",
    "SearchPage",
    "ServerClock",
    "ZnunyAdapter",
    "error_for_code",
    "merge_walks",
]
