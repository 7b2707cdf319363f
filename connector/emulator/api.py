"""The emulator's HTTP surface: a Zammad REST v1 subset plus the ``/_emulator`` admin routes.

Zammad routes served (all under ``/api/v1``, all authenticated):

    GET  /users/me                        GET  /users/search
    GET  /groups                          GET  /ticket_priorities      GET /ticket_states
    GET  /tickets                         POST /tickets
    GET  /tickets/search
    GET  /tickets/{id}                    PUT  /tickets/{id}     (``expand``, ``all``)
    GET|PUT|PATCH|DELETE /tickets/{id}/shared_draft
    GET  /ticket_articles/by_ticket/{id}  POST /ticket_articles
    GET  /tags                            POST /tags/add               DELETE /tags/remove

Answers follow Zammad's: the same JSON fields, 201 for creations, ``true`` for
tag writes, ``{"error", "error_human"}`` with 401/403/404/422, and an unknown
route is a 404 "No route matches". ``expand=true`` adds names to tickets and
users; ``all=true`` on one ticket answers it with its articles, people and
tags in one go (``shapes.ticket_all``). ``GET /tickets/search`` answers in
the shape the parameters ask for: a flat list with ``expand=true``,
``{"record_ids", "assets", "total_count"}`` with ``full=true``, otherwise the
older ``{"tickets", "tickets_count", "assets"}``.

Admin routes (no authentication; the emulator listens on loopback only):

    GET|DELETE /_emulator/stats    request and write counts (see ``stats``); DELETE zeroes them
    GET  /_emulator/timings        per ticket: created and first marked triaged (see
                                   ``timings``); ``from_id``/``to_id`` narrow it to a range
                                   of ids, ``tickets=false`` leaves out all but the counts
    POST /_emulator/reset          reseed the store, clear faults, counts and timings
    GET|POST|DELETE /_emulator/faults   list, add, clear fault rules (see ``faults``)
    POST /_emulator/tickets/bulk   {"count": N, "webhooks": false}: N new tickets
    GET  /_emulator/health         {"status": "ok"}

Handlers are plain coroutines that do their work under the store's lock and
answer with compact JSON; nothing is logged per request, so the emulator keeps
up with a sidecar triaging hundreds of tickets a second.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector.emulator import shapes
from connector.emulator.faults import FaultInjector, FaultMiddleware
from connector.emulator.stats import Stats
from connector.emulator.store import (
    LIST_MAX_PER_PAGE,
    SEARCH_DEFAULT_PER_PAGE,
    SEARCH_MAX_PER_PAGE,
    ApiError,
    Store,
    Ticket,
    User,
)
from connector.emulator.webhooks import WebhookDispatcher

API = "/api/v1"
Handler = Callable[[Request, User], Awaitable[Response]]


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class EmulatorApp:
    """Builds the Starlette application around one store."""

    def __init__(
        self,
        store: Store,
        stats: Stats,
        faults: FaultInjector,
        *,
        webhooks: WebhookDispatcher | None = None,
        reseed: Callable[[], object] | None = None,
        bulk_payloads: list[dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.stats = stats
        self.faults = faults
        self.webhooks = webhooks
        self._reseed = reseed
        self._bulk_payloads = bulk_payloads or []

    def build(self) -> FaultMiddleware:
        routes = [
            self._api("GET", "/users/me", self.me),
            self._api("GET", "/users/search", self.users_search),
            self._api("GET", "/users/{id}", self.user_show),
            self._api("GET", "/groups", self.groups),
            self._api("GET", "/ticket_priorities", self.priorities),
            self._api("GET", "/ticket_states", self.states),
            self._api("GET", "/tickets/search", self.tickets_search),
            self._api("GET", "/tickets", self.tickets_index),
            self._api("POST", "/tickets", self.ticket_create),
            self._api("GET", "/tickets/{id}", self.ticket_show),
            self._api("PUT", "/tickets/{id}", self.ticket_update),
            self._api("GET", "/tickets/{id}/shared_draft", self.draft_show),
            self._api("PUT", "/tickets/{id}/shared_draft", self.draft_update),
            self._api("PATCH", "/tickets/{id}/shared_draft", self.draft_update),
            self._api("DELETE", "/tickets/{id}/shared_draft", self.draft_destroy),
            self._api("GET", "/ticket_articles/by_ticket/{id}", self.articles_by_ticket),
            self._api("POST", "/ticket_articles", self.article_create),
            self._api("GET", "/tags", self.tags_list),
            self._api("POST", "/tags/add", self.tag_add),
            self._api("DELETE", "/tags/remove", self.tag_remove),
            Route("/_emulator/stats", self.admin_stats, methods=["GET", "DELETE"]),
            Route("/_emulator/timings", self.admin_timings, methods=["GET"]),
            Route("/_emulator/reset", self.admin_reset, methods=["POST"]),
            Route("/_emulator/faults", self.admin_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_emulator/tickets/bulk", self.admin_bulk, methods=["POST"]),
            Route("/_emulator/health", self.admin_health, methods=["GET"]),
        ]
        app = Starlette(
            routes=routes,
            exception_handlers={HTTPException: _no_route},  # type: ignore[dict-item]
        )
        return FaultMiddleware(app, self.faults)

    def _api(self, method: str, template: str, handler: Handler) -> Route:
        """One authenticated Zammad route: counts the call, maps ``ApiError`` to Zammad's body."""
        counted = f"{API}{template}"
        write = method != "GET"
        authenticate = self.store.authenticate
        count = self.stats.request

        async def endpoint(request: Request) -> Response:
            count(method, counted, write=write)
            try:
                user = authenticate(request.headers.get("authorization"))
                return await handler(request, user)
            except ApiError as error:
                return JsonResponse(error.body(), status_code=error.status)

        return Route(counted, endpoint, methods=[method])

    # -- users and lookups -------------------------------------------------------------

    async def me(self, request: Request, user: User) -> Response:
        return JsonResponse(shapes.user_json(self.store, user, expand=_flag(request, "expand")))

    async def users_search(self, request: Request, user: User) -> Response:
        params = request.query_params
        offset, limit = _page(params, default=100, maximum=500)
        permissions: list[str] = []
        role_ids: list[int] = []
        group_access: dict[int, str] = {}
        for key, value in params.multi_items():
            if key in ("permissions[]", "permissions"):
                permissions.append(value)
            elif key in ("role_ids[]", "role_ids"):
                role_ids.append(_int(value, "role_ids"))
            elif key.startswith("group_ids[") and key.endswith("]"):
                group_access[_int(key[len("group_ids[") : -1], "group_ids")] = value
        users = self.store.search_users(
            user,
            text=params.get("query") or params.get("term") or "",
            permissions=permissions,
            role_ids=role_ids,
            group_access=group_access,
            offset=offset,
            limit=limit,
        )
        expand = _flag(request, "expand")
        return JsonResponse([shapes.user_json(self.store, u, expand=expand) for u in users])

    async def user_show(self, request: Request, user: User) -> Response:
        """``GET /users/{id}``; with ``full=true`` Zammad's ``{id, assets}`` (User::Assets)."""
        shown = self.store.show_user(user, _path_id(request))
        if not _flag(request, "full"):
            expand = _flag(request, "expand")
            return JsonResponse(shapes.user_json(self.store, shown, expand=expand))
        return JsonResponse({"id": shown.id, "assets": shapes.user_assets(self.store, shown)})

    async def groups(self, request: Request, user: User) -> Response:
        return JsonResponse([shapes.group_json(g) for g in self.store.list_groups(user)])

    async def priorities(self, request: Request, user: User) -> Response:
        return JsonResponse(
            [{"id": p.id, "name": p.name, "active": p.active} for p in self.store.list_priorities()]
        )

    async def states(self, request: Request, user: User) -> Response:
        return JsonResponse(
            [
                {"id": s.id, "name": s.name, "active": s.active, "state_type": s.name}
                for s in self.store.list_states()
            ]
        )

    # -- tickets -----------------------------------------------------------------------

    async def tickets_index(self, request: Request, user: User) -> Response:
        offset, limit = _page(
            request.query_params, default=LIST_MAX_PER_PAGE, maximum=LIST_MAX_PER_PAGE
        )
        tickets = self.store.list_tickets(user, offset=offset, limit=limit)
        return self._tickets_answer(request, tickets, total=None, legacy=False)

    async def tickets_search(self, request: Request, user: User) -> Response:
        params = request.query_params
        offset, limit = _page(params, default=SEARCH_DEFAULT_PER_PAGE, maximum=SEARCH_MAX_PER_PAGE)
        tickets, total = self.store.search_tickets(
            user,
            query_text=params.get("query", ""),
            offset=offset,
            limit=limit,
            sort_by=params.get("sort_by"),
            order_by=params.get("order_by"),
        )
        return self._tickets_answer(request, tickets, total=total, legacy=True)

    def _tickets_answer(
        self, request: Request, tickets: list[Ticket], *, total: int | None, legacy: bool
    ) -> Response:
        """A ticket list in the shape asked for: ``expand``, ``full``, or the endpoint's default.

        The default is a plain list for ``GET /tickets`` and the older
        ``{"tickets", "tickets_count", "assets"}`` for search (``legacy``).
        """
        store = self.store
        if _flag(request, "expand"):
            return JsonResponse([shapes.ticket_json(store, t, expand=True) for t in tickets])
        assets = {"Ticket": {str(t.id): shapes.ticket_json(store, t) for t in tickets}}
        if _flag(request, "full"):
            full: dict[str, Any] = {"record_ids": [t.id for t in tickets], "assets": assets}
            if total is not None:
                full["total_count"] = total
            return JsonResponse(full)
        if legacy:
            return JsonResponse(
                {
                    "tickets": [t.id for t in tickets],
                    "tickets_count": len(tickets),
                    "assets": assets,
                }
            )
        return JsonResponse([shapes.ticket_json(store, t) for t in tickets])

    async def ticket_show(self, request: Request, user: User) -> Response:
        ticket = self.store.get_ticket(user, _ticket_id(request))
        return self._ticket_answer(request, user, ticket)

    def _ticket_answer(self, request: Request, user: User, ticket: Ticket) -> Response:
        """One ticket as Zammad's ``show``/``update`` answer it: ``expand`` wins over ``all``."""
        store = self.store
        if _flag(request, "expand"):
            return JsonResponse(shapes.ticket_json(store, ticket, expand=True))
        if _flag(request, "all"):
            with store.lock:
                articles = store.articles_of(user, ticket.id)
                draft = store.shared_draft_if_allowed(user, ticket.id)
                return JsonResponse(shapes.ticket_all(store, ticket, articles, draft))
        return JsonResponse(shapes.ticket_json(store, ticket))

    def create_ticket(self, user: User, payload: Mapping[str, Any]) -> Ticket:
        """Create a ticket as ``POST /tickets`` does, firing the webhook when one is configured."""
        ticket, article = self.store.create_ticket(user, payload)
        self._fire_webhook(ticket, article)
        return ticket

    async def ticket_create(self, request: Request, user: User) -> Response:
        ticket = self.create_ticket(user, await _json_object(request))
        return JsonResponse(
            shapes.ticket_json(self.store, ticket, expand=_flag(request, "expand")), status_code=201
        )

    async def ticket_update(self, request: Request, user: User) -> Response:
        data = await _json_object(request)
        ticket = self.store.update_ticket(user, _ticket_id(request), data)
        return self._ticket_answer(request, user, ticket)

    def _fire_webhook(self, ticket: Ticket, article: Any) -> None:
        if self.webhooks is None:
            return
        self.webhooks.submit(ticket.id, shapes.webhook_payload(self.store, ticket, article))

    # -- shared drafts -----------------------------------------------------------------

    async def draft_show(self, request: Request, user: User) -> Response:
        draft = self.store.shared_draft(user, _ticket_id(request))
        if draft is None:
            return JsonResponse({"shared_draft_id": None, "assets": None})
        return JsonResponse({"shared_draft_id": draft.id, "assets": shapes.draft_assets(draft)})

    async def draft_update(self, request: Request, user: User) -> Response:
        draft = self.store.put_shared_draft(user, _ticket_id(request), await _json_object(request))
        return JsonResponse({"shared_draft_id": draft.id, "assets": shapes.draft_assets(draft)})

    async def draft_destroy(self, request: Request, user: User) -> Response:
        draft = self.store.delete_shared_draft(user, _ticket_id(request))
        return JsonResponse({"shared_draft_id": draft.id})

    # -- articles and tags ---------------------------------------------------------------

    async def articles_by_ticket(self, request: Request, user: User) -> Response:
        articles = self.store.articles_of(user, _ticket_id(request))
        return JsonResponse([shapes.article_json(self.store, a) for a in articles])

    async def article_create(self, request: Request, user: User) -> Response:
        article = self.store.create_article(user, await _json_object(request))
        return JsonResponse(shapes.article_json(self.store, article), status_code=201)

    async def tags_list(self, request: Request, user: User) -> Response:
        ticket_id = _tag_target(dict(request.query_params))
        return JsonResponse({"tags": self.store.tags_of(user, ticket_id)})

    async def tag_add(self, request: Request, user: User) -> Response:
        data = await _params(request)
        self.store.add_tag(user, _tag_target(data), data.get("item"))
        return JsonResponse(True, status_code=201)

    async def tag_remove(self, request: Request, user: User) -> Response:
        data = await _params(request)
        self.store.remove_tag(user, _tag_target(data), data.get("item"))
        return JsonResponse(True)

    # -- admin -------------------------------------------------------------------------

    async def admin_stats(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.stats.reset()
        return JsonResponse(self.stats.snapshot())

    async def admin_timings(self, request: Request) -> Response:
        params = request.query_params
        try:
            from_id = int(params["from_id"]) if params.get("from_id") else None
            to_id = int(params["to_id"]) if params.get("to_id") else None
        except ValueError:
            return JsonResponse({"error": "from_id and to_id must be ticket ids"}, 422)
        snapshot = self.store.timings.snapshot(
            per_ticket=params.get("tickets", "true").lower() not in ("false", "0"),
            from_id=from_id,
            to_id=to_id,
        )
        return JsonResponse(snapshot)

    async def admin_reset(self, request: Request) -> Response:
        self.faults.clear()
        if self._reseed is not None:
            self._reseed()
        self.stats.reset()
        return JsonResponse({"status": "ok", "tickets": len(self.store.tickets)})

    async def admin_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            return JsonResponse({"rules": []})
        if request.method == "POST":
            try:
                data = await _json_object(request)
                rules = data.get("rules", [data])
                for rule in rules if isinstance(rules, list) else [rules]:
                    self.faults.add(rule)
            except (ApiError, ValueError, TypeError) as error:
                return JsonResponse({"error": str(error), "error_human": str(error)}, 422)
            return JsonResponse({"rules": self.faults.rules()}, status_code=201)
        return JsonResponse({"rules": self.faults.rules()})

    async def admin_bulk(self, request: Request) -> Response:
        try:
            data = await _json_object(request)
            count = int(data.get("count", 0))
        except (ApiError, ValueError, TypeError):
            return JsonResponse({"error": "count must be a number"}, 422)
        if not 1 <= count <= 100_000 or not self._bulk_payloads:
            return JsonResponse({"error": "count must be between 1 and 100000"}, 422)
        tickets = self.store.create_tickets_bulk(self._bulk_payloads, count)
        if data.get("webhooks"):
            for ticket in tickets:
                first = ticket.article_ids[0] if ticket.article_ids else None
                self._fire_webhook(ticket, self.store.articles.get(first) if first else None)
        return JsonResponse({"ticket_ids": [t.id for t in tickets]}, status_code=201)

    async def admin_health(self, request: Request) -> Response:
        return JsonResponse({"status": "ok"})


# -- request helpers ---------------------------------------------------------------------


async def _no_route(request: Request, exc: HTTPException) -> Response:
    if exc.status_code in (404, 405):
        message = f"No route matches [{request.method}] {request.url.path}"
        return JsonResponse({"error": message, "error_human": message}, status_code=404)
    return JsonResponse({"error": exc.detail, "error_human": exc.detail}, exc.status_code)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("true", "1")


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(422, f"Invalid value for param '{name}'") from None


def _page(params: Mapping[str, str], *, default: int, maximum: int) -> tuple[int, int]:
    raw_per_page = params.get("per_page") or params.get("limit")
    per_page = _int(raw_per_page, "per_page") if raw_per_page else default
    per_page = max(1, min(per_page, maximum))
    page = max(1, _int(params["page"], "page")) if params.get("page") else 1
    return (page - 1) * per_page, per_page


def _ticket_id(request: Request) -> int:
    raw = request.path_params["id"]
    try:
        return int(raw)
    except ValueError:
        raise ApiError(404, f"Couldn't find Ticket with 'id'={raw}") from None


def _path_id(request: Request, model: str = "User") -> int:
    raw = request.path_params["id"]
    try:
        return int(raw)
    except ValueError:
        raise ApiError(404, f"Couldn't find {model} with 'id'={raw}") from None


def _tag_target(data: Mapping[str, Any]) -> int:
    if data.get("object", "Ticket") != "Ticket":
        raise ApiError(422, "Only tags on Ticket objects are supported")
    try:
        return int(data.get("o_id"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ApiError(422, "Need o_id!") from None


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, "Invalid JSON in request body") from None
    if not isinstance(data, dict):
        raise ApiError(422, "Expected a JSON object")
    return data


async def _params(request: Request) -> dict[str, Any]:
    """Rails merges query and body parameters; tag writes may use either."""
    data: dict[str, Any] = dict(request.query_params)
    data.update(await _json_object(request))
    return data
