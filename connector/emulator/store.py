"""The emulator's in-memory helpdesk: users, groups, tickets, articles, tags and shared drafts.

Pure Python behind one re-entrant lock, so the HTTP layer (one event loop)
and tests (another thread) see consistent data. Every operation that Zammad
guards with a permission check is guarded here the same way, and fails with
``ApiError`` carrying Zammad's status code and ``{"error", "error_human"}`` text.

Behaviour copied from Zammad, with where it was confirmed:

- Tags are listed in the order they were added (``Tag.tag_list`` orders by
  the tag row's id, app/models/tag.rb); adding a tag that is already there
  (case-insensitively) is a no-op that still answers ``true`` and keeps the
  stored spelling; removing matches the exact name only (a different case is a
  no-op that answers ``true``); both touch the ticket's ``updated_at`` but not
  its ``updated_by_id``.
- Names in a write (``group``, ``priority``, ``state``, ``owner``,
  ``customer``) are looked up; an unknown one is a 422 with ``No lookup value
  found for 'group': "Name"``. When both a name and an id are sent, the id wins.
- An article's ``internal`` defaults to false and ``content_type`` to
  ``text/plain``; ``type`` defaults to ``note``; the sender is ``Agent`` for
  an agent and ``Customer`` for a customer unless the request names one.
- ``GET /tickets`` lists by id, ``per_page`` capped at 100; search caps it at 200.

- Owners are checked on every save of an open ticket, as Zammad's
  ``Ticket#check_owner_active`` does (app/models/ticket.rb): an owner who is
  inactive, not an agent, or without *full* access to the ticket's group,
  whether just assigned or kept through a move to another group, is replaced
  by user 1 ("-", unassigned), and the answer is still 200. Closed tickets
  keep their owner. Adapters must read the owner back from the answer.

Besides Zammad's behaviour, the store notes when each ticket was created and
when it first got the triage marker (``timings``), for the end-to-end
benchmark. Search reads each ticket's fields only as the query asks for them
(``_TicketDocument``): a poll pages through a store of thousands of tickets.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connector.emulator import query as q
from connector.emulator.stats import Stats
from connector.emulator.timings import Timings

ROLE_IDS = {"Admin": 1, "Agent": 2, "Customer": 3}
ROLE_PERMISSIONS = {
    "Admin": frozenset({"admin", "admin.user", "admin.group"}),
    "Agent": frozenset({"ticket.agent"}),
    "Customer": frozenset({"ticket.customer"}),
}
ARTICLE_TYPES = {"email": 1, "sms": 2, "chat": 3, "fax": 4, "phone": 5, "note": 10, "web": 11}
ARTICLE_SENDERS = {"Agent": 1, "Customer": 2, "System": 3}
DEFAULT_PRIORITIES = ("1 low", "2 normal", "3 high")
DEFAULT_STATES = ("new", "open", "pending reminder", "closed")
NOBODY_ID = 1  # Zammad's placeholder user "-": owner of unassigned tickets
LIST_MAX_PER_PAGE = 100
SEARCH_MAX_PER_PAGE = 200
SEARCH_DEFAULT_PER_PAGE = 50


class ApiError(Exception):
    """An answer Zammad gives as ``{"error": ..., "error_human": ...}`` with a status."""

    def __init__(self, status: int, error: str, human: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.human = human or error

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_human": self.human}


def iso(when: datetime) -> str:
    """Zammad's timestamp format: UTC, milliseconds, ``Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class User:
    id: int
    login: str
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    roles: tuple[str, ...] = ()
    group_access: dict[int, tuple[str, ...]] = field(default_factory=dict)
    active: bool = True
    password: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset().union(*(ROLE_PERMISSIONS.get(r, frozenset()) for r in self.roles))

    def has(self, permission: str) -> bool:
        return permission in self.permissions

    def access(self, group_id: int, wanted: str) -> bool:
        rights = self.group_access.get(group_id, ())
        return "full" in rights or wanted in rights

    @property
    def fullname(self) -> str:
        return f"{self.firstname} {self.lastname}".strip() or self.login


@dataclass(slots=True)
class Group:
    id: int
    name: str
    active: bool = True
    shared_drafts: bool = True
    note: str = ""


