"""The Zammad adapter against Zammad's documented request and answer shapes.

HTTP is faked with ``responses``; every write is matched on its exact body, so
each test states precisely what reaches the helpdesk.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from connector import errors
from connector.adapters.base import HelpdeskAdapter, WebhookRejected
from connector.adapters.zammad import PagePaginator, ZammadAdapter, api_base, parse_claims
from connector.config import HttpSettings, MarkerSettings, ZammadSettings
from connector.domain import ChangeSet, Claim, Ticket
from connector.footer import footer

BASE = "https://zammad.example/api/v1"
FIXTURES = Path(__file__).parent / "fixtures" / "zammad"
TAG = {"object": "Ticket", "o_id": 42}


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_adapter(
    sleeps: list[float],
    *,
    attempts: int = 4,
    markers: MarkerSettings | None = None,
    **zammad: Any,
) -> ZammadAdapter:
    settings = ZammadSettings(url="https://zammad.example", token="secret-token", **zammad)
    http = HttpSettings(
        retry_attempts=attempts, retry_total_seconds=300, retry_after_max_seconds=60
    )
    return ZammadAdapter(settings, markers or MarkerSettings(), http, sleep=sleeps.append)


@pytest.fixture
def adapter(sleeps: list[float]) -> ZammadAdapter:
    return make_adapter(sleeps)


def ticket(**overrides: Any) -> Ticket:
    values: dict[str, Any] = {
        "id": 42,
        "subject": "Charged twice for November",
        "body": "<p>charged twice</p>",
        "content_type": "text/html",
        "queue": "Users",
        "priority": "2 normal",
        "state": "new",
        "tags": frozenset({"billing"}),
    }
    values.update(overrides)
    return Ticket(**values)


def note_article(text: str, subject: str = "AI triage") -> dict[str, Any]:
    return {
        "subject": subject,
        "body": text,
        "content_type": "text/html",
        "type": "note",
        "internal": True,
    }


def expect_tag(method: str, item: str, status: int = 200) -> None:
    path = "/tags/add" if method == "POST" else "/tags/remove"
    responses.add(
        method,
        f"{BASE}{path}",
        json=True,
        status=status,
        match=[matchers.json_params_matcher({**TAG, "item": item})],
    )


def expect_get_ticket(name: str = "ticket_42_expanded.json") -> None:
    responses.get(
        f"{BASE}/tickets/42",
        json=load(name),
        match=[matchers.query_param_matcher({"expand": "true"})],
    )


def ticket_all(
    *,
    ticket: dict[str, Any] | None = None,
    articles: list[dict[str, Any]] | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """Zammad's ``GET /tickets/42?all=true`` answer, with parts replaced."""
    answer: dict[str, Any] = load("ticket_42_all.json")
    if ticket:
        answer["assets"]["Ticket"]["42"].update(ticket)
    if articles is not None:
        answer["assets"]["TicketArticle"] = {str(a["id"]): a for a in articles}
        answer["ticket_article_ids"] = [a["id"] for a in articles]
    if tags is not None:
        answer["tags"] = tags
    return answer


def expect_ticket_all(answer: dict[str, Any] | None = None) -> None:
    responses.get(
        f"{BASE}/tickets/42",
        json=answer if answer is not None else ticket_all(),
        match=[matchers.query_param_matcher({"all": "true"})],
    )


def expect_lookups() -> None:
    """The tables that turn the ticket's group, priority and state ids into names."""
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.get(f"{BASE}/ticket_priorities", json=load("ticket_priorities.json"))
    responses.get(f"{BASE}/ticket_states", json=load("ticket_states.json"))


def calls_to(path: str) -> int:
    return sum(1 for c in responses.calls if c.request.url.split("?")[0] == f"{BASE}{path}")


# -- interface and configuration ---------------------------------------------------------


def test_is_a_helpdesk_adapter(adapter: ZammadAdapter) -> None:
    assert isinstance(adapter, HelpdeskAdapter)
    assert adapter.kind == "zammad"
    assert adapter.supports_webhooks is True


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://zammad.example", BASE),
        ("https://zammad.example/", BASE),
        ("https://zammad.example/api/v1", BASE),
        ("https://host.example/helpdesk", "https://host.example/helpdesk/api/v1"),
    ],
)
def test_api_base_accepts_the_url_with_or_without_the_api_path(url: str, base: str) -> None:
    assert api_base(url) == base


def test_without_credentials_the_adapter_refuses_to_start(sleeps: list[float]) -> None:
    with pytest.raises(errors.ConfigError, match=r"zammad\.token"):
        ZammadAdapter(ZammadSettings(url="https://zammad.example"), MarkerSettings())


@responses.activate
def test_token_auth_header() -> None:
    responses.get(
        f"{BASE}/users/me",
        json=load("users_me.json"),
        match=[matchers.header_matcher({"Authorization": "Token token=secret-token"})],
    )
    responses.get(f"{BASE}/ticket_states", json=load("ticket_states.json"))
    make_adapter([]).check()


@responses.activate
def test_basic_auth_when_no_token_is_set() -> None:
    settings = ZammadSettings(url="https://zammad.example", username="triage", password="pw")
    responses.get(
        f"{BASE}/users/me",
        json=load("users_me.json"),
        match=[matchers.header_matcher({"Authorization": "Basic dHJpYWdlOnB3"})],
    )
    responses.get(f"{BASE}/ticket_states", json=load("ticket_states.json"))
    ZammadAdapter(settings, MarkerSettings()).check()


# -- check -----------------------------------------------------------------------------------


