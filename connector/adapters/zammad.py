"""Zammad, through its REST API v1: search, read, claim, write back, verify webhooks.

Details confirmed in Zammad's own source (zammad/zammad), beyond what its API
documentation says:

- **Tag order.** ``GET /tags`` lists a ticket's tags ordered by the tag row's
  id, i.e. by when each was added (``Tag.tag_list`` in app/models/tag.rb:
  ``reorder('tags.id, tag_items.name')``; ``order(:id)`` in older releases).
  Claim arbitration relies on it: every worker reads the claims in the same
  order. ``POST /tags/add`` answers 201 ``true``, also when the tag is already
  there (compared case-insensitively, keeping the stored spelling);
  ``DELETE /tags/remove`` answers 200 ``true`` and removes only the exact name,
  so tags are removed by the spelling the ticket's tag list shows. Triage's own
  tags (marker, ``retriage``, claims, labels) are matched case-insensitively.
- **New tags.** ``POST /tags/add`` answers 403 when the "new tags" setting is
  off and the user lacks ``admin.tag`` (``Tag.tag_allowed?``). Claim tags are
  new every run, so that setting must stay on (Zammad's default) or the triage
  user needs ``admin.tag``; docs/zammad.md says so.
- **Search.** ``GET /tickets/search`` caps ``per_page`` (or ``limit``) at 200
  and defaults to 50; ``expand=true`` answers a flat list of tickets with
  names, otherwise ``{"tickets": [ids], "tickets_count", "assets"}`` (or,
  with ``full=true`` in newer releases, ``{"record_ids", "assets",
  "total_count"}``). All three are read. ``GET /tickets`` caps ``per_page``
  at 100 and orders by id.
- **Query syntax.** The query goes to Elasticsearch as ``query_string`` with
  ``default_operator: AND`` (``SearchIndexBackend.search_by_index`` in
  lib/search_index_backend.rb); a query Elasticsearch rejects gives an empty
  result, not an error, so the query must be right. Values are quoted: tags and
  names are analysed text, and a quoted value matches the whole tag as a phrase
  (unquoted, ``ai-triaged`` would be the two words ``ai`` AND ``triaged``
  anywhere in the tags). Lucene's parser does not give ``NOT`` boolean
  precedence: ``NOT a OR b`` means "b and not a". The "not yet triaged, or
  re-triage requested" filter is therefore written
  ``((*:* NOT tags:(...)) OR tags:"retriage")``. Times are given as a range,
  ``updated_at:[2026-11-24T10:00:00Z TO *]``: inside brackets the colons of
  the time need no escaping, unlike in ``updated_at:>=...``.
- **One ticket in one call.** ``GET /tickets/{id}?all=true`` answers
  ``TicketsController#ticket_all`` (``Ticket::AssetsAll`` in newer releases):
  ``{"ticket_id", "ticket_article_ids", "assets": {"Ticket": {"<id>": ...},
  "TicketArticle": {"<id>": ...}, "User": {...}, ...}, "links", "tags",
  "mentions", "form_meta"}``. ``ticket_article_ids`` lists the articles the
  user may see in the ticket's order; assets hold
  ``attributes_with_association_ids``, so the ticket has ``group_id``,
  ``priority_id`` and ``state_id`` but no names, and articles ``sender_id``
  but no sender name; ``tags`` is ``ticket.tag_list`` (the order above).
  ``expand=true`` is checked first in ``show``, so the two are never sent
  together. The adapter turns the ids into names with the group, priority and
  state tables it caches (re-read every minute, and for an id it has not seen,
  at most every five seconds); an id still unknown after that is named by one
  ``expand=true`` read. One request per read instead of three (ticket,
  articles, tags).
- **Update with a note.** ``PUT /tickets/{id}`` applies the fields and then
  creates the ``article`` inside one ``ticket.with_lock`` block; the answer is
  the ticket (with names when ``expand=true``). A name Zammad cannot find is a
  422 ``No lookup value found for 'group': "..."``.
- **Agents of a group.** ``GET /users/search`` accepts ``permissions[]`` (roles
  with that permission) and ``group_ids[<id>]=<access>`` (users with that
  access to the group, ``User.group_access``); only ``full`` access lets an
  agent own a ticket. ``query=*`` matches every user.
- **Shared drafts.** ``GET /tickets/{id}/shared_draft`` answers
  ``{"shared_draft_id": null, "assets": null}`` when there is none; ``PUT``
  creates or replaces the ticket's one draft (``new_article``,
  ``ticket_attributes``, ``form_id``). The REST endpoint does not check the
  group's ``shared_drafts`` flag (the UI does), so this adapter checks it.
- **Webhooks.** ``X-Hub-Signature: sha1=<hex>`` is HMAC-SHA1 of the request
  body keyed with the webhook's signature token (lib/user_agent.rb), sent only
  when a token is set; ``X-Zammad-Delivery`` and ``X-Zammad-Trigger`` come
  with every delivery.

Writes that create something (the note in the ``PUT``, a draft posted as a
note) are never retried blindly: when one fails in a way that may or may not
have reached Zammad, the adapter reads the ticket's articles and looks for the
note's footer before giving up, so a retry of the ticket never posts twice.
Tag writes and the shared-draft ``PUT`` are idempotent and retried.

Without Elasticsearch (``use_search: false``) there is no server-side filter.
The adapter then walks ``GET /tickets`` from the newest page backwards
(finding the last page takes about log2(pages) requests), keeps open tickets
updated since the cursor, and reads each one's tags: one extra request per
candidate. A candidate whose tags cannot be read (its own 500 or 4xx) is handed
over anyway, for the worker to retry and mark, and the scan goes on; an outage
(timeouts, 502-504, the circuit open) still ends the scan. Only the newest
``max_pages`` pages are looked at, so an old ticket reopened with a
``retriage`` tag is found by a sweep with enough pages. Fine for a few thousand
tickets; use Elasticsearch beyond that.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from connector.adapters.base import WebhookEvent, WebhookRejected
from connector.circuit import CircuitBreaker
from connector.config import HttpSettings, MarkerSettings, ZammadSettings
from connector.domain import Agent, ApplyResult, ChangeSet, Claim, ClaimResult, Ticket, TicketRef
from connector.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    HelpdeskConfigError,
    NotFoundError,
    RetryableError,
    ServerError,
    TicketError,
)
from connector.footer import find_footers
from connector.http import HttpClient, RetryPolicy, Timeouts
from connector.ids import INVALID_TICKET_ID, load_json, parse_id
from connector.metrics import Metrics

HELPDESK = "zammad"

# Endpoints, relative to https://HOST/api/v1. Metrics label calls with these templates.
ME = "/users/me"
USER = "/users/{id}"
USERS_SEARCH = "/users/search"
GROUPS = "/groups"
PRIORITIES = "/ticket_priorities"
STATES = "/ticket_states"
TICKETS = "/tickets"
TICKET = "/tickets/{id}"
TICKET_SEARCH = "/tickets/search"
ARTICLES = "/ticket_articles"
ARTICLES_BY_TICKET = "/ticket_articles/by_ticket/{id}"
TAGS = "/tags"
TAG_ADD = "/tags/add"
TAG_REMOVE = "/tags/remove"
SHARED_DRAFT = "/tickets/{id}/shared_draft"

SEARCH_MAX_PER_PAGE = 200  # Zammad caps search pages here, silently
LIST_MAX_PER_PAGE = 100  # and ticket list pages here
USERS_PER_PAGE = 100
log = logging.getLogger("connector.zammad")

NOBODY_ID = 1  # Zammad's placeholder owner "-"
# How long the set of agents who may own tickets of a group is reused.
OWNER_ACCESS_TTL_SECONDS = 60.0
GROUP_CACHE_SECONDS = 60.0
NAMES_CACHE_SECONDS = 60.0  # id -> name tables for groups, priorities and states
# An id unknown right after a read does not trigger another read sooner than this.
NAMES_RETRY_SECONDS = 5.0
OWNER_COUNT_MAX_PAGES = 25
SEEN_TAGS_MAX = 4096
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class PagePaginator(Generic[T]):
    """Walks numbered pages (1, 2, ...) and says why it stopped.

    Stops on an empty page, a short page (fewer items than asked for: the
    caller clamps ``per_page`` to the server's cap, so a short page is the
    last), a page with nothing new (a server that ignores ``page`` answers the
    same page forever), or after ``max_pages``. Items seen on an earlier page
    are not yielded again.
    """

    def __init__(
        self,
        fetch: Callable[[int], list[T]],
        *,
        per_page: int,
        max_pages: int,
        key: Callable[[T], object],
    ) -> None:
        self._fetch = fetch
        self._per_page = per_page
        self._max_pages = max_pages
        self._key = key
        self.pages_fetched = 0
        self.stopped_by: str | None = None  # empty, short, repeated, max_pages

    def __iter__(self) -> Iterator[T]:
        seen: set[object] = set()
        for page in range(1, self._max_pages + 1):
            items = self._fetch(page)
            self.pages_fetched += 1
            if not items:
                self.stopped_by = "empty"
                return
            fresh = [item for item in items if self._key(item) not in seen]
            if not fresh:
                self.stopped_by = "repeated"
                return
            for item in fresh:
                seen.add(self._key(item))
                yield item
            if len(items) < self._per_page:
                self.stopped_by = "short"
                return
        self.stopped_by = "max_pages"


@dataclass(frozen=True, slots=True)
class _Group:
    id: int
    name: str
    shared_drafts: bool


@dataclass(frozen=True, slots=True)
class _Names:
    """One id -> name lookup table (inactive entries included) and when it was read."""

    read_at: float
    by_id: Mapping[int, str]


def api_base(url: str) -> str:
    """The REST base from the configured URL, with or without ``/api/v1`` written out."""
    base = url.rstrip("/")
    return base if base.endswith("/api/v1") else base + "/api/v1"


def http_client_for(
    settings: ZammadSettings,
    http: HttpSettings,
    *,
    metrics: Metrics | None = None,
    sleep: Callable[[float], None] = time.sleep,
    breaker: CircuitBreaker | None = None,
) -> HttpClient:
    """The Zammad adapter's HttpClient: token (else basic) auth, timeouts, retries."""
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if settings.token is not None and settings.token.get_secret_value():
        headers["Authorization"] = f"Token token={settings.token.get_secret_value()}"
    elif settings.username and settings.password is not None:
        auth = (settings.username, settings.password.get_secret_value())
    else:
        raise ConfigError("zammad: set zammad.token, or zammad.username and zammad.password")
    return HttpClient(
        helpdesk=HELPDESK,
        base_url=api_base(settings.url),
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


class ZammadAdapter:
    """``HelpdeskAdapter`` for Zammad. Thread-safe: workers share one instance."""

    kind = HELPDESK
    supports_webhooks = True

    def __init__(
        self,
        settings: ZammadSettings,
        markers: MarkerSettings,
        http: HttpSettings | None = None,
        *,
        metrics: Metrics | None = None,
        client: HttpClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.settings = settings
        self.markers = markers
        self._http = client or http_client_for(
            settings, http or HttpSettings(), metrics=metrics, sleep=sleep, breaker=breaker
        )
        self._clock = clock
        self._metrics = metrics
        self._lock = threading.Lock()
        self._me: int | None = None
        self._full_access: dict[int, tuple[float, frozenset[int]]] = {}
        self._groups_via_user = False
        self._groups_cache: tuple[float, dict[str, _Group]] | None = None
        self._names: dict[str, _Names] = {}
        # One reader refreshes a table while the other workers wait for its answer.
        self._names_refresh = threading.Lock()
        self._last_page_hint: dict[int, int] = {}
        # Tags as last read or written, per ticket: lets ``finish`` skip removing a
        # re-triage tag that was not there. Bounded; a miss just costs the removal.
        self._seen_tags: OrderedDict[int, frozenset[str]] = OrderedDict()

    # -- start-up ----------------------------------------------------------------------

    def check(self) -> None:
        """Credentials work (``GET /users/me``) and every configured open state exists."""
        self._fetch_me()
        states = self._http.request_json("GET", STATES)
        if not isinstance(states, list):
            raise self._unexpected("GET", STATES)
        names = {s.get("name") for s in states if isinstance(s, Mapping) and s.get("active", True)}
        missing = [s for s in self.settings.open_states if s not in names]
        if missing:
            raise HelpdeskConfigError(
                f"zammad.open_states names states Zammad does not have: {', '.join(missing)}",
                helpdesk=HELPDESK,
                method="GET",
                endpoint=STATES,
            )

    def _my_id(self) -> int:
        """The triage user's id: its own edits carry it as ``updated_by_id``."""
        with self._lock:
            if self._me is not None:
                return self._me
        return self._fetch_me()

    def _fetch_me(self) -> int:
        me = self._http.request_json("GET", ME)
        if not isinstance(me, Mapping) or not isinstance(me.get("id"), int):
            raise self._unexpected("GET", ME)
        with self._lock:
            self._me = int(me["id"])
            return self._me

    # -- finding tickets ---------------------------------------------------------------------------

    def changed_since(
        self, since: datetime | None, *, page_size: int, max_pages: int
    ) -> Iterator[TicketRef]:
        if not self.settings.use_search:
            return self._scan(since, page_size=page_size, max_pages=max_pages)
        return self._search(self.search_query(since), page_size=page_size, max_pages=max_pages)

    def untriaged(self, *, page_size: int, max_pages: int) -> Iterator[TicketRef]:
        return self.changed_since(None, page_size=page_size, max_pages=max_pages)

    def search_query(self, since: datetime | None) -> str:
        """The Elasticsearch query for open tickets that need triage, changed since ``since``."""
        m = self.markers
        parts = []
        if since is not None:
            parts.append(f"updated_at:[{_es_time(since)} TO *]")
        parts.append(f"state.name:({_any_of(self.settings.open_states)})")
        done = _any_of([m.triaged_tag, m.error_tag])
        parts.append(f"((*:* NOT tags:({done})) OR tags:{_quote(m.retriage_tag)})")
        return " AND ".join(parts)

    def _search(self, query: str, *, page_size: int, max_pages: int) -> Iterator[TicketRef]:
        per_page = max(1, min(page_size, SEARCH_MAX_PER_PAGE))

        def fetch(page: int) -> list[TicketRef]:
            answer = self._http.request_json(
                "GET",
                TICKET_SEARCH,
                params={
                    "query": query,
                    "sort_by": "updated_at",
                    "order_by": "asc",
                    "page": page,
                    "per_page": per_page,
                    "expand": "true",
                },
            )
            return [_ref(item) for item in search_items(answer)]

        yield from PagePaginator(fetch, per_page=per_page, max_pages=max_pages, key=_ref_id)

    def _scan(
        self, since: datetime | None, *, page_size: int, max_pages: int
    ) -> Iterator[TicketRef]:
        """Search without Elasticsearch: newest list pages first, filtered here (see module doc)."""
        per_page = max(1, min(page_size, LIST_MAX_PER_PAGE))
        pages: dict[int, list[Mapping[str, Any]]] = {}

        def fetch(page: int) -> list[Mapping[str, Any]]:
            if page not in pages:
                answer = self._http.request_json(
                    "GET", TICKETS, params={"page": page, "per_page": per_page, "expand": "true"}
                )
                if not isinstance(answer, list):
                    raise self._unexpected("GET", TICKETS)
                pages[page] = [row for row in answer if isinstance(row, Mapping)]
            return pages[page]

        last = self._last_page(fetch, per_page)
        open_states = set(self.settings.open_states)
        candidates: list[TicketRef] = []
        for page in range(last, max(0, last - max_pages), -1):
            for row in fetch(page):
                if row.get("state") not in open_states:
                    continue
                ref = _ref(row)
                if since is None or ref.updated_at >= since:
                    candidates.append(ref)
        for ref in sorted(candidates, key=lambda r: (r.updated_at, r.id)):
            try:
                tags = self._tags(ref.id)
            except NotFoundError:
                continue  # deleted since it was listed
            except (ServerError, TicketError):
                # This ticket's trouble, not the listing's: one poison ticket must not
                # fail every poll. Hand it over unread; the worker reads it, retries with
                # backoff and marks it triage-error if it keeps failing.
                yield ref
                continue
            if self._needs_triage(tags):
                yield ref

    def _last_page(self, fetch: Callable[[int], list[Mapping[str, Any]]], per_page: int) -> int:
        """The last non-empty list page (0 without tickets), found by doubling then bisecting."""
        with self._lock:
            page = self._last_page_hint.get(per_page, 1)
        full, empty = 0, 0
        for _ in range(64):
            rows = fetch(page)
            if rows and len(rows) < per_page:
                full = page
                empty = page + 1
                break
            if rows:
                full = page
                page *= 2
            else:
                empty = page
                break
        while empty - full > 1:
            middle = (full + empty) // 2
            rows = fetch(middle)
            if rows and len(rows) < per_page:
                full, empty = middle, middle + 1
            elif rows:
                full = middle
            else:
                empty = middle
        with self._lock:
            self._last_page_hint[per_page] = max(1, full)
        return full

    def _needs_triage(self, tags: Iterable[str]) -> bool:
        lowered = {t.lower() for t in tags}
        if self.markers.retriage_tag.lower() in lowered:
            return True
        return (
            self.markers.triaged_tag.lower() not in lowered
            and self.markers.error_tag.lower() not in lowered
        )

    # -- reading one ticket ------------------------------------------------------------------------

    def get_ticket(self, ticket_id: int) -> Ticket:
        """The ticket, its articles and tags in one ``all=true`` call (see the module doc)."""
        answer = self._http.request_json(
            "GET", TICKET, path={"id": ticket_id}, params={"all": "true"}, ticket_id=ticket_id
        )
        raw, articles, tags = self._unpack_all(ticket_id, answer)
        self._remember_tags(ticket_id, tags)
        named = self._with_names(ticket_id, raw)
        return self.ticket_from(named, articles, tags, me=self._my_id())

    def _unpack_all(
        self, ticket_id: int, answer: Any
    ) -> tuple[Mapping[str, Any], list[Mapping[str, Any]], list[str]]:
        """The ticket record, its articles in ticket order and its tags from an ``all`` answer."""
        assets = answer.get("assets") if isinstance(answer, Mapping) else None
        tickets = assets.get("Ticket") if isinstance(assets, Mapping) else None
        raw = tickets.get(str(ticket_id)) if isinstance(tickets, Mapping) else None
        article_ids = answer.get("ticket_article_ids") if isinstance(answer, Mapping) else None
        tags = answer.get("tags") if isinstance(answer, Mapping) else None
        if (
            not isinstance(raw, Mapping)
            or raw.get("id") != ticket_id
            or not isinstance(article_ids, list)
            or not isinstance(tags, list)
        ):
            raise self._unexpected("GET", TICKET, ticket_id)
        records = assets.get("TicketArticle") if isinstance(assets, Mapping) else None
        records = records if isinstance(records, Mapping) else {}
        articles = [
            record
            for article_id in article_ids
            if isinstance(record := records.get(str(article_id)), Mapping)
        ]
        return raw, articles, [str(t) for t in tags]

    def _with_names(self, ticket_id: int, raw: Mapping[str, Any]) -> Mapping[str, Any]:
        """The ticket with ``group``, ``priority`` and ``state`` names added from the tables."""
        names: dict[str, str | None] = {}
        for kind in ("group", "priority", "state"):
            item_id = raw.get(f"{kind}_id")
            names[kind] = self._name(kind, item_id) if isinstance(item_id, int) else None
            if isinstance(item_id, int) and names[kind] is None:
                # Not in the table even after a fresh read (a group this user may
                # not list, say): ask Zammad for this ticket's names instead.
                expanded = self._http.request_json(
                    "GET",
                    TICKET,
                    path={"id": ticket_id},
                    params={"expand": "true"},
                    ticket_id=ticket_id,
                )
                if not isinstance(expanded, Mapping):
                    raise self._unexpected("GET", TICKET, ticket_id)
                return {**raw, **{k: expanded.get(k) for k in ("group", "priority", "state")}}
        return {**raw, **names}

    def _name(self, kind: str, item_id: int) -> str | None:
        """Name of a group, priority or state by id: cached, re-read when stale or unknown."""
        name, fresh = self._cached_name(kind, item_id)
        if fresh:
            return name
        with self._names_refresh:
            name, fresh = self._cached_name(kind, item_id)  # another worker may have read it
            if fresh:
                return name
            return self._read_names(kind, self._clock()).by_id.get(item_id)

    def _cached_name(self, kind: str, item_id: int) -> tuple[str | None, bool]:
        """The cached name and whether it may be used without reading the table again."""
        with self._lock:
            table = self._names.get(kind)
        if table is None:
            return None, False
        age = self._clock() - table.read_at
        name = table.by_id.get(item_id)
        if name is None:
            return None, age < NAMES_RETRY_SECONDS
        return name, age < NAMES_CACHE_SECONDS

    def _read_names(self, kind: str, now: float) -> _Names:
        if kind == "group":
            self._groups(refresh=True)
            with self._lock:
                return self._names[kind]
        endpoint = PRIORITIES if kind == "priority" else STATES
        answer = self._http.request_json("GET", endpoint)
        if not isinstance(answer, list):
            raise self._unexpected("GET", endpoint)
        table = _Names(now, _by_id(answer))
        with self._lock:
            self._names[kind] = table
        return table

    def ticket_from(
        self,
        raw: Mapping[str, Any],
        articles: list[Mapping[str, Any]],
        tags: list[str],
        *,
        me: int | None,
    ) -> Ticket:
        """A domain ``Ticket`` from Zammad's ticket (with names), articles and tags."""
        first = next((a for a in articles if _sender(a) == "Customer"), None)
        lowered = {t.lower() for t in tags}
        m = self.markers
        return Ticket(
            id=int(raw["id"]),
            subject=str(raw.get("title") or ""),
            body=str(first.get("body") or "") if first else "",
            content_type=str(first.get("content_type") or "text/plain") if first else "text/plain",
            number=str(raw.get("number") or ""),
            queue=_str_or_none(raw.get("group")),
            priority=_str_or_none(raw.get("priority")),
            owner=_owner(raw),
            state=_str_or_none(raw.get("state")),
            tags=frozenset(tags),
            created_at=_parse_time(raw.get("created_at")),
            updated_at=_parse_time(raw.get("updated_at")),
            marker=m.triaged_tag if m.triaged_tag.lower() in lowered else None,
            updated_by_self=me is not None and raw.get("updated_by_id") == me,
            has_customer_article=first is not None,
            claims=parse_claims(tags, m.claim_prefix),
            footers=_posted_footers(articles),
            retriage_requested=m.retriage_tag.lower() in lowered,
            failed=m.error_tag.lower() in lowered,
        )

    def _articles(self, ticket_id: int) -> list[Mapping[str, Any]]:
        answer = self._http.request_json(
            "GET", ARTICLES_BY_TICKET, path={"id": ticket_id}, ticket_id=ticket_id
        )
        if not isinstance(answer, list):
            raise self._unexpected("GET", ARTICLES_BY_TICKET, ticket_id)
        return [a for a in answer if isinstance(a, Mapping)]

    def _tags(self, ticket_id: int) -> list[str]:
        answer = self._http.request_json(
            "GET", TAGS, params={"object": "Ticket", "o_id": ticket_id}, ticket_id=ticket_id
        )
        if not isinstance(answer, Mapping) or not isinstance(answer.get("tags", []), list):
            raise self._unexpected("GET", TAGS, ticket_id)
        tags = [str(t) for t in answer.get("tags") or []]
        self._remember_tags(ticket_id, tags)
        return tags

    # -- lookups -----------------------------------------------------------------------------------

    def queues(self) -> list[str]:
        return list(self._groups(refresh=True))

    def priorities(self) -> list[str]:
        answer = self._http.request_json("GET", PRIORITIES)
        if not isinstance(answer, list):
            raise self._unexpected("GET", PRIORITIES)
        return [
            str(p["name"])
            for p in answer
            if isinstance(p, Mapping) and p.get("name") and p.get("active", True)
        ]

    def agents(self, queue: str) -> list[Agent]:
        """Active agents with full access to the group (owners must have it), with their loads."""
        group = self._groups().get(queue)
        if group is None:
            return []
        users = self._possible_owners(group)
        counts = self._open_ticket_counts([int(u["id"]) for u in users])
        return [
            Agent(
                id=str(u["id"]),
                login=str(u.get("login") or u["id"]),
                open_tickets=counts.get(int(u["id"]), 0),
            )
            for u in users
        ]

    def _possible_owners(self, group: _Group) -> list[Mapping[str, Any]]:
        """Active agents with full access to ``group`` (by their own or their roles' rights)."""
        me = self._my_id()

        def fetch(page: int) -> list[Mapping[str, Any]]:
            answer = self._http.request_json(
                "GET",
                USERS_SEARCH,
                params={
                    "query": "*",
                    "permissions[]": "ticket.agent",
                    f"group_ids[{group.id}]": "full",
                    "page": page,
                    "per_page": USERS_PER_PAGE,
                },
            )
            if not isinstance(answer, list):
                raise self._unexpected("GET", USERS_SEARCH)
            return [u for u in answer if isinstance(u, Mapping) and isinstance(u.get("id"), int)]

        return [
            u
            for u in PagePaginator(fetch, per_page=USERS_PER_PAGE, max_pages=20, key=_id_key)
            if u.get("active", True) and u["id"] not in (me, NOBODY_ID)
        ]

    def _may_own(self, user_id: int, group_name: str) -> bool:
        """Whether Zammad keeps ``user_id`` as owner in ``group_name`` (cached for a minute)."""
        group = self._groups().get(group_name)
        if group is None:
            return False
        now = self._clock()
        with self._lock:
            cached = self._full_access.get(group.id)
        if cached is None or now - cached[0] > OWNER_ACCESS_TTL_SECONDS:
            ids = frozenset(int(u["id"]) for u in self._possible_owners(group))
            cached = (now, ids)
            with self._lock:
                self._full_access[group.id] = cached
        return user_id in cached[1]

    def _owner_event(self, ticket_id: int, outcome: str, message: str) -> None:
        if self._metrics is not None:
            self._metrics.owner_conflicts.labels(helpdesk=HELPDESK, outcome=outcome).inc()
        log.warning(message, extra={"ticket_id": ticket_id, "outcome": outcome})

    def _open_ticket_counts(self, user_ids: list[int]) -> dict[int, int]:
        counts: dict[int, int] = dict.fromkeys(user_ids, 0)
        if not user_ids:
            return counts
        states = _any_of(self.settings.open_states)
        if self.settings.use_search:
            owners = " OR ".join(str(i) for i in user_ids)
            query = f"owner_id:({owners}) AND state.name:({states})"

            def fetch(page: int) -> list[Mapping[str, Any]]:
                answer = self._http.request_json(
                    "GET",
                    TICKET_SEARCH,
                    params={
                        "query": query,
                        "page": page,
                        "per_page": SEARCH_MAX_PER_PAGE,
                        "expand": "true",
                    },
                )
                return search_items(answer)

            rows: Iterable[Mapping[str, Any]] = PagePaginator(
                fetch,
                per_page=SEARCH_MAX_PER_PAGE,
                max_pages=OWNER_COUNT_MAX_PAGES,
                key=_id_key,
            )
        else:

            def fetch_list(page: int) -> list[Mapping[str, Any]]:
                answer = self._http.request_json(
                    "GET",
                    TICKETS,
                    params={"page": page, "per_page": LIST_MAX_PER_PAGE, "expand": "true"},
                )
                if not isinstance(answer, list):
                    raise self._unexpected("GET", TICKETS)
                return [row for row in answer if isinstance(row, Mapping)]

            open_states = set(self.settings.open_states)
            rows = (
                row
                for row in PagePaginator(
                    fetch_list,
                    per_page=LIST_MAX_PER_PAGE,
                    max_pages=OWNER_COUNT_MAX_PAGES * 2,
                    key=_id_key,
                )
                if row.get("state") in open_states
            )
        for row in rows:
            owner = row.get("owner_id")
            if isinstance(owner, int) and owner in counts:
                counts[owner] += 1
        return counts

    def _groups(self, *, refresh: bool = False) -> dict[str, _Group]:
        """Active groups by name, cached briefly: apply() asks for every draft."""
        now = self._clock()
        with self._lock:
            cached = self._groups_cache
        if cached is not None and not refresh and now - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        answer = self._group_records()
        groups = {
            str(g["name"]): _Group(
                int(g["id"]), str(g["name"]), bool(g.get("shared_drafts", False))
            )
            for g in answer
            if isinstance(g, Mapping) and g.get("name") and g.get("active", True)
        }
        with self._lock:
            self._groups_cache = (now, groups)
            # Names of every group, inactive ones too: a ticket may still sit in one.
            self._names["group"] = _Names(now, _by_id(answer))
        return groups

    def _group_records(self) -> list[Any]:
        """Every group as Zammad describes it, from ``GET /groups`` where the token may list them.

        Before Zammad 6.5 only ``admin.group`` may list groups. With a token
        holding only ``ticket.agent`` the groups come from the triage user's own
        record instead (``GET /users/{id}?full=true``: User::Assets adds a Group
        asset for each group the user has access to), which are the groups it
        can route tickets into.
        """
        with self._lock:
            via_user = self._groups_via_user
        if not via_user:
            try:
                answer = self._http.request_json("GET", GROUPS)
            except AuthError:
                log.info(
                    "this token may not list groups (Zammad before 6.5 needs admin.group): "
                    "reading the triage user's own groups instead"
                )
                with self._lock:
                    self._groups_via_user = True
            else:
                if not isinstance(answer, list):
                    raise self._unexpected("GET", GROUPS)
                return answer
        me = self._my_id()
        answer = self._http.request_json("GET", USER, path={"id": me}, params={"full": "true"})
        assets = answer.get("assets") if isinstance(answer, Mapping) else None
        records = assets.get("Group") if isinstance(assets, Mapping) else None
        if not isinstance(records, Mapping):
            raise self._unexpected("GET", USER)
        return [r for r in records.values() if isinstance(r, Mapping)]

    # -- claims and markers ------------------------------------------------------------------------

    def claim_tag(self, claim: Claim) -> str:
        """``<prefix><run id>:<unix seconds>[.<microseconds>]``: exact, so it reads back equal."""
        when = claim.created_at if claim.created_at.tzinfo else claim.created_at.replace(tzinfo=UTC)
        delta = when - EPOCH
        seconds = delta.days * 86400 + delta.seconds
        stamp = f"{seconds}.{delta.microseconds:06d}" if delta.microseconds else str(seconds)
        return f"{self.markers.claim_prefix}{claim.run_id}:{stamp}"

    def claim(self, ticket_id: int, claim: Claim) -> ClaimResult:
        """Add the claim tag, then read all tags once: claims in Zammad's order, and the marker."""
        self._tag_add(ticket_id, self.claim_tag(claim))
        tags = self._tags(ticket_id)
        lowered = {t.lower() for t in tags}
        return ClaimResult(
            claims=tuple(parse_claims(tags, self.markers.claim_prefix)),
            triaged=self.markers.triaged_tag.lower() in lowered,
            retriage_requested=self.markers.retriage_tag.lower() in lowered,
        )

    def finish(self, ticket_id: int, claim: Claim, model_version: str) -> None:
        """Clear the re-triage request (and an old failure mark), mark triaged, drop the claim."""
        m = self.markers
        if self._may_have(ticket_id, m.retriage_tag):
            self._tag_remove(ticket_id, m.retriage_tag)
        if self._has(ticket_id, m.error_tag):
            self._tag_remove(
                ticket_id, m.error_tag
            )  # this run succeeded where an earlier one failed
        self._tag_add(ticket_id, m.triaged_tag)
        self._tag_remove(ticket_id, self.claim_tag(claim), unique=True)

    def release(self, ticket_id: int, claim: Claim) -> None:
        self._tag_remove(ticket_id, self.claim_tag(claim), unique=True)

    def mark_failed(self, ticket_id: int, claim: Claim | None) -> None:
        """Mark the failure and consume the re-triage request, or the ticket comes back forever."""
        self._tag_add(ticket_id, self.markers.error_tag)
        if self._may_have(ticket_id, self.markers.retriage_tag):
            self._tag_remove(ticket_id, self.markers.retriage_tag)
        if claim is not None:
            self._tag_remove(ticket_id, self.claim_tag(claim), unique=True)

    def _may_have(self, ticket_id: int, tag: str) -> bool:
        """True unless the tags last seen on the ticket show ``tag`` is not there."""
        seen = self._seen(ticket_id)
        return seen is None or tag.lower() in {t.lower() for t in seen}

    def _has(self, ticket_id: int, tag: str) -> bool:
        seen = self._seen(ticket_id)
        return seen is not None and tag.lower() in {t.lower() for t in seen}

    def _tag_add(self, ticket_id: int, tag: str) -> None:
        # Adding a tag twice is harmless in Zammad, so this POST may be retried.
        self._http.request(
            "POST",
            TAG_ADD,
            json={"object": "Ticket", "o_id": ticket_id, "item": tag},
            ticket_id=ticket_id,
            retry=True,
        )
        self._update_seen(ticket_id, add=tag)

    def _tag_remove(self, ticket_id: int, tag: str, *, unique: bool = False) -> None:
        """Remove ``tag`` in whatever case the ticket has it.

        Zammad's ``tags/add`` ignores case (an admin's ``Retriage`` stays as it
        is) but ``tags/remove`` matches the exact name, so the name is taken from
        the ticket's tag list: as last seen, or read now when none was. A
        ``unique`` tag (a claim: its run id is new) can have no other spelling,
        so an unknown list is not read for it.
        """
        seen = self._seen(ticket_id)
        if seen is None and unique:
            self._remove_exact(ticket_id, tag)
            return
        tags = seen if seen is not None else self._tags(ticket_id)
        for stored in sorted(t for t in tags if t.lower() == tag.lower()):
            self._remove_exact(ticket_id, stored)

    def _remove_exact(self, ticket_id: int, tag: str) -> None:
        self._http.request(
            "DELETE",
            TAG_REMOVE,
            json={"object": "Ticket", "o_id": ticket_id, "item": tag},
            ticket_id=ticket_id,
        )
        self._update_seen(ticket_id, remove=tag)

    def _remember_tags(self, ticket_id: int, tags: Iterable[str]) -> None:
        with self._lock:
            self._seen_tags[ticket_id] = frozenset(tags)
            self._seen_tags.move_to_end(ticket_id)
            while len(self._seen_tags) > SEEN_TAGS_MAX:
                self._seen_tags.popitem(last=False)

    def _update_seen(self, ticket_id: int, *, add: str = "", remove: str = "") -> None:
        with self._lock:
            seen = self._seen_tags.get(ticket_id)
            if seen is None:
                return
            # As Zammad does it: adding a tag present in another case keeps that spelling,
            # removing takes away the exact name only.
            if add and add.lower() not in {t.lower() for t in seen}:
                seen = seen | {add}
            if remove:
                seen = seen - {remove}
            self._seen_tags[ticket_id] = seen

    def _seen(self, ticket_id: int) -> frozenset[str] | None:
        with self._lock:
            return self._seen_tags.get(ticket_id)

    # -- writing back ------------------------------------------------------------------------------

    def apply(self, ticket: Ticket, change: ChangeSet) -> ApplyResult:
        ticket_id = ticket.id
        changed: list[str] = []
        skipped: list[str] = []
        fields: dict[str, Any] = {}
        if change.queue and change.queue != ticket.queue:
            fields["group"] = change.queue
        if change.priority and change.priority != ticket.priority:
            fields["priority"] = change.priority
        if change.owner and change.owner != ticket.owner:
            if change.owner.isdigit():
                fields["owner_id"] = int(change.owner)
            else:
                fields["owner"] = change.owner
        note, owner_moves_away = self._mind_the_owner(ticket, change, fields, skipped)
        article: dict[str, Any] | None = None
        note_footers: frozenset[str] = frozenset()
        if note:
            note_footers = find_footers([note])
            if note_footers & ticket.footers:
                skipped.append("note")
            else:
                article = _note(note, subject="AI triage")
        if fields or article is not None:
            answer = self._update(ticket_id, fields, article, note_footers)
            refused = self._verify_applied(ticket_id, fields, answer)
            if refused:
                skipped.append("owner")
                self._owner_event(
                    ticket_id,
                    "assignment_refused",
                    "Zammad unassigned the owner it was given (inactive, not an agent, or "
                    "without full access to the group)",
                )
            elif ticket.owner is not None and _owner(answer) is None and "owner_id" not in fields:
                self._owner_event(
                    ticket_id,
                    "unassigned_by_move" if owner_moves_away else "unassigned",
                    "Zammad unassigned the ticket's owner on this update",
                )
            changed.extend(
                _FIELD_NAMES[name]
                for name in fields
                if not (refused and _FIELD_NAMES[name] == "owner")
            )
            if article is not None:
                changed.append("note")
        lowered = {t.lower() for t in ticket.tags}
        to_add = sorted(t for t in change.add_tags if t.lower() not in lowered)
        # By the stored spelling (removal is exact), and never a tag this change also adds:
        # Zammad's add was a no-op for it, so removing it would lose the tag.
        adding = {t.lower() for t in change.add_tags}
        unwanted = {t.lower() for t in change.remove_tags} - adding
        to_remove = sorted(t for t in ticket.tags if t.lower() in unwanted)
        for tag in to_add:
            self._tag_add(ticket_id, tag)
        for tag in to_remove:
            self._remove_exact(ticket_id, tag)
        if to_add or to_remove:
            changed.append("tags")
        draft_created = False
        if change.draft:
            group = fields.get("group", ticket.queue)
            outcome = self._write_draft(ticket, change.draft, group)
            if outcome == "skipped":
                skipped.append("draft")
            else:
                changed.append(outcome)
                draft_created = True
        return ApplyResult(
            ticket_id=ticket_id,
            changed=tuple(changed),
            skipped=tuple(skipped),
            note_created=article is not None,
            draft_created=draft_created,
        )

    def _mind_the_owner(
        self, ticket: Ticket, change: ChangeSet, fields: dict[str, Any], skipped: list[str]
    ) -> tuple[str | None, bool]:
        """A move away from the owner's access: keep the group, or move and say so.

        Returns the note to post and whether the move will unassign the owner.
        Zammad unassigns an owner without full access to the new group on save.
        """
        note = change.note
        target = fields.get("group")
        if (
            target is None
            or ticket.owner is None
            or change.owner is not None
            or self._may_own(int(ticket.owner), target)
        ):
            return note, False
        if self.settings.owner_without_access == "keep_queue":
            del fields["group"]
            skipped.append("queue")
            line = (
                f"Queue not changed to {target}: the ticket's owner has no full access to it, "
                "and Zammad would unassign them."
            )
            self._owner_event(ticket.id, "move_skipped", "move skipped to keep the owner")
        else:
            line = (
                f"Moved to {target}, where the ticket's owner has no full access: "
                "Zammad unassigns them."
            )
        moves = self.settings.owner_without_access == "move"
        return (_before_footer(note, line) if note else note), moves

    def _update(
        self,
        ticket_id: int,
        fields: Mapping[str, Any],
        article: Mapping[str, Any] | None,
        note_footers: frozenset[str],
    ) -> Any:
        """One ``PUT``: fields and note together. With a note it is sent once, then checked."""
        body: dict[str, Any] = dict(fields)
        if article is not None:
            body["article"] = article
        try:
            return self._http.request_json(
                "PUT",
                TICKET,
                path={"id": ticket_id},
                params={"expand": "true"},
                json=body,
                ticket_id=ticket_id,
                retry=article is None,
            )
        except RetryableError:
            if (
                article is None
                or not note_footers
                or not self._footer_posted(ticket_id, note_footers)
            ):
                raise
        # The note landed, and with it the fields (same lock, same request); read what was kept.
        return self._http.request_json(
            "GET", TICKET, path={"id": ticket_id}, params={"expand": "true"}, ticket_id=ticket_id
        )

    def _verify_applied(self, ticket_id: int, fields: Mapping[str, Any], answer: Any) -> bool:
        """Zammad answers 200 even when it kept an old value: compare what came back.

        Returns True when Zammad replaced the new owner by "-" (its check that an
        owner is an active agent with full access to the group): reported, not an
        error, since the rest of the update stands.
        """
        if not isinstance(answer, Mapping):
            raise self._unexpected("PUT", TICKET, ticket_id)
        ignored = []
        if "group" in fields and self._group_name(answer) != fields["group"]:
            ignored.append("group")
        if "priority" in fields and answer.get("priority") != fields["priority"]:
            ignored.append("priority")
        owner_asked = "owner_id" in fields or "owner" in fields
        refused = owner_asked and answer.get("owner_id") == NOBODY_ID
        if "owner_id" in fields and answer.get("owner_id") != fields["owner_id"] and not refused:
            ignored.append("owner")
        if (
            "owner" in fields
            and str(answer.get("owner") or "").lower() != fields["owner"].lower()
            and not refused
        ):
            ignored.append("owner")
        if ignored:
            raise ConflictError(
                f"helpdesk answered 200 but did not apply: {', '.join(ignored)}",
                helpdesk=HELPDESK,
                method="PUT",
                endpoint=TICKET,
                status=200,
                ticket_id=ticket_id,
            )
        return refused

    def _group_name(self, answer: Mapping[str, Any]) -> str | None:
        if isinstance(answer.get("group"), str):
            return str(answer["group"])
        by_id = {g.id: g.name for g in self._groups().values()}
        group_id = answer.get("group_id")
        return by_id.get(group_id) if isinstance(group_id, int) else None

    def _write_draft(self, ticket: Ticket, draft: str, group_name: str | None) -> str:
        """Post the draft reply once: shared draft where the group has them, else a draft note."""
        footers = find_footers([draft])
        if footers & ticket.footers:
            return "skipped"
        group = self._groups().get(group_name or "")
        if self.settings.shared_drafts and group is not None and group.shared_drafts:
            current = self._shared_draft_body(ticket.id)
            current_footers = find_footers([current]) if current is not None else frozenset()
            if footers & current_footers:
                return "skipped"
            # A draft without a triage footer is a person's work: never overwrite it.
            if current is None or current_footers:
                self._http.request(
                    "PUT",
                    SHARED_DRAFT,
                    path={"id": ticket.id},
                    json={
                        "form_id": str(uuid.uuid4()),
                        "new_article": {
                            "body": _html(draft),
                            "type": "note",
                            "internal": True,
                            "content_type": "text/html",
                        },
                        "ticket_attributes": {},
                    },
                    ticket_id=ticket.id,
                )
                return "shared_draft"
        note = _note(
            f"Draft reply, not sent to the customer:\n\n{draft}", subject="AI triage: draft reply"
        )
        note["ticket_id"] = ticket.id
        try:
            self._http.request("POST", ARTICLES, json=note, ticket_id=ticket.id, retry=False)
        except RetryableError:
            if not footers or not self._footer_posted(ticket.id, footers):
                raise
        return "draft_note"

    def _shared_draft_body(self, ticket_id: int) -> str | None:
        answer = self._http.request_json(
            "GET", SHARED_DRAFT, path={"id": ticket_id}, ticket_id=ticket_id
        )
        if not isinstance(answer, Mapping) or answer.get("shared_draft_id") is None:
            return None
        assets = answer.get("assets")
        if isinstance(assets, Mapping):
            for key, records in assets.items():
                if "SharedDraftZoom" in str(key) and isinstance(records, Mapping):
                    for record in records.values():
                        new_article = (
                            record.get("new_article") if isinstance(record, Mapping) else None
                        )
                        if isinstance(new_article, Mapping):
                            return str(new_article.get("body") or "")
        return ""

    def _footer_posted(self, ticket_id: int, footers: frozenset[str]) -> bool:
        return bool(_posted_footers(self._articles(ticket_id)) & footers)

    # -- webhooks ----------------------------------------------------------------------------------

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Check ``X-Hub-Signature`` on the raw bytes, then read only the ticket id.

        Fails closed: with ``require_webhook_signature`` on (the default) a delivery
        is refused unless it carries a valid signature, so without a configured
        secret every delivery is refused. Turning it off accepts unsigned
        deliveries, and still checks a signature when a secret is set and one came.
        """
        secret = self.settings.webhook_secret
        key = secret.get_secret_value().encode("utf-8") if secret is not None else b""
        signature = headers.get("x-hub-signature")
        required = self.settings.require_webhook_signature
        if not signature:
            if required:
                detail = "" if key else "zammad.webhook_secret is not set"
                raise WebhookRejected("missing_signature", detail)
        elif key:
            expected = "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()
            given = signature.strip().lower().encode("ascii", "replace")
            if not hmac.compare_digest(given, expected.encode("ascii")):
                raise WebhookRejected("bad_signature")
        elif required:
            raise WebhookRejected("bad_signature", "zammad.webhook_secret is not set")
        try:
            payload = load_json(body)
        except (ValueError, UnicodeDecodeError):
            raise WebhookRejected("malformed", "body is not JSON") from None
        ticket_id = _webhook_ticket_id(payload)
        return WebhookEvent(
            ticket_id=ticket_id,
            delivery_id=headers.get("x-zammad-delivery") or None,
            event=headers.get("x-zammad-trigger") or None,
        )

    def close(self) -> None:
        self._http.close()

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _unexpected(method: str, endpoint: str, ticket_id: int | None = None) -> ServerError:
        return ServerError(
            "unexpected answer shape",
            helpdesk=HELPDESK,
            method=method,
            endpoint=endpoint,
            ticket_id=ticket_id,
        )


_SENDERS = {1: "Agent", 2: "Customer", 3: "System"}  # Ticket::Article::Sender seed ids
_FIELD_NAMES = {"group": "queue", "priority": "priority", "owner_id": "owner", "owner": "owner"}


def search_items(answer: Any) -> list[Mapping[str, Any]]:
    """Ticket records from any of the three search answer shapes (see the module docstring)."""
    if isinstance(answer, list):
        return [item for item in answer if isinstance(item, Mapping) and "id" in item]
    if not isinstance(answer, Mapping):
        raise ServerError(
            "unexpected answer shape", helpdesk=HELPDESK, method="GET", endpoint=TICKET_SEARCH
        )
    ids = answer.get("record_ids")
    if ids is None:
        ids = answer.get("tickets")
    assets = answer.get("assets")
    tickets = assets.get("Ticket") if isinstance(assets, Mapping) else None
    tickets = tickets if isinstance(tickets, Mapping) else {}
    items: list[Mapping[str, Any]] = []
    for entry in ids or []:
        if isinstance(entry, Mapping) and "id" in entry:
            items.append(entry)
        elif isinstance(entry, int) and not isinstance(entry, bool):
            record = tickets.get(str(entry))
            items.append(record if isinstance(record, Mapping) else {"id": entry})
    return items


def parse_claims(tags: Iterable[str], prefix: str) -> tuple[Claim, ...]:
    """Claims from tags ``<prefix><run id>:<unix seconds>[.<microseconds>]``, in tag order."""
    claims = []
    for tag in tags:
        if not tag.startswith(prefix):
            continue
        run_id, sep, stamp = tag[len(prefix) :].rpartition(":")
        if not sep or not run_id:
            continue
        whole, _, fraction = stamp.partition(".")
        if not whole.isdigit() or (fraction and (not fraction.isdigit() or len(fraction) > 6)):
            continue
        micros = int(fraction.ljust(6, "0")) if fraction else 0
        try:
            when = datetime.fromtimestamp(int(whole), UTC).replace(microsecond=micros)
        except (OverflowError, OSError, ValueError):
            continue
        claims.append(Claim(created_at=when, run_id=run_id))
    return tuple(claims)


def _webhook_ticket_id(payload: Any) -> int:
    """The first ticket id the payload carries; an id that is there but not sane is refused.

    Admins may replace the default payload, so three places are looked at. A
    present but bad id is a 400, not a fall-through to the next place: the
    delivery is broken and the helpdesk admin should see why.
    """
    if not isinstance(payload, Mapping):
        raise WebhookRejected("malformed", "no ticket id: body is not a JSON object")
    ticket = payload.get("ticket")
    candidates = [ticket.get("id")] if isinstance(ticket, Mapping) else []
    candidates += [payload.get("ticket_id"), payload.get("id")]
    present = [value for value in candidates if value is not None]
    if not present:
        raise WebhookRejected("malformed", "no ticket id")
    ticket_id = parse_id(present[0])
    if ticket_id is None:
        raise WebhookRejected("malformed", INVALID_TICKET_ID)
    return ticket_id


def _posted_footers(articles: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Footers in internal notes written by agents (triage's own notes and draft notes)."""
    return find_footers(
        str(a.get("body") or "")
        for a in articles
        if a.get("internal") is True and _sender(a) != "Customer"
    )


def _sender(article: Mapping[str, Any]) -> str | None:
    """The article's sender name; from Zammad's default sender ids when names are missing."""
    name = article.get("sender")
    if isinstance(name, str):
        return name
    sender_id = article.get("sender_id")
    return _SENDERS.get(sender_id) if isinstance(sender_id, int) else None


def _note(text: str, *, subject: str) -> dict[str, Any]:
    # internal: true on every note: Zammad's default is false, i.e. visible to the customer.
    return {
        "subject": subject,
        "body": _html(text),
        "content_type": "text/html",
        "type": "note",
        "internal": True,
    }


def _before_footer(note: str, line: str) -> str:
    """``note`` with ``line`` added as a paragraph before its footer (which stays last)."""
    footers = sorted(find_footers([note]))
    if not footers or footers[0] not in note:
        return f"{note}\n\n{line}"
    at = note.rindex(footers[0])
    return f"{note[:at].rstrip()}\n\n{line}\n\n{note[at:]}"


def _html(text: str) -> str:
    """Plain text as HTML: escaped, blank lines as paragraphs, line breaks kept."""
    paragraphs = [p for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return "".join(
        "<p>" + "<br>".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )


def _by_id(records: Iterable[Any]) -> dict[int, str]:
    """``{id: name}`` from a lookup list (groups, priorities, states), inactive ones included."""
    return {
        int(r["id"]): str(r["name"])
        for r in records
        if isinstance(r, Mapping)
        and isinstance(r.get("id"), int)
        and not isinstance(r.get("id"), bool)
        and r.get("name")
    }


def _ref(item: Mapping[str, Any]) -> TicketRef:
    return TicketRef(int(item["id"]), _parse_time(item.get("updated_at")) or EPOCH)


def _ref_id(ref: TicketRef) -> object:
    return ref.id


def _id_key(item: Mapping[str, Any]) -> object:
    return item.get("id")


def _owner(raw: Mapping[str, Any]) -> str | None:
    """The owner's user id as text (what ``Agent.id`` holds), None while unassigned."""
    owner_id = raw.get("owner_id")
    if not isinstance(owner_id, int) or owner_id == NOBODY_ID:
        return None
    return str(owner_id)


def _str_or_none(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _es_time(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _any_of(values: Iterable[str]) -> str:
    return " OR ".join(_quote(v) for v in values)


__all__ = [
    "PagePaginator",
    "ZammadAdapter",
    "api_base",
    "http_client_for",
    "parse_claims",
    "search_items",
]