@dataclass(slots=True)
class Named:
    """A priority or a state: an id and a name."""

    id: int
    name: str
    active: bool = True


@dataclass(slots=True)
class Article:
    id: int
    ticket_id: int
    type: str
    sender: str
    body: str
    content_type: str
    internal: bool
    subject: str
    from_: str
    to: str
    created_by_id: int
    created_at: datetime


@dataclass(slots=True)
class SharedDraft:
    id: int
    ticket_id: int
    new_article: dict[str, Any]
    ticket_attributes: dict[str, Any]
    created_by_id: int
    updated_by_id: int
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Ticket:
    id: int
    number: str
    title: str
    group_id: int
    priority_id: int
    state_id: int
    owner_id: int
    customer_id: int
    created_by_id: int
    updated_by_id: int
    created_at: datetime
    updated_at: datetime
    tags: list[str] = field(default_factory=list)
    article_ids: list[int] = field(default_factory=list)


class Store:
    """The whole helpdesk. Public methods take the acting ``User`` and check its rights."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        stats: Stats | None = None,
        timings: Timings | None = None,
        groups_need_admin: bool = False,
    ) -> None:
        self.groups_need_admin = groups_need_admin
        self._lock = threading.RLock()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stats = stats or Stats()
        self.timings = timings or Timings()
        self.clear()

    # -- set-up --------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget everything but the system user, the priorities and the states."""
        with self._lock:
            now = self.clock()
            self.users: dict[int, User] = {
                NOBODY_ID: User(NOBODY_ID, "-", "-", active=False, created_at=now, updated_at=now)
            }
            self.groups: dict[int, Group] = {}
            self.priorities = {i: Named(i, n) for i, n in enumerate(DEFAULT_PRIORITIES, 1)}
            self.states = {i: Named(i, n) for i, n in enumerate(DEFAULT_STATES, 1)}
            self.tickets: dict[int, Ticket] = {}
            self.articles: dict[int, Article] = {}
            self.drafts: dict[int, SharedDraft] = {}  # by ticket id
            self.tokens: dict[str, int] = {}
            self._user_ids = itertools.count(2)
            self._group_ids = itertools.count(1)
            self._ticket_ids = itertools.count(1)
            self._article_ids = itertools.count(1)
            self._draft_ids = itertools.count(1)
            # Ticket ids start again at 1, so times recorded for the old ones must go.
            self.timings.clear()

    def add_group(self, name: str, *, shared_drafts: bool = True, active: bool = True) -> Group:
        with self._lock:
            group = Group(next(self._group_ids), name, active=active, shared_drafts=shared_drafts)
            self.groups[group.id] = group
            return group

    def add_user(
        self,
        login: str,
        *,
        roles: Iterable[str],
        firstname: str = "",
        lastname: str = "",
        email: str = "",
        groups: Mapping[str, Iterable[str]] | None = None,
        password: str | None = None,
        token: str | None = None,
        active: bool = True,
    ) -> User:
        with self._lock:
            now = self.clock()
            access = {
                self._group_by_name(name).id: tuple(rights)
                for name, rights in (groups or {}).items()
            }
            user = User(
                next(self._user_ids),
                login.lower(),
                firstname,
                lastname,
                email,
                tuple(roles),
                access,
                active=active,
                password=password,
                created_at=now,
                updated_at=now,
            )
            self.users[user.id] = user
            if token:
                self.tokens[token] = user.id
            return user

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read several things consistently from another thread."""
        return self._lock

    def find_user(self, login: str) -> User:
        """The user with this login or e-mail address (422 as Zammad's lookups, if none)."""
        with self._lock:
            return self._user_by_login("user", login)

    def issue_token(self, user_id: int) -> str:
        """A new API token for ``user_id`` (tests act as a human agent with it)."""
        with self._lock:
            token = secrets.token_urlsafe(24)
            self.tokens[token] = user_id
            return token

    def set_shared_drafts(self, group_name: str, enabled: bool) -> None:
        with self._lock:
            self._group_by_name(group_name).shared_drafts = enabled

    # -- authentication ----------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> User:
        """The user behind an ``Authorization`` header (``Token token=``, ``Bearer`` or Basic)."""
        if not authorization:
            raise ApiError(401, "Authentication required")
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        with self._lock:
            user: User | None = None
            if scheme in ("token", "bearer"):
                token = credentials.strip()
                if scheme == "token" and token.startswith("token="):
                    token = token[len("token=") :]
                token = token.strip('"')
                user_id = self.tokens.get(token)
                user = self.users.get(user_id) if user_id is not None else None
                if user is None:
                    raise ApiError(401, "Invalid token!")
            elif scheme == "basic":
                user = self._basic_user(credentials)
            else:
                raise ApiError(401, "Authentication required")
            if not user.active:
                raise ApiError(401, "User is inactive.")
            return user

    def _basic_user(self, credentials: str) -> User:
        try:
            login, _, password = base64.b64decode(credentials).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ApiError(401, "Invalid BasicAuth credentials") from None
        for user in self.users.values():
            if (
                user.login == login.lower()
                and user.password
                and secrets.compare_digest(user.password, password)
            ):
                return user
        raise ApiError(401, "Invalid BasicAuth credentials")

    # -- lookups -----------------------------------------------------------------------------------

    def list_groups(self, user: User) -> list[Group]:
        # Zammad before 6.5 (Controllers::GroupsControllerPolicy) lets only admin.group list
        # groups; from 6.5 on agents and customers may too.
        if self.groups_need_admin and not user.has("admin.group"):
            raise ApiError(403, "Not authorized")
        self._require_agent(user)
        with self._lock:
            return list(self.groups.values())

    def show_user(self, viewer: User, user_id: int) -> User:
        """``GET /users/{id}``: agents and admins see anyone; others only themselves."""
        with self._lock:
            user = self.users.get(user_id)
        if user is None:
            raise ApiError(404, "Couldn't find User with 'id'=" + str(user_id))
        if viewer.id != user.id and not (viewer.has("ticket.agent") or viewer.has("admin.user")):
            raise ApiError(403, "Not authorized")
        return user

    def list_priorities(self) -> list[Named]:
        with self._lock:
            return list(self.priorities.values())

    def list_states(self) -> list[Named]:
        with self._lock:
            return list(self.states.values())

    def search_users(
        self,
        user: User,
        *,
        text: str,
        permissions: Iterable[str] = (),
        role_ids: Iterable[int] = (),
        group_access: Mapping[int, str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[User]:
        """Zammad's ``User.search``: agents and admins only; ``*`` matches everyone."""
        if not (user.has("ticket.agent") or user.has("admin.user")):
            raise ApiError(403, "Not authorized")
        wanted_roles = {r for r, i in ROLE_IDS.items() if i in set(role_ids)}
        wanted_permissions = set(permissions)
        needle = text.replace("*", "").strip().lower()
        with self._lock:
            found = []
            for candidate in self.users.values():
                if candidate.id == NOBODY_ID:
                    continue
                if wanted_roles and not wanted_roles & set(candidate.roles):
                    continue
                if wanted_permissions and not wanted_permissions & candidate.permissions:
                    continue
                if group_access and not any(
                    candidate.access(gid, access) for gid, access in group_access.items()
                ):
                    continue
                haystack = " ".join(
                    (candidate.login, candidate.firstname, candidate.lastname, candidate.email)
                ).lower()
                if needle and needle not in haystack:
                    continue
                found.append(candidate)
            found.sort(key=lambda u: u.id)
            return found[offset : offset + limit]

    # -- tickets -----------------------------------------------------------------------------------

    def list_tickets(self, user: User, *, offset: int, limit: int) -> list[Ticket]:
        with self._lock:
            visible = [t for t in self.tickets.values() if self._can_read(user, t)]
            visible.sort(key=lambda t: t.id)
            return visible[offset : offset + limit]

    def get_ticket(self, user: User, ticket_id: int) -> Ticket:
        with self._lock:
            ticket = self.tickets.get(ticket_id)
            if ticket is None:
                raise ApiError(404, f"Couldn't find Ticket with 'id'={ticket_id}")
            if not self._can_read(user, ticket):
                raise ApiError(403, "Not authorized")
            return ticket

    def search_tickets(
        self,
        user: User,
        *,
        query_text: str,
        offset: int,
        limit: int,
        sort_by: str | None,
        order_by: str | None,
    ) -> tuple[list[Ticket], int]:
        """Tickets matching ``query_text`` (see ``query``), sorted, one page and the total."""
        try:
            node = q.parse(query_text)
        except q.QueryError as error:
            raise ApiError(422, f"Unsupported search query: {error}") from None
        sort_field = sort_by if sort_by in ("updated_at", "created_at", "id", "number") else None
        descending = (order_by or "desc").lower() != "asc"
        with self._lock:
            readable = self._readable(user)
            document = _TicketDocument(self)
            hits = []
            for t in self.tickets.values():
                if readable(t):
                    document.ticket = t
                    if node.matches(document):
                        hits.append(t)
            key: Callable[[Ticket], Any]
            if sort_field in ("updated_at", "created_at"):
                key = lambda t: (getattr(t, sort_field), t.id)  # noqa: E731
            elif sort_field == "number":
                key = lambda t: (t.number, t.id)  # noqa: E731
            elif sort_field == "id":
                key = lambda t: t.id  # noqa: E731
            else:
                key = lambda t: (t.updated_at, t.id)  # noqa: E731
            hits.sort(key=key, reverse=descending)
            return hits[offset : offset + limit], len(hits)

    def _readable(self, user: User) -> Callable[[Ticket], bool]:
        """``_can_read`` for one user, with the permission checks done once per search."""
        groups = (
            frozenset(g for g in user.group_access if user.access(g, "read"))
            if user.has("ticket.agent")
            else frozenset()
        )
        own = user.id if user.has("ticket.customer") else None
        return lambda t: t.group_id in groups or t.customer_id == own

    def create_ticket(self, user: User, data: Mapping[str, Any]) -> tuple[Ticket, Article | None]:
        """``POST /tickets``: the ticket, its tags and its first article, as one unit."""
        with self._lock:
            now = self.clock()
            title = str(data.get("title") or "").strip()
            if not title:
                raise ApiError(422, "Title can't be blank")
            customer = self._customer_for(user, data)
            group_id = self._resolve_group(data)
            if group_id is None:
                raise ApiError(422, "Group can't be blank")
            if user.has("ticket.agent") and not user.access(group_id, "create"):
                raise ApiError(403, "Not authorized")
            priority_id = self._resolve_named("priority", self.priorities, data) or 2
            state_id = self._resolve_named("state", self.states, data) or 1
            ticket_id = next(self._ticket_ids)
            ticket = Ticket(
                id=ticket_id,
                number=str(67000 + ticket_id),
                title=title,
                group_id=group_id,
                priority_id=priority_id,
                state_id=state_id,
                owner_id=NOBODY_ID,
                customer_id=customer.id,
                created_by_id=user.id,
                updated_by_id=user.id,
                created_at=now,
                updated_at=now,
            )
            self.tickets[ticket.id] = ticket
            self.timings.created(ticket.id)
            if user.has("ticket.agent"):
                owner_id = self._resolve_owner(data, ticket)
                if owner_id is not None:
                    ticket.owner_id = owner_id
                self._check_owner_active(ticket)
            tags = data.get("tags") or []
            for tag in tags.split(",") if isinstance(tags, str) else tags:
                self._add_tag(ticket, str(tag))
            article = None
            if isinstance(data.get("article"), Mapping) and data["article"]:
                article = self._new_article(user, ticket, data["article"], customer=customer)
            return ticket, article

    def update_ticket(self, user: User, ticket_id: int, data: Mapping[str, Any]) -> Ticket:
        """``PUT /tickets/{id}``: fields, then the article, under one lock (as Zammad does)."""
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            if not self._can_change(user, ticket):
                raise ApiError(403, "Not authorized")
            is_agent = user.has("ticket.agent")
            # Resolve everything before changing anything: a 422 leaves the ticket untouched.
            group_id = self._resolve_group(data)
            if group_id is not None and is_agent and not user.access(group_id, "change"):
                raise ApiError(403, "Not authorized")
            priority_id = self._resolve_named("priority", self.priorities, data)
            state_id = self._resolve_named("state", self.states, data)
            owner_id = self._resolve_owner(data, ticket) if is_agent else None
            article_data = data.get("article")
            if article_data is not None and not isinstance(article_data, Mapping):
                raise ApiError(422, "Invalid article")
            title = data.get("title")
            if group_id is not None:
                ticket.group_id = group_id
            if priority_id is not None:
                ticket.priority_id = priority_id
            if state_id is not None:
                ticket.state_id = state_id
            if owner_id is not None:
                ticket.owner_id = owner_id
            self._check_owner_active(ticket)
            if isinstance(title, str) and title.strip():
                ticket.title = title.strip()
            ticket.updated_at = self.clock()
            ticket.updated_by_id = user.id
            self.stats.ticket(ticket.id, "ticket_updates")
            if article_data:
                self._new_article(user, ticket, article_data)
            return ticket

    def create_tickets_bulk(
        self, templates: Sequence[Mapping[str, Any]], count: int
    ) -> list[Ticket]:
        """``count`` new tickets cycling through ``templates`` (create payloads), for benchmarks.

        Each is created by the customer the payload names, as if written in by mail,
        so it is not the triage user's own edit.
        """
        created = []
        with self._lock:
            for template in itertools.islice(itertools.cycle(templates), count):
                author = self._user_by_login("customer", str(template["customer"]))
                ticket, _ = self.create_ticket(author, template)
                created.append(ticket)
        return created

    def import_ticket(
        self,
        *,
        title: str,
        group: str,
        priority: str,
        state: str,
        customer: str,
        created_at: datetime,
        owner: str | None = None,
        tags: Iterable[str] = (),
        articles: Iterable[Mapping[str, Any]] = (),
    ) -> Ticket:
        """Put a ticket with history in place as if it had arrived ``created_at`` (seeding)."""
        with self._lock:
            customer_user = self._user_by_login("customer", customer)
            owner_user = self._user_by_login("owner", owner) if owner else self.users[NOBODY_ID]
            agent = next(
                (u for u in self.users.values() if u.has("ticket.agent") and u.id != NOBODY_ID),
                owner_user,
            )
            ticket_id = next(self._ticket_ids)
            ticket = Ticket(
                id=ticket_id,
                number=str(67000 + ticket_id),
                title=title,
                group_id=self._group_by_name(group).id,
                priority_id=self._resolve_named("priority", self.priorities, {"priority": priority})
                or 2,
                state_id=self._resolve_named("state", self.states, {"state": state}) or 1,
                owner_id=owner_user.id,
                customer_id=customer_user.id,
                created_by_id=customer_user.id,
                updated_by_id=customer_user.id,
                created_at=created_at,
                updated_at=created_at,
                tags=[t for t in tags if t.strip()],
            )
            self.tickets[ticket.id] = ticket
            self.timings.created(ticket.id)
            for spec in articles:
                sender = str(spec.get("sender") or "Customer")
                author = customer_user if sender == "Customer" else agent
                body = spec.get("body") or ""
                article = Article(
                    id=next(self._article_ids),
                    ticket_id=ticket.id,
                    type=str(spec.get("type") or "email"),
                    sender=sender,
                    body="\n".join(body) if isinstance(body, list) else str(body),
                    content_type=str(spec.get("content_type") or "text/plain"),
                    internal=bool(spec.get("internal", False)),
                    subject=str(spec.get("subject") or title),
                    from_=f"{author.fullname} <{author.email}>",
                    to="",
                    created_by_id=author.id,
                    created_at=created_at,
                )
                self.articles[article.id] = article
                ticket.article_ids.append(article.id)
                ticket.updated_by_id = author.id
            return ticket

    # -- articles ----------------------------------------------------------------------------------

    def articles_of(self, user: User, ticket_id: int) -> list[Article]:
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            articles = [self.articles[i] for i in ticket.article_ids]
            if not user.has("ticket.agent"):
                articles = [a for a in articles if not a.internal]
            return articles

    def create_article(self, user: User, data: Mapping[str, Any]) -> Article:
        with self._lock:
            try:
                ticket_id = int(data.get("ticket_id"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ApiError(422, "Need ticket_id!") from None
            ticket = self.get_ticket(user, ticket_id)
            if not self._can_change(user, ticket):
                raise ApiError(403, "Not authorized")
            return self._new_article(user, ticket, data)

    def _new_article(
        self,
        user: User,
        ticket: Ticket,
        data: Mapping[str, Any],
        *,
        customer: User | None = None,
    ) -> Article:
        body = data.get("body")
        if not isinstance(body, str):
            raise ApiError(422, "Need at least article: body!")
        article_type = str(data.get("type") or "note")
        if article_type not in ARTICLE_TYPES:
            raise ApiError(422, f"No lookup value found for 'type': {article_type!r}")
        default_sender = "Agent" if user.has("ticket.agent") else "Customer"
        sender = str(data.get("sender") or default_sender)
        if sender not in ARTICLE_SENDERS:
            raise ApiError(422, f"No lookup value found for 'sender': {sender!r}")
        internal = data.get("internal", False)
        if not isinstance(internal, bool):
            internal = str(internal).lower() in ("true", "1")
        author = customer if (customer is not None and sender == "Customer") else user
        now = self.clock()
        article = Article(
            id=next(self._article_ids),
            ticket_id=ticket.id,
            type=article_type,
            sender=sender,
            body=body,
            content_type=str(data.get("content_type") or "text/plain"),
            internal=internal,
            subject=str(data.get("subject") or ""),
            from_=str(data.get("from") or f"{author.fullname} <{author.email}>".strip()),
            to=str(data.get("to") or ""),
            created_by_id=user.id,
            created_at=now,
        )
        self.articles[article.id] = article
        ticket.article_ids.append(article.id)
        ticket.updated_at = now
        self.stats.ticket(ticket.id, "articles_created")
        if article_type == "note":
            self.stats.ticket(ticket.id, "notes_created")
            if internal:
                self.stats.ticket(ticket.id, "internal_notes_created")
        return article

    # -- tags --------------------------------------------------------------------------------------

    def tags_of(self, user: User, ticket_id: int) -> list[str]:
        with self._lock:
            return list(self.get_ticket(user, ticket_id).tags)

    def add_tag(self, user: User, ticket_id: int, item: object) -> bool:
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            if not self._can_change(user, ticket):
                raise ApiError(403, "Not authorized")
            return self._add_tag(ticket, self._tag_name(item))

    def remove_tag(self, user: User, ticket_id: int, item: object) -> bool:
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            if not self._can_change(user, ticket):
                raise ApiError(403, "Not authorized")
            # Exact, unlike adding: Zammad looks the tag item up by its exact name,
            # so "retriage" does not remove a stored "Retriage".
            name = self._tag_name(item)
            before = len(ticket.tags)
            ticket.tags[:] = [t for t in ticket.tags if t != name]
            if len(ticket.tags) != before:
                self.stats.ticket(ticket.id, "tags_removed")
            ticket.updated_at = self.clock()
            return True

    def _add_tag(self, ticket: Ticket, name: str) -> bool:
        name = name.strip()
        if not name:
            raise ApiError(422, "Tag name can't be blank")
        if any(t.lower() == name.lower() for t in ticket.tags):
            return True
        ticket.tags.append(name)
        ticket.updated_at = self.clock()
        self.stats.ticket(ticket.id, "tags_added")
        self.timings.tag_added(ticket.id, name)
        return True

    @staticmethod
    def _tag_name(item: object) -> str:
        if not isinstance(item, str) or not item.strip():
            raise ApiError(422, "Tag name can't be blank")
        return item.strip()

    # -- shared drafts -----------------------------------------------------------------------------

    def shared_draft(self, user: User, ticket_id: int) -> SharedDraft | None:
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            if not self._can_change(user, ticket):
                raise ApiError(403, "Not authorized")
            return self.drafts.get(ticket.id)

    def shared_draft_if_allowed(self, user: User, ticket_id: int) -> SharedDraft | None:
        """The ticket's shared draft for an agent who may change the ticket (``all=true``).

        Shared drafts are agents' work (Zammad's ``SharedDraftZoomPolicy``): a
        customer never sees one, even on a ticket of their own.
        """
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            if not (user.has("ticket.agent") and user.access(ticket.group_id, "change")):
                return None
            return self.drafts.get(ticket.id)

    def put_shared_draft(self, user: User, ticket_id: int, data: Mapping[str, Any]) -> SharedDraft:
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            if not self._can_change(user, ticket):
                raise ApiError(403, "Not authorized")
            new_article = data.get("new_article") or {}
            attributes = data.get("ticket_attributes") or {}
            if not isinstance(new_article, Mapping) or not isinstance(attributes, Mapping):
                raise ApiError(422, "Invalid shared draft")
            now = self.clock()
            draft = self.drafts.get(ticket.id)
            if draft is None:
                draft = SharedDraft(
                    next(self._draft_ids), ticket.id, {}, {}, user.id, user.id, now, now
                )
                self.drafts[ticket.id] = draft
            draft.new_article = dict(new_article)
            draft.ticket_attributes = dict(attributes)
            draft.updated_by_id = user.id
            draft.updated_at = now
            self.stats.ticket(ticket.id, "shared_drafts_written")
            return draft

    def delete_shared_draft(self, user: User, ticket_id: int) -> SharedDraft:
        with self._lock:
            ticket = self.get_ticket(user, ticket_id)
            if not self._can_change(user, ticket):
                raise ApiError(403, "Not authorized")
            draft = self.drafts.pop(ticket.id, None)
            if draft is None:
                raise ApiError(404, f"Couldn't find Ticket::SharedDraftZoom for ticket {ticket_id}")
            self.stats.ticket(ticket.id, "shared_drafts_deleted")
            return draft

    # -- rights and lookups ------------------------------------------------------------------------

    @staticmethod
    def _require_agent(user: User) -> None:
        if not (user.has("ticket.agent") or user.has("admin.group")):
            raise ApiError(403, "Not authorized")

    @staticmethod
    def _can_read(user: User, ticket: Ticket) -> bool:
        if user.has("ticket.agent") and user.access(ticket.group_id, "read"):
            return True
        return user.has("ticket.customer") and ticket.customer_id == user.id

    @staticmethod
    def _can_change(user: User, ticket: Ticket) -> bool:
        if user.has("ticket.agent") and user.access(ticket.group_id, "change"):
            return True
        return user.has("ticket.customer") and ticket.customer_id == user.id

    def _group_by_name(self, name: str) -> Group:
        for group in self.groups.values():
            if group.name == name:
                return group
        raise ApiError(422, f"No lookup value found for 'group': {_inspect(name)}")

    def _resolve_group(self, data: Mapping[str, Any]) -> int | None:
        if data.get("group_id") not in (None, ""):
            group_id = _as_id(data["group_id"], "group_id")
            if group_id not in self.groups:
                raise ApiError(422, "Group must exist")
            return group_id
        if data.get("group") not in (None, ""):
            return self._group_by_name(str(data["group"])).id
        return None

    @staticmethod
    def _resolve_named(
        kind: str, table: Mapping[int, Named], data: Mapping[str, Any]
    ) -> int | None:
        if data.get(f"{kind}_id") not in (None, ""):
            item_id = _as_id(data[f"{kind}_id"], f"{kind}_id")
            if item_id not in table:
                raise ApiError(422, f"{kind.capitalize()} must exist")
            return item_id
        if data.get(kind) not in (None, ""):
            name = str(data[kind])
            for item in table.values():
                if item.name == name:
                    return item.id
            raise ApiError(422, f"No lookup value found for '{kind}': {_inspect(name)}")
        return None

    def _user_by_login(self, kind: str, login: str) -> User:
        wanted = login.lower()
        for user in self.users.values():
            if user.login == wanted or (user.email and user.email.lower() == wanted):
                return user
        raise ApiError(422, f"No lookup value found for '{kind}': {_inspect(login)}")

    def _resolve_owner(self, data: Mapping[str, Any], ticket: Ticket) -> int | None:
        if data.get("owner_id") not in (None, ""):
            owner_id = _as_id(data["owner_id"], "owner_id")
            if owner_id not in self.users:
                raise ApiError(422, "Owner must exist")
        elif data.get("owner") not in (None, ""):
            owner_id = self._user_by_login("owner", str(data["owner"])).id
        else:
            return None
        return owner_id

    def _check_owner_active(self, ticket: Ticket) -> None:
        """Unassign an owner who may not own the ticket in its group (see the module docstring)."""
        if ticket.owner_id == NOBODY_ID or self.states[ticket.state_id].name == "closed":
            return
        owner = self.users.get(ticket.owner_id)
        if owner is None or not (
            owner.active and owner.has("ticket.agent") and owner.access(ticket.group_id, "full")
        ):
            ticket.owner_id = NOBODY_ID

    def _customer_for(self, user: User, data: Mapping[str, Any]) -> User:
        if not user.has("ticket.agent"):
            return user
        raw = data.get("customer_id")
        if isinstance(raw, str) and raw.startswith("guess:"):
            email = raw[len("guess:") :].strip().lower()
            if "@" not in email:
                raise ApiError(422, f"Invalid email '{email}' of customer")
            for existing in self.users.values():
                if existing.email.lower() == email:
                    return existing
            return self.add_user(email, roles=("Customer",), email=email)
        if raw not in (None, ""):
            customer = self.users.get(_as_id(raw, "customer_id"))
            if customer is None:
                raise ApiError(422, "Customer must exist")
            return customer
        if data.get("customer") not in (None, ""):
            return self._user_by_login("customer", str(data["customer"]))
        raise ApiError(422, "Customer can't be blank")


class _TicketDocument(Mapping[str, Sequence[object]]):
    """A ticket as the search sees it (``query.Document``), each field read only when asked.

    A search matches one query against every ticket; most clauses look at two
    or three fields, so building all of them per ticket would be wasted. One
    instance is reused for a whole search (``ticket`` is set per ticket) under
    the store's lock.
    """

    __slots__ = ("store", "ticket")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ticket: Ticket | None = None

    def __getitem__(self, name: str) -> Sequence[object]:
        getter = _DOCUMENT_FIELDS.get(name)
        if getter is None or self.ticket is None:
            raise KeyError(name)
        return getter(self.store, self.ticket)

    def get(self, name: str, default: Any = None) -> Any:
        # Mapping's own get goes through __getitem__ and a KeyError; this is per ticket.
        getter = _DOCUMENT_FIELDS.get(name)
        if getter is None or self.ticket is None:
            return default
        return getter(self.store, self.ticket)

    def __iter__(self) -> Iterator[str]:
        return iter(_DOCUMENT_FIELDS)

    def __len__(self) -> int:
        return len(_DOCUMENT_FIELDS)


_DOCUMENT_FIELDS: dict[str, Callable[[Store, Ticket], Sequence[object]]] = {
    "id": lambda s, t: (t.id,),
    "number": lambda s, t: (t.number,),
    "title": lambda s, t: (t.title,),
    "tags": lambda s, t: t.tags,
    "state": lambda s, t: (s.states[t.state_id].name,),
    "state.name": lambda s, t: (s.states[t.state_id].name,),
    "group": lambda s, t: (s.groups[t.group_id].name,),
    "group.name": lambda s, t: (s.groups[t.group_id].name,),
    "priority": lambda s, t: (s.priorities[t.priority_id].name,),
    "priority.name": lambda s, t: (s.priorities[t.priority_id].name,),
    "owner.login": lambda s, t: (s.users[t.owner_id].login,),
    "customer.login": lambda s, t: (s.users[t.customer_id].login,),
    "group_id": lambda s, t: (t.group_id,),
    "state_id": lambda s, t: (t.state_id,),
    "priority_id": lambda s, t: (t.priority_id,),
    "owner_id": lambda s, t: (t.owner_id,),
    "customer_id": lambda s, t: (t.customer_id,),
    "created_by_id": lambda s, t: (t.created_by_id,),
    "updated_by_id": lambda s, t: (t.updated_by_id,),
    "created_at": lambda s, t: (t.created_at,),
    "updated_at": lambda s, t: (t.updated_at,),
}


def _as_id(value: object, name: str) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        raise ApiError(422, f"Invalid value for param '{name}'") from None


def _inspect(value: str) -> str:
    """Ruby's ``String#inspect``, as Zammad puts a looked-up name into its message."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