@responses.activate
def test_check_learns_its_own_user_id_for_updated_by_self(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    responses.get(f"{BASE}/ticket_states", json=load("ticket_states.json"))
    adapter.check()
    expect_ticket_all(ticket_all(ticket={"updated_by_id": 2}))
    expect_lookups()
    assert adapter.get_ticket(42).updated_by_self is True
    assert len([c for c in responses.calls if c.request.url.endswith("/users/me")]) == 1


@responses.activate
def test_check_with_a_bad_token_is_an_auth_error_and_not_retried(
    adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    responses.get(f"{BASE}/users/me", status=401, json={"error": "Invalid token!"})
    with pytest.raises(errors.AuthError) as caught:
        adapter.check()
    assert caught.value.status == 401
    assert len(responses.calls) == 1
    assert sleeps == []
    assert "secret-token" not in str(caught.value)


@responses.activate
def test_check_names_open_states_zammad_does_not_have(sleeps: list[float]) -> None:
    adapter = make_adapter(sleeps, open_states=["new", "open", "waiting"])
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    responses.get(f"{BASE}/ticket_states", json=load("ticket_states.json"))
    with pytest.raises(errors.HelpdeskConfigError, match="waiting"):
        adapter.check()


# -- search and pagination -----------------------------------------------------------------


def test_search_query_is_built_from_the_settings(sleeps: list[float]) -> None:
    adapter = make_adapter(
        sleeps,
        open_states=["new", "open", "pending reminder"],
        markers=MarkerSettings(triaged_tag="ai-done", error_tag="ai-failed", retriage_tag="redo"),
    )
    since = datetime(2026, 11, 24, 10, 0, 0, 999_000, tzinfo=UTC)
    assert adapter.search_query(since) == (
        'updated_at:[2026-11-24T10:00:00Z TO *] AND state.name:("new" OR "open" OR '
        '"pending reminder") AND ((*:* NOT tags:("ai-done" OR "ai-failed")) OR tags:"redo")'
    )
    assert adapter.search_query(None).startswith('state.name:("new" OR "open" OR ')


@pytest.mark.parametrize(
    "shape", ["search_flat_list.json", "search_full.json", "search_legacy_tickets.json"]
)
@responses.activate
def test_all_three_search_answer_shapes_give_the_same_refs(
    adapter: ZammadAdapter, shape: str
) -> None:
    since = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    responses.get(
        f"{BASE}/tickets/search",
        json=load(shape),
        match=[
            matchers.query_param_matcher(
                {
                    "query": adapter.search_query(since),
                    "sort_by": "updated_at",
                    "order_by": "asc",
                    "page": "1",
                    "per_page": "50",
                    "expand": "true",
                }
            )
        ],
    )
    refs = list(adapter.changed_since(since, page_size=50, max_pages=5))
    assert [(r.id, r.updated_at) for r in refs] == [
        (7, datetime(2026, 11, 24, 10, 0, 1, tzinfo=UTC)),
        (9, datetime(2026, 11, 24, 10, 0, 5, 500_000, tzinfo=UTC)),
    ]
    assert len(responses.calls) == 1  # two results on a page of 50: that was the last page


def page_of(first: int, count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "updated_at": f"2026-11-24T10:{i // 60:02d}:{i % 60:02d}.000Z"}
        for i in range(first, first + count)
    ]


@responses.activate
def test_pagination_ends_on_an_empty_page(adapter: ZammadAdapter) -> None:
    for page, body in ((1, page_of(1, 2)), (2, page_of(3, 2)), (3, [])):
        responses.get(
            f"{BASE}/tickets/search",
            json=body,
            match=[matchers.query_param_matcher({"page": str(page)}, strict_match=False)],
        )
    refs = list(adapter.untriaged(page_size=2, max_pages=10))
    assert [r.id for r in refs] == [1, 2, 3, 4]
    assert len(responses.calls) == 3


@responses.activate
def test_pagination_ends_on_a_repeated_page(adapter: ZammadAdapter) -> None:
    # A server (or proxy) that ignores ``page`` answers page 1 forever.
    responses.get(f"{BASE}/tickets/search", json=page_of(1, 2))
    refs = list(adapter.untriaged(page_size=2, max_pages=10))
    assert [r.id for r in refs] == [1, 2]
    assert len(responses.calls) == 2


@responses.activate
def test_pagination_stops_at_the_page_cap(adapter: ZammadAdapter) -> None:
    for page in range(1, 10):
        responses.get(
            f"{BASE}/tickets/search",
            json=page_of(page * 10, 2),
            match=[matchers.query_param_matcher({"page": str(page)}, strict_match=False)],
        )
    refs = list(adapter.untriaged(page_size=2, max_pages=3))
    assert [r.id for r in refs] == [10, 11, 20, 21, 30, 31]
    assert len(responses.calls) == 3


@responses.activate
def test_page_size_is_clamped_to_zammads_search_cap(adapter: ZammadAdapter) -> None:
    responses.get(
        f"{BASE}/tickets/search",
        json=page_of(1, 3),
        match=[matchers.query_param_matcher({"per_page": "200"}, strict_match=False)],
    )
    assert len(list(adapter.untriaged(page_size=1000, max_pages=5))) == 3


def test_paginator_reports_why_it_stopped() -> None:
    # Page 2 overlaps page 1 (a ticket moved between the reads): 2 comes once.
    pages = {1: [1, 2], 2: [2, 3], 3: [4]}
    walker = PagePaginator(lambda p: pages.get(p, []), per_page=2, max_pages=9, key=lambda i: i)
    assert list(walker) == [1, 2, 3, 4]
    assert (walker.stopped_by, walker.pages_fetched) == ("short", 3)
    again = PagePaginator(lambda p: [1, 2], per_page=2, max_pages=9, key=lambda i: i)
    assert list(again) == [1, 2]
    assert (again.stopped_by, again.pages_fetched) == ("repeated", 2)


@responses.activate
def test_without_elasticsearch_the_list_is_scanned_newest_page_first(sleeps: list[float]) -> None:
    adapter = make_adapter(sleeps, use_search=False)

    def row(i: int, state: str, minute: int) -> dict[str, Any]:
        return {"id": i, "state": state, "updated_at": f"2026-11-24T10:{minute:02d}:00.000Z"}

    listing = {
        1: [row(1, "new", 1), row(2, "closed", 2)],
        2: [row(3, "open", 9), row(4, "new", 3)],
        3: [row(5, "new", 5)],
    }
    for page in (1, 2, 3, 4):
        responses.get(
            f"{BASE}/tickets",
            json=listing.get(page, []),
            match=[
                matchers.query_param_matcher({"page": str(page), "per_page": "2", "expand": "true"})
            ],
        )
    tags = {1: [], 3: ["ai-triaged"], 4: ["ai-triaged", "retriage"], 5: ["triage-error"]}
    for ticket_id, ticket_tags in tags.items():
        responses.get(
            f"{BASE}/tags",
            json={"tags": ticket_tags},
            match=[matchers.query_param_matcher({"object": "Ticket", "o_id": str(ticket_id)})],
        )
    since = datetime(2026, 11, 24, 10, 2, tzinfo=UTC)
    refs = list(adapter.changed_since(since, page_size=2, max_pages=10))
    # ticket 1 is older than ``since``, 2 is closed, 3 triaged, 5 failed; 4 asks for re-triage.
    assert [r.id for r in refs] == [4]


# -- reading a ticket ------------------------------------------------------------------------


@responses.activate
def test_get_ticket_reads_ticket_articles_and_tags_in_one_call(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    expect_ticket_all()
    expect_lookups()
    t = adapter.get_ticket(42)
    assert (t.id, t.number, t.subject) == (42, "67042", "Charged twice for November")
    assert t.content_type == "text/html"
    assert t.body.startswith("<div><p>Hello,</p>")  # the first *customer* article, as stored
    assert (t.queue, t.priority, t.state, t.owner) == ("Users", "2 normal", "new", None)
    assert t.created_at == datetime(2026, 11, 24, 9, 58, 12, 104_000, tzinfo=UTC)
    assert t.updated_by_self is False
    assert t.has_customer_article is True
    # Claims in Zammad's tag order (by tag id), not by time; the broken tag is ignored.
    assert t.claims == (
        Claim(datetime.fromtimestamp(1764064800, UTC), "aaaaaaaaaaaa"),
        Claim(datetime.fromtimestamp(1764064790, UTC).replace(microsecond=250_000), "bbbbbbbbbbbb"),
    )
    assert t.marker == "ai-triaged"
    assert t.retriage_requested is True
    assert t.failed is True
    # Only internal agent notes count: a customer or a public reply quoting a footer does not.
    assert t.footers == frozenset({"helpdesk-triage note 0a1b2c3d4e5f"})
    assert calls_to("/ticket_articles/by_ticket/42") == 0
    assert calls_to("/tags") == 0


@responses.activate
def test_articles_are_taken_in_the_order_zammad_lists_them(adapter: ZammadAdapter) -> None:
    # Assets are a JSON object keyed by id; the order is ticket_article_ids'.
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    answer = ticket_all()
    answer["ticket_article_ids"] = [104, 101, 102, 103, 105]
    expect_ticket_all(answer)
    expect_lookups()
    assert adapter.get_ticket(42).body.startswith("I pasted this")


@responses.activate
def test_lookup_tables_are_read_once_and_reused(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    expect_ticket_all()
    expect_lookups()
    adapter.get_ticket(42)
    adapter.get_ticket(42)
    assert calls_to("/tickets/42") == 2
    assert (calls_to("/groups"), calls_to("/ticket_priorities"), calls_to("/ticket_states")) == (
        1,
        1,
        1,
    )


@responses.activate
def test_an_unknown_id_rereads_its_table_and_stale_tables_are_reread(sleeps: list[float]) -> None:
    now = [1000.0]
    settings = ZammadSettings(url="https://zammad.example", token="secret-token")
    adapter = ZammadAdapter(settings, MarkerSettings(), sleep=sleeps.append, clock=lambda: now[0])
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    expect_lookups()
    expect_ticket_all()
    assert adapter.get_ticket(42).queue == "Users"
    # A group created after the table was read: its id makes the adapter read again.
    responses.replace(
        responses.GET,
        f"{BASE}/groups",
        json=[*load("groups.json"), {"id": 7, "name": "Returns", "active": True}],
    )
    responses.replace(
        responses.GET,
        f"{BASE}/tickets/42",
        json=ticket_all(ticket={"group_id": 7}),
        match=[matchers.query_param_matcher({"all": "true"})],
    )
    now[0] += 10
    assert adapter.get_ticket(42).queue == "Returns"
    assert calls_to("/groups") == 2
    # Known ids are reused for a minute, then the tables are read again (renames show up).
    now[0] += 30
    adapter.get_ticket(42)
    assert calls_to("/groups") == 2
    now[0] += 31
    adapter.get_ticket(42)
    assert (calls_to("/groups"), calls_to("/ticket_priorities")) == (3, 2)


@responses.activate
def test_an_id_missing_from_the_tables_is_named_by_an_expanded_read(adapter: ZammadAdapter) -> None:
    # A group the triage user may not list: fall back to Zammad's own names for this ticket.
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    expect_lookups()
    expect_ticket_all(ticket_all(ticket={"group_id": 99}))
    responses.get(
        f"{BASE}/tickets/42",
        json={**load("ticket_42_expanded.json"), "group_id": 99, "group": "Hidden"},
        match=[matchers.query_param_matcher({"expand": "true"})],
    )
    t = adapter.get_ticket(42)
    assert (t.queue, t.priority, t.state) == ("Hidden", "2 normal", "new")
    assert calls_to("/groups") == 1  # read once; the id was not in it


@responses.activate
def test_ticket_without_a_customer_article(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    articles = load("ticket_42_all.json")["assets"]["TicketArticle"]
    expect_ticket_all(ticket_all(articles=[articles["101"], articles["103"]], tags=[]))
    expect_lookups()
    t = adapter.get_ticket(42)
    assert t.has_customer_article is False
    assert (t.body, t.content_type) == ("", "text/plain")
    assert (t.marker, t.claims, t.retriage_requested, t.failed) == (None, (), False, False)


@responses.activate
def test_articles_are_read_by_sender_name_or_sender_id(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    articles = [
        {"id": 1, "sender_id": 1, "internal": False, "body": "agent", "content_type": "text/plain"},
        {"id": 2, "sender": "Agent", "internal": False, "body": "agent by name"},
        {
            "id": 3,
            "sender_id": 2,
            "internal": False,
            "body": "customer",
            "content_type": "text/plain",
        },
    ]
    expect_ticket_all(ticket_all(articles=articles, tags=[]))
    expect_lookups()
    assert adapter.get_ticket(42).body == "customer"


@pytest.mark.parametrize(
    "answer",
    [
        ["not", "a", "ticket"],
        {"ticket_id": 42},
        {"ticket_id": 42, "ticket_article_ids": [], "tags": [], "assets": {"Ticket": {}}},
        {"ticket_id": 42, "ticket_article_ids": [], "assets": load("ticket_42_all.json")["assets"]},
    ],
)
@responses.activate
def test_an_answer_of_the_wrong_shape_is_a_server_error(
    adapter: ZammadAdapter, answer: Any
) -> None:
    responses.get(f"{BASE}/tickets/42", json=answer)
    with pytest.raises(errors.ServerError):
        adapter.get_ticket(42)


@responses.activate
def test_missing_ticket_is_not_found(adapter: ZammadAdapter) -> None:
    responses.get(
        f"{BASE}/tickets/42",
        status=404,
        json={"error": "Couldn't find Ticket with 'id'=42", "error_human": "..."},
    )
    with pytest.raises(errors.NotFoundError) as caught:
        adapter.get_ticket(42)
    assert caught.value.ticket_id == 42
    assert caught.value.endpoint == "/tickets/{id}"


def test_claim_tags_round_trip_exactly(adapter: ZammadAdapter) -> None:
    claim = Claim(datetime(2026, 11, 24, 10, 0, 0, 123_456, tzinfo=UTC), "0a1b2c3d4e5f")
    tag = adapter.claim_tag(claim)
    assert tag == "ai-triage-run:0a1b2c3d4e5f:1795514400.123456"
    assert parse_claims([tag], "ai-triage-run:") == (claim,)
    whole = Claim(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "0a1b2c3d4e5f")
    assert adapter.claim_tag(whole) == "ai-triage-run:0a1b2c3d4e5f:1795514400"
    assert (
        parse_claims(
            ["other:x:1", "ai-triage-run::5", "ai-triage-run:x:1.1234567"], "ai-triage-run:"
        )
        == ()
    )


# -- lookups -----------------------------------------------------------------------------------


@responses.activate
def test_queues_and_priorities_leave_out_inactive_ones(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.get(f"{BASE}/ticket_priorities", json=load("ticket_priorities.json"))
    assert adapter.queues() == ["Users", "Billing and Payments", "Human Resources"]
    assert adapter.priorities() == ["1 low", "2 normal", "3 high"]


@responses.activate
def test_agents_of_a_group_with_their_open_ticket_counts(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/users/me", json=load("users_me.json"))
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.get(
        f"{BASE}/users/search",
        json=load("users_search_billing_agents.json"),
        match=[
            matchers.query_param_matcher(
                {
                    "query": "*",
                    "permissions[]": "ticket.agent",
                    "group_ids[2]": "full",
                    "page": "1",
                    "per_page": "100",
                }
            )
        ],
    )
    responses.get(
        f"{BASE}/tickets/search",
        json=load("search_open_by_owner.json"),
        match=[
            matchers.query_param_matcher(
                {
                    "query": 'owner_id:(4 OR 7) AND state.name:("new" OR "open")',
                    "page": "1",
                    "per_page": "200",
                    "expand": "true",
                }
            )
        ],
    )
    agents = adapter.agents("Billing and Payments")
    # The triage user itself and inactive users are never owners.
    assert [(a.id, a.login, a.open_tickets) for a in agents] == [
        ("4", "ben.keller", 2),
        ("7", "emma.fischer", 1),
    ]


@responses.activate
def test_agents_of_an_unknown_group_is_empty(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    assert adapter.agents("No Such Group") == []


# -- claims, finish, release, failure ----------------------------------------------------------


@responses.activate
def test_claim_writes_the_tag_then_reads_all_claims_in_zammads_order(
    adapter: ZammadAdapter,
) -> None:
    mine = Claim(datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC), "cccccccccccc")
    expect_tag("POST", "ai-triage-run:cccccccccccc:1795514405", status=201)
    responses.get(
        f"{BASE}/tags",
        json={
            "tags": ["billing", "ai-triage-run:aaaaaaaaaaaa:1795514409", adapter.claim_tag(mine)]
        },
    )
    result = adapter.claim(42, mine)
    assert result.claims == (
        Claim(datetime(2026, 11, 24, 10, 0, 9, tzinfo=UTC), "aaaaaaaaaaaa"),
        mine,
    )
    assert not result.triaged and not result.done_elsewhere


@responses.activate
def test_claim_reports_a_marker_written_meanwhile(adapter: ZammadAdapter) -> None:
    mine = Claim(datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC), "cccccccccccc")
    expect_tag("POST", "ai-triage-run:cccccccccccc:1795514405", status=201)
    responses.get(f"{BASE}/tags", json={"tags": ["ai-triaged", adapter.claim_tag(mine)]})
    result = adapter.claim(42, mine)
    assert result.claims == (mine,)
    assert result.triaged and result.done_elsewhere


@responses.activate
def test_finish_clears_retriage_then_marks_then_drops_the_claim(adapter: ZammadAdapter) -> None:
    claim = Claim(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "cccccccccccc")
    # The claim's read-back is what finish() remembers about the ticket's tags.
    responses.get(f"{BASE}/tags", json={"tags": ["retriage", adapter.claim_tag(claim)]})
    responses.post(f"{BASE}/tags/add", json=True, status=201)
    adapter.claim(42, claim)
    responses.calls.reset()
    expect_tag("DELETE", "retriage")
    expect_tag("POST", "ai-triaged", status=201)
    expect_tag("DELETE", adapter.claim_tag(claim))
    adapter.finish(42, claim, "model-2026.11")
    assert [(c.request.method, json.loads(c.request.body)["item"]) for c in responses.calls] == [
        ("DELETE", "retriage"),
        ("POST", "ai-triaged"),
        ("DELETE", "ai-triage-run:cccccccccccc:1795514400"),
    ]


@responses.activate
def test_finish_skips_the_retriage_removal_when_the_tag_was_not_there(
    adapter: ZammadAdapter,
) -> None:
    claim = Claim(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "cccccccccccc")
    responses.post(f"{BASE}/tags/add", json=True, status=201)
    responses.get(f"{BASE}/tags", json={"tags": [adapter.claim_tag(claim)]})
    adapter.claim(42, claim)
    responses.calls.reset()
    responses.delete(f"{BASE}/tags/remove", json=True)
    adapter.finish(42, claim, "model-2026.11")
    assert [(c.request.method, json.loads(c.request.body)["item"]) for c in responses.calls] == [
        ("POST", "ai-triaged"),
        ("DELETE", adapter.claim_tag(claim)),
    ]


@responses.activate
def test_release_drops_only_the_claim(adapter: ZammadAdapter) -> None:
    claim = Claim(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "cccccccccccc")
    expect_tag("DELETE", adapter.claim_tag(claim))
    adapter.release(42, claim)
    assert len(responses.calls) == 1


def calls_made() -> list[tuple[str, str]]:
    return [
        (c.request.method, json.loads(c.request.body)["item"])
        for c in responses.calls
        if c.request.method != "GET"
    ]


@responses.activate
def test_mark_failed_marks_consumes_retriage_and_drops_the_claim(adapter: ZammadAdapter) -> None:
    claim = Claim(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "cccccccccccc")
    responses.post(f"{BASE}/tags/add", json=True, status=201)
    responses.delete(f"{BASE}/tags/remove", json=True)
    responses.get(f"{BASE}/tags", json={"tags": ["Retriage", adapter.claim_tag(claim)]})
    # Tags never read: the re-triage request may be there, so the tags are read to
    # remove it by the name it is stored under (Zammad's remove is case-sensitive).
    adapter.mark_failed(42, claim)
    assert calls_made() == [
        ("POST", "triage-error"),
        ("DELETE", "Retriage"),
        ("DELETE", adapter.claim_tag(claim)),
    ]


@responses.activate
def test_mark_failed_skips_what_the_ticket_does_not_have(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/tags", json={"tags": ["billing"]})
    responses.post(f"{BASE}/tags/add", json=True, status=201)
    responses.delete(f"{BASE}/tags/remove", json=True)
    adapter.claim(42, Claim(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "cccccccccccc"))
    responses.calls.reset()
    adapter.mark_failed(42, None)
    assert calls_made() == [("POST", "triage-error")]


@responses.activate
def test_finish_clears_an_earlier_failure_mark(adapter: ZammadAdapter) -> None:
    claim = Claim(datetime(2026, 11, 24, 10, 0, tzinfo=UTC), "cccccccccccc")
    responses.get(
        f"{BASE}/tags", json={"tags": ["triage-error", "retriage", adapter.claim_tag(claim)]}
    )
    responses.post(f"{BASE}/tags/add", json=True, status=201)
    responses.delete(f"{BASE}/tags/remove", json=True)
    adapter.claim(42, claim)
    responses.calls.reset()
    adapter.finish(42, claim, "model-2026.11")
    assert calls_made() == [
        ("DELETE", "retriage"),
        ("DELETE", "triage-error"),
        ("POST", "ai-triaged"),
        ("DELETE", adapter.claim_tag(claim)),
    ]


@responses.activate
def test_tag_add_is_retried_because_it_is_idempotent(
    adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    responses.post(f"{BASE}/tags/add", status=503)
    expect_tag("POST", "triage-error", status=201)
    responses.get(f"{BASE}/tags", json={"tags": ["retriage", "triage-error"]})
    responses.delete(f"{BASE}/tags/remove", json=True)
    adapter.mark_failed(42, None)
    assert [c.request.method for c in responses.calls] == ["POST", "POST", "GET", "DELETE"]
    assert len(sleeps) == 1


# -- apply -------------------------------------------------------------------------------------

RUN = "0a1b2c3d4e5f"
NOTE = f"Queue: Billing and Payments (0.93)\n\n{footer('note', RUN)}"
NOTE_HTML = "<p>Queue: Billing and Payments (0.93)</p><p>helpdesk-triage note 0a1b2c3d4e5f</p>"
DRAFT = f"Dear Maria,\nwe refund the duplicate charge.\n\n{footer('draft', RUN)}"
DRAFT_HTML = (
    "<p>Dear Maria,<br>we refund the duplicate charge.</p><p>helpdesk-triage draft 0a1b2c3d4e5f</p>"
)


def updated_answer(**fields: Any) -> dict[str, Any]:
    return {**load("ticket_42_expanded.json"), "updated_by_id": 2, **fields}


@responses.activate
def test_apply_sends_fields_and_an_internal_note_in_one_put(adapter: ZammadAdapter) -> None:
    responses.put(
        f"{BASE}/tickets/42",
        json=updated_answer(group="Billing and Payments", priority="3 high", owner_id=4),
        match=[
            matchers.query_param_matcher({"expand": "true"}),
            matchers.json_params_matcher(
                {
                    "group": "Billing and Payments",
                    "priority": "3 high",
                    "owner_id": 4,
                    "article": note_article(NOTE_HTML),
                }
            ),
        ],
    )
    expect_tag("POST", "ai:billing", status=201)
    expect_tag("DELETE", "billing")
    change = ChangeSet(
        ticket_id=42,
        queue="Billing and Payments",
        priority="3 high",
        owner="4",
        add_tags=frozenset({"ai:billing"}),
        remove_tags=frozenset({"billing", "not-there"}),
        note=NOTE,
        run_id=RUN,
    )
    result = adapter.apply(ticket(), change)
    assert result.changed == ("queue", "priority", "owner", "note", "tags")
    assert result.note_created is True
    assert len(responses.calls) == 3  # one PUT, one tag added, one removed (the other was absent)


@responses.activate
def test_note_html_is_escaped(adapter: ZammadAdapter) -> None:
    text = "Customer wrote <script>alert(1)</script> & more\n\n" + footer("note", RUN)
    responses.put(
        f"{BASE}/tickets/42",
        json=updated_answer(),
        match=[
            matchers.json_params_matcher(
                {
                    "article": note_article(
                        "<p>Customer wrote &lt;script&gt;alert(1)&lt;/script&gt; &amp; more</p>"
                        "<p>helpdesk-triage note 0a1b2c3d4e5f</p>"
                    )
                }
            )
        ],
    )
    adapter.apply(ticket(), ChangeSet(ticket_id=42, note=text, run_id=RUN))


@responses.activate
def test_a_note_whose_footer_is_on_the_ticket_is_not_posted_again(adapter: ZammadAdapter) -> None:
    responses.put(
        f"{BASE}/tickets/42",
        json=updated_answer(priority="3 high"),
        match=[matchers.json_params_matcher({"priority": "3 high"})],
    )
    done = ticket(footers=frozenset({footer("note", RUN)}))
    result = adapter.apply(done, ChangeSet(ticket_id=42, priority="3 high", note=NOTE, run_id=RUN))
    assert result.skipped == ("note",)
    assert result.note_created is False


@responses.activate
def test_nothing_to_change_sends_nothing(adapter: ZammadAdapter) -> None:
    current = ticket(footers=frozenset({footer("note", RUN)}), tags=frozenset({"ai:billing"}))
    change = ChangeSet(
        ticket_id=42,
        queue="Users",
        priority="2 normal",
        add_tags=frozenset({"AI:Billing"}),
        note=NOTE,
        run_id=RUN,
    )
    result = adapter.apply(current, change)
    assert len(responses.calls) == 0
    assert result.changed == ()


@pytest.mark.parametrize(
    ("change", "answer", "ignored"),
    [
        ({"queue": "Billing and Payments"}, {"group": "Users"}, "group"),
        ({"priority": "3 high"}, {"priority": "2 normal"}, "priority"),
        ({"owner": "4"}, {"owner_id": 7}, "owner"),
    ],
)
@responses.activate
def test_an_answer_that_ignored_a_change_is_a_conflict(
    adapter: ZammadAdapter, change: dict[str, str], answer: dict[str, Any], ignored: str
) -> None:
    responses.put(f"{BASE}/tickets/42", json=updated_answer(**answer))
    with pytest.raises(errors.ConflictError, match=ignored) as caught:
        adapter.apply(ticket(), ChangeSet(ticket_id=42, **change))  # type: ignore[arg-type]
    assert caught.value.ticket_id == 42
    assert caught.value.status == 200


@responses.activate
def test_unknown_group_name_is_a_conflict_without_the_body_in_the_message(
    adapter: ZammadAdapter,
) -> None:
    responses.put(
        f"{BASE}/tickets/42",
        status=422,
        json={
            "error": "No lookup value found for 'group': \"maria.lopez@customer.example\"",
            "error_human": "...",
        },
    )
    with pytest.raises(errors.ConflictError) as caught:
        adapter.apply(ticket(), ChangeSet(ticket_id=42, queue="maria.lopez@customer.example"))
    assert "customer.example" not in str(caught.value)
    assert len(responses.calls) == 1


@responses.activate
def test_put_with_a_note_is_not_retried_blindly(
    adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    responses.put(f"{BASE}/tickets/42", status=503)
    responses.get(
        f"{BASE}/ticket_articles/by_ticket/42", json=load("articles_no_customer.json")[:1]
    )
    with pytest.raises(errors.UnavailableError):
        adapter.apply(ticket(), ChangeSet(ticket_id=42, priority="3 high", note=NOTE, run_id=RUN))
    methods = [c.request.method for c in responses.calls]
    assert methods == ["PUT", "GET"]  # sent once, then looked for the note: it is not there
    assert sleeps == []


@responses.activate
def test_put_whose_answer_was_lost_is_confirmed_by_the_footer(adapter: ZammadAdapter) -> None:
    responses.put(f"{BASE}/tickets/42", body=requests.ConnectionError("reset by peer"))
    posted = {
        "id": 110,
        "sender": "Agent",
        "internal": True,
        "type": "note",
        "body": NOTE_HTML,
    }
    responses.get(f"{BASE}/ticket_articles/by_ticket/42", json=[posted])
    expect_get_ticket("ticket_42_expanded.json")
    result = adapter.apply(ticket(), ChangeSet(ticket_id=42, note=NOTE, run_id=RUN))
    assert result.note_created is True
    assert [c.request.method for c in responses.calls] == ["PUT", "GET", "GET"]


@responses.activate
def test_put_without_a_note_is_retried(adapter: ZammadAdapter, sleeps: list[float]) -> None:
    responses.put(f"{BASE}/tickets/42", status=502)
    responses.put(f"{BASE}/tickets/42", json=updated_answer(priority="3 high"))
    adapter.apply(ticket(), ChangeSet(ticket_id=42, priority="3 high"))
    assert len(responses.calls) == 2
    assert len(sleeps) == 1


@responses.activate
def test_draft_goes_to_a_shared_draft_when_the_group_has_them(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.get(f"{BASE}/tickets/42/shared_draft", json=load("shared_draft_none.json"))
    responses.put(
        f"{BASE}/tickets/42/shared_draft",
        json={"shared_draft_id": 6, "assets": {}},
        match=[
            matchers.json_params_matcher(
                {
                    "new_article": {
                        "body": DRAFT_HTML,
                        "type": "note",
                        "internal": True,
                        "content_type": "text/html",
                    },
                    "ticket_attributes": {},
                },
                strict_match=False,
            )
        ],
    )
    result = adapter.apply(ticket(), ChangeSet(ticket_id=42, draft=DRAFT, run_id=RUN))
    assert result.changed == ("shared_draft",)
    assert result.draft_created is True
    form_id = json.loads(responses.calls[-1].request.body)["form_id"]
    assert len(form_id) == 36  # a random UUID, as Zammad's form sends


def draft_note_matcher() -> Any:
    body = note_article(
        "<p>Draft reply, not sent to the customer:</p>" + DRAFT_HTML, "AI triage: draft reply"
    )
    return matchers.json_params_matcher({**body, "ticket_id": 42})


@responses.activate
def test_draft_falls_back_to_an_internal_note_where_the_group_has_no_shared_drafts(
    adapter: ZammadAdapter,
) -> None:
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.post(f"{BASE}/ticket_articles", status=201, json={}, match=[draft_note_matcher()])
    result = adapter.apply(
        ticket(queue="Human Resources"), ChangeSet(ticket_id=42, draft=DRAFT, run_id=RUN)
    )
    assert result.changed == ("draft_note",)
    assert [c.request.method for c in responses.calls] == ["GET", "POST"]


@responses.activate
def test_draft_falls_back_when_shared_drafts_are_switched_off(sleeps: list[float]) -> None:
    adapter = make_adapter(sleeps, shared_drafts=False)
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.post(f"{BASE}/ticket_articles", status=201, json={}, match=[draft_note_matcher()])
    assert adapter.apply(ticket(), ChangeSet(ticket_id=42, draft=DRAFT)).draft_created is True


@responses.activate
def test_an_agents_shared_draft_is_never_overwritten(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.get(f"{BASE}/tickets/42/shared_draft", json=load("shared_draft_by_agent.json"))
    responses.post(f"{BASE}/ticket_articles", status=201, json={}, match=[draft_note_matcher()])
    result = adapter.apply(ticket(), ChangeSet(ticket_id=42, draft=DRAFT, run_id=RUN))
    assert result.changed == ("draft_note",)
    assert "PUT" not in [c.request.method for c in responses.calls]


@responses.activate
def test_the_draft_of_this_run_is_not_written_twice(adapter: ZammadAdapter) -> None:
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    ours = {
        "shared_draft_id": 6,
        "assets": {"TicketSharedDraftZoom": {"6": {"new_article": {"body": DRAFT_HTML}}}},
    }
    responses.get(f"{BASE}/tickets/42/shared_draft", json=ours)
    result = adapter.apply(ticket(), ChangeSet(ticket_id=42, draft=DRAFT, run_id=RUN))
    assert result.skipped == ("draft",)
    result = adapter.apply(
        ticket(footers=frozenset({footer("draft", RUN)})),
        ChangeSet(ticket_id=42, draft=DRAFT, run_id=RUN),
    )
    assert result.skipped == ("draft",)
    assert [c.request.method for c in responses.calls] == ["GET", "GET"]


@responses.activate
def test_draft_note_post_is_not_retried_blindly(sleeps: list[float]) -> None:
    adapter = make_adapter(sleeps, shared_drafts=False)
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    responses.post(f"{BASE}/ticket_articles", status=503)
    responses.get(f"{BASE}/ticket_articles/by_ticket/42", json=[])
    with pytest.raises(errors.UnavailableError):
        adapter.apply(ticket(), ChangeSet(ticket_id=42, draft=DRAFT, run_id=RUN))
    posts = [c for c in responses.calls if c.request.method == "POST"]
    assert len(posts) == 1


# -- status codes and transport failures -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthError),
        (403, errors.AuthError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (422, errors.ConflictError),
        (429, errors.RateLimitedError),
        (500, errors.ServerError),
        (502, errors.UnavailableError),
        (503, errors.UnavailableError),
        (504, errors.UnavailableError),
    ],
)
@responses.activate
def test_status_maps_to_an_error_that_says_what_to_do(
    sleeps: list[float], status: int, expected: type[errors.HelpdeskError]
) -> None:
    adapter = make_adapter(sleeps, attempts=1)
    body = {"error": "maria.lopez@customer.example", "error_human": "Token token=secret-token"}
    responses.get(f"{BASE}/tickets/42", status=status, json=body)
    with pytest.raises(expected) as caught:
        adapter.get_ticket(42)
    error = caught.value
    assert (error.helpdesk, error.method, error.endpoint) == ("zammad", "GET", "/tickets/{id}")
    assert (error.status, error.ticket_id) == (status, 42)
    assert "customer.example" not in str(error)
    assert "secret-token" not in str(error)


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectTimeout("connect timed out"),
        requests.ReadTimeout("read timed out"),
        requests.ConnectionError("connection reset by peer"),
    ],
)
@responses.activate
def test_timeouts_and_resets_are_network_errors(sleeps: list[float], failure: Exception) -> None:
    adapter = make_adapter(sleeps, attempts=1)
    responses.get(f"{BASE}/tickets/42", body=failure)
    with pytest.raises(errors.NetworkError):
        adapter.get_ticket(42)


@responses.activate
def test_a_reset_then_success_is_retried(adapter: ZammadAdapter, sleeps: list[float]) -> None:
    responses.get(f"{BASE}/groups", body=requests.ConnectionError("reset"))
    responses.get(f"{BASE}/groups", body=requests.ReadTimeout("slow"))
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    assert adapter.queues()[0] == "Users"
    assert len(responses.calls) == 3
    assert len(sleeps) == 2


@responses.activate
def test_429_with_retry_after_seconds_then_success(
    adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    responses.get(f"{BASE}/groups", status=429, headers={"Retry-After": "2"})
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    assert adapter.queues() == ["Users", "Billing and Payments", "Human Resources"]
    assert len(responses.calls) == 2
    assert sleeps == [2.0]


@responses.activate
def test_429_with_retry_after_as_an_http_date(adapter: ZammadAdapter, sleeps: list[float]) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    responses.get(
        f"{BASE}/groups", status=429, headers={"Retry-After": email.utils.format_datetime(when)}
    )
    responses.get(f"{BASE}/groups", json=load("groups.json"))
    adapter.queues()
    assert len(responses.calls) == 2
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 30


@responses.activate
def test_401_is_fatal_and_not_retried(adapter: ZammadAdapter, sleeps: list[float]) -> None:
    responses.get(f"{BASE}/tickets/42", status=401, json={"error": "Invalid token!"})
    with pytest.raises(errors.AuthError):
        adapter.get_ticket(42)
    assert len(responses.calls) == 1
    assert sleeps == []


# -- webhooks ----------------------------------------------------------------------------------

SECRET = "webhook-s3cret"


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {
        "x-hub-signature": f"sha1={digest}",
        "x-zammad-delivery": "7f3c2a9e-0d4b-4c55-9a51-3b1f0c2d7e88",
        "x-zammad-trigger": "helpdesk-triage: ticket created",
        "content-type": "application/json",
    }


def webhook_adapter(**zammad: Any) -> ZammadAdapter:
    return make_adapter([], **zammad)


def test_webhook_with_a_valid_signature_gives_the_ticket_id_and_delivery() -> None:
    body = json.dumps(load("webhook_ticket_created.json")).encode()
    event = webhook_adapter(webhook_secret=SECRET).verify_webhook(signed(body), body)
    assert event.ticket_id == 42
    assert event.delivery_id == "7f3c2a9e-0d4b-4c55-9a51-3b1f0c2d7e88"
    assert event.event == "helpdesk-triage: ticket created"


def test_webhook_with_a_wrong_signature_is_rejected() -> None:
    body = json.dumps(load("webhook_ticket_created.json")).encode()
    with pytest.raises(WebhookRejected) as caught:
        webhook_adapter(webhook_secret=SECRET).verify_webhook(signed(body, "other-secret"), body)
    assert caught.value.reason == "bad_signature"


def test_a_replayed_body_with_one_byte_changed_is_rejected() -> None:
    body = json.dumps(load("webhook_ticket_created.json")).encode()
    headers = signed(body)
    tampered = body.replace(b'"id": 42', b'"id": 43')
    assert len(tampered) == len(body) and tampered != body
    with pytest.raises(WebhookRejected) as caught:
        webhook_adapter(webhook_secret=SECRET).verify_webhook(headers, tampered)
    assert caught.value.reason == "bad_signature"


def test_signature_is_checked_on_the_raw_bytes_not_on_re_encoded_json() -> None:
    body = b'{"ticket":  {"id": 42}}'  # unusual spacing: re-encoding would change the bytes
    event = webhook_adapter(webhook_secret=SECRET).verify_webhook(signed(body), body)
    assert event.ticket_id == 42


def test_missing_signature_is_rejected_when_required() -> None:
    body = b'{"ticket": {"id": 42}}'
    with pytest.raises(WebhookRejected) as caught:
        webhook_adapter(webhook_secret=SECRET).verify_webhook({}, body)
    assert caught.value.reason == "missing_signature"
    relaxed = webhook_adapter(webhook_secret=SECRET, require_webhook_signature=False)
    assert relaxed.verify_webhook({}, body).ticket_id == 42


def test_without_a_configured_secret_deliveries_are_refused_unless_allowed() -> None:
    body = b'{"ticket": {"id": 42}}'
    strict = webhook_adapter()
    with pytest.raises(WebhookRejected) as unsigned:
        strict.verify_webhook({}, body)
    assert unsigned.value.reason == "missing_signature"
    with pytest.raises(WebhookRejected) as unverifiable:
        strict.verify_webhook({"x-hub-signature": "sha1=00"}, body)
    assert unverifiable.value.reason == "bad_signature"
    relaxed = webhook_adapter(require_webhook_signature=False)
    assert relaxed.verify_webhook({}, body).ticket_id == 42
    assert relaxed.verify_webhook({"x-hub-signature": "sha1=00"}, body).ticket_id == 42


def test_a_signature_is_still_checked_when_not_required() -> None:
    body = b'{"ticket": {"id": 42}}'
    relaxed = webhook_adapter(webhook_secret=SECRET, require_webhook_signature=False)
    assert relaxed.verify_webhook(signed(body), body).ticket_id == 42
    with pytest.raises(WebhookRejected):
        relaxed.verify_webhook(signed(body, "wrong"), body)


@pytest.mark.parametrize(
    ("body", "ticket_id"),
    [
        (b'{"ticket_id": 17}', 17),
        (b'{"id": "18"}', 18),
        (b'{"ticket": {"id": 19, "title": "x"}, "article": {}}', 19),
    ],
)
def test_custom_payloads_may_carry_the_id_at_the_top(body: bytes, ticket_id: int) -> None:
    adapter = webhook_adapter(webhook_secret=SECRET)
    assert adapter.verify_webhook(signed(body), body).ticket_id == ticket_id


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"ticket": {}}', b'{"ticket_id": true}', b'{"id": -3}', b"\xff\xfe"],
)
def test_malformed_webhooks_are_rejected(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as caught:
        webhook_adapter(webhook_secret=SECRET).verify_webhook(signed(body), body)
    assert caught.value.reason == "malformed"
