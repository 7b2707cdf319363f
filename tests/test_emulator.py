"""The Zammad emulator follows Zammad's API: statuses, bodies, tags, search, webhooks, faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import requests

from connector.emulator import DEMO_TOKEN, EmulatorServer
from connector.emulator import query as q

if TYPE_CHECKING:
    from tests.conftest_emulator import WebhookReceiver

# The emulator, api and receiver fixtures.
pytest_plugins = ("tests.conftest_emulator",)

# -- the query subset, without HTTP ----------------------------------------------------------------

DOC: dict[str, tuple[object, ...]] = {
    "id": (7,),
    "tags": ("billing", "ai-triaged"),
    "state.name": ("open",),
    "group.name": ("Users",),
    "owner_id": (4,),
    "updated_at": (datetime(2026, 11, 24, 10, 0, 30, tzinfo=UTC),),
}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("*:*", True),
        ('state.name:"open"', True),
        ("state.name:OPEN", True),
        ('state.name:("new" OR "open")', True),
        ('state.name:("new" OR "closed")', False),
        ("tags:ai-triaged AND tags:billing", True),
        ("tags:ai-triaged AND tags:retriage", False),
        ("tags:bill*", True),
        ("tags:*", True),
        ("owner_id:(3 OR 4)", True),
        ("updated_at:[2026-11-24T10:00:30Z TO *]", True),
        ("updated_at:{2026-11-24T10:00:30Z TO *]", False),
        ("updated_at:>=2026-11-24T10:00:30Z", True),
        ("updated_at:>2026-11-24T10:00:30Z", False),
        ("updated_at:<2026-11-25", True),
        ('group.name:"Users" -tags:billing', False),
        ('group.name:"Users" +tags:billing', True),
        ("NOT tags:ai-triaged", False),
        ("(*:* NOT tags:(ai-triaged OR triage-error)) OR tags:retriage", False),
        ('tags:"ai\\-triaged"', True),
    ],
)
def test_query_subset(text: str, matches: bool) -> None:
    assert q.parse(text).matches(DOC) is matches


def test_not_binds_like_lucene_not_like_boolean_logic() -> None:
    # Lucene reads "NOT a OR b" as "b and not a", as Elasticsearch does: the
    # emulator keeps that, so a query that is wrong against Zammad is wrong here too.
    untriaged = {**DOC, "tags": ("billing",)}
    assert q.parse("NOT tags:ai-triaged OR tags:retriage").matches(untriaged) is False
    assert q.parse("(*:* NOT tags:ai-triaged) OR tags:retriage").matches(untriaged) is True
    assert q.parse("(NOT tags:ai-triaged) OR tags:retriage").matches(untriaged) is True


@pytest.mark.parametrize(
    "text",
    ["", "title", "unknown_field:x", "(tags:a", "tags:a)", "tags:a AND", "updated_at:[x TO *]"],
)
def test_queries_outside_the_subset_are_errors(text: str) -> None:
    with pytest.raises(q.QueryError):
        q.parse(text)


# -- authentication and errors ---------------------------------------------------------------------


def test_401_without_or_with_a_bad_token(emulator: EmulatorServer) -> None:
    missing = requests.get(f"{emulator.api_url}/users/me")
    assert missing.status_code == 401
    assert missing.json() == {
        "error": "Authentication required",
        "error_human": "Authentication required",
    }
    bad = requests.get(
        f"{emulator.api_url}/users/me", headers={"Authorization": "Token token=wrong"}
    )
    assert bad.status_code == 401
    assert bad.json()["error"] == "Invalid token!"


def test_token_and_bearer_forms_both_authenticate(emulator: EmulatorServer) -> None:
    for header in (f"Token token={DEMO_TOKEN}", f"Bearer {DEMO_TOKEN}"):
        me = requests.get(f"{emulator.api_url}/users/me", headers={"Authorization": header})
        assert me.status_code == 200
        assert me.json()["login"] == "triage-bot"


def test_basic_auth_with_a_configured_password() -> None:
    with EmulatorServer(seed=False, password="pw-123") as server:
        ok = requests.get(f"{server.api_url}/users/me", auth=("triage-bot", "pw-123"))
        assert ok.status_code == 200
        wrong = requests.get(f"{server.api_url}/users/me", auth=("triage-bot", "nope"))
        assert wrong.status_code == 401


def test_unknown_ticket_and_unknown_route_are_404_with_zammads_body(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    missing = api.get(f"{emulator.api_url}/tickets/9999")
    assert missing.status_code == 404
    assert missing.json()["error"] == "Couldn't find Ticket with 'id'=9999"
    assert api.get(f"{emulator.api_url}/tickets/abc").status_code == 404
    route = api.get(f"{emulator.api_url}/no_such_thing")
    assert route.status_code == 404
    assert route.json()["error"] == "No route matches [GET] /api/v1/no_such_thing"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"group": "Nowhere"}, "No lookup value found for 'group': \"Nowhere\""),
        ({"priority": "9 urgent"}, "No lookup value found for 'priority': \"9 urgent\""),
        ({"state": "done"}, "No lookup value found for 'state': \"done\""),
    ],
)
def test_unknown_names_are_422_and_change_nothing(
    emulator: EmulatorServer, api: requests.Session, body: dict[str, str], message: str
) -> None:
    before = api.get(f"{emulator.api_url}/tickets/1").json()
    answer = api.put(f"{emulator.api_url}/tickets/1", json={"title": "changed", **body})
    assert answer.status_code == 422
    assert answer.json() == {"error": message, "error_human": message}
    assert api.get(f"{emulator.api_url}/tickets/1").json() == before


def test_ids_win_over_names(emulator: EmulatorServer, api: requests.Session) -> None:
    billing = next(g for g in emulator.store.groups.values() if g.name == "Billing and Payments")
    answer = api.put(
        f"{emulator.api_url}/tickets/1",
        params={"expand": "true"},
        json={"group": "Users", "group_id": billing.id, "priority_id": 3, "priority": "1 low"},
    )
    assert answer.status_code == 200
    assert (answer.json()["group"], answer.json()["priority"]) == (
        "Billing and Payments",
        "3 high",
    )


def test_owner_without_full_access_is_answered_200_but_not_set(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    emma = next(u for u in emulator.store.users.values() if u.login == "emma.fischer")
    anna = next(u for u in emulator.store.users.values() if u.login == "anna.schmidt")
    ignored = api.put(f"{emulator.api_url}/tickets/1", json={"owner_id": emma.id})
    assert ignored.status_code == 200
    assert ignored.json()["owner_id"] == 1
    applied = api.put(f"{emulator.api_url}/tickets/1", json={"owner_id": anna.id})
    assert applied.json()["owner_id"] == anna.id


def test_a_move_unassigns_an_owner_without_full_access_to_the_new_group(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    ben = next(u for u in emulator.store.users.values() if u.login == "ben.keller")
    assert api.put(f"{emulator.api_url}/tickets/1", json={"owner_id": ben.id}).ok
    moved = api.put(f"{emulator.api_url}/tickets/1", json={"group": "Technical Support"})
    assert moved.status_code == 200
    assert moved.json()["owner_id"] == 1  # Zammad's check_owner_active, still a 200
    # A closed ticket keeps its owner through a move, for reporting.
    assert api.put(f"{emulator.api_url}/tickets/1", json={"group": "Users"}).ok
    assert api.put(f"{emulator.api_url}/tickets/1", json={"owner_id": ben.id}).ok
    closed = api.put(
        f"{emulator.api_url}/tickets/1", json={"state": "closed", "group": "Technical Support"}
    )
    assert closed.json()["owner_id"] == ben.id


def test_updates_record_who_and_when(emulator: EmulatorServer, api: requests.Session) -> None:
    before = api.get(f"{emulator.api_url}/tickets/1").json()
    assert before["updated_by_id"] == before["customer_id"] == before["created_by_id"]
    after = api.put(f"{emulator.api_url}/tickets/1", json={"priority": "3 high"}).json()
    assert after["updated_by_id"] == emulator.triage_user.id
    assert after["created_by_id"] == before["created_by_id"]
    assert after["updated_at"] > before["updated_at"]


# -- articles --------------------------------------------------------------------------------------


def test_internal_defaults_to_false_on_articles(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    created = api.post(
        f"{emulator.api_url}/ticket_articles",
        json={"ticket_id": 1, "body": "visible to the customer!", "type": "note"},
    )
    assert created.status_code == 201
    assert created.json()["internal"] is False
    assert created.json()["sender"] == "Agent"
    assert created.json()["content_type"] == "text/plain"
    api.put(f"{emulator.api_url}/tickets/2", json={"article": {"body": "also public"}})
    last = api.get(f"{emulator.api_url}/ticket_articles/by_ticket/2").json()[-1]
    assert (last["body"], last["internal"], last["type"]) == ("also public", False, "note")


def test_articles_are_listed_oldest_first_with_names(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    api.post(
        f"{emulator.api_url}/ticket_articles",
        json={"ticket_id": 1, "body": "n", "type": "note", "internal": True},
    )
    articles = api.get(f"{emulator.api_url}/ticket_articles/by_ticket/1").json()
    assert [a["sender"] for a in articles] == ["Customer", "Agent"]
    assert articles[0]["id"] < articles[1]["id"]
    assert articles[1]["internal"] is True


def test_all_true_answers_ticket_articles_people_and_tags_in_zammads_shape(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    url = emulator.api_url
    api.post(f"{url}/tags/add", json={"object": "Ticket", "o_id": 1, "item": "vip"})
    api.post(f"{url}/ticket_articles", json={"ticket_id": 1, "body": "n", "internal": True})
    answer = api.get(f"{url}/tickets/1", params={"all": "true"}).json()
    assert set(answer) == {
        "ticket_id",
        "ticket_article_ids",
        "assets",
        "links",
        "tags",
        "mentions",
        "time_accountings",
        "form_meta",
    }
    by_ticket = api.get(f"{url}/ticket_articles/by_ticket/1").json()
    assert answer["ticket_id"] == 1
    assert answer["ticket_article_ids"] == [a["id"] for a in by_ticket]
    assert (
        answer["tags"]
        == api.get(f"{url}/tags", params={"object": "Ticket", "o_id": 1}).json()["tags"]
    )
    ticket = answer["assets"]["Ticket"]["1"]
    assert ticket == api.get(f"{url}/tickets/1").json()  # ids, no names
    assert "group" not in ticket
    articles = answer["assets"]["TicketArticle"]
    for listed in by_ticket:
        article = articles[str(listed["id"])]
        assert "sender" not in article and "type" not in article  # ids only, as in assets
        assert article["sender_id"] == listed["sender_id"]
        assert article["body"] == listed["body"]
    people = answer["assets"]["User"]
    assert {str(ticket["customer_id"]), str(ticket["owner_id"])} <= set(people)


def test_all_true_shows_a_customer_only_public_articles_and_expand_wins(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    url = emulator.api_url
    api.post(f"{url}/ticket_articles", json={"ticket_id": 1, "body": "n", "internal": True})
    api.put(
        f"{url}/tickets/1/shared_draft",
        json={"form_id": "f", "new_article": {"body": "draft"}, "ticket_attributes": {}},
    )
    customer = emulator.store.users[emulator.store.tickets[1].customer_id]
    as_customer = requests.get(
        f"{url}/tickets/1",
        params={"all": "true"},
        headers={"Authorization": f"Token token={emulator.store.issue_token(customer.id)}"},
    ).json()
    as_agent = api.get(f"{url}/tickets/1", params={"all": "true"}).json()
    assert len(as_agent["ticket_article_ids"]) == len(as_customer["ticket_article_ids"]) + 1
    assert "TicketSharedDraftZoom" in as_agent["assets"]
    assert "TicketSharedDraftZoom" not in as_customer["assets"]
    both = api.get(f"{url}/tickets/1", params={"all": "true", "expand": "true"}).json()
    assert (
        both["group"] == emulator.store.groups[both["group_id"]].name
    )  # Zammad checks expand first
    updated = api.put(f"{url}/tickets/1", params={"all": "true"}, json={"priority": "3 high"})
    assert updated.json()["assets"]["Ticket"]["1"]["priority_id"] == 3


# -- tags ------------------------------------------------------------------------------------------


def test_tags_keep_insertion_order_and_answer_like_zammad(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    url = emulator.api_url
    before = api.get(f"{url}/tickets/1").json()

    def tag(method: str, item: str) -> requests.Response:
        path = "/tags/add" if method == "POST" else "/tags/remove"
        return api.request(
            method, f"{url}{path}", json={"object": "Ticket", "o_id": 1, "item": item}
        )

    for item in ("zeta", "alpha", "mid"):
        added = tag("POST", item)
        assert (added.status_code, added.json()) == (201, True)
    assert (tag("POST", "ALPHA").status_code, tag("POST", "ALPHA").json()) == (201, True)
    removed = tag("DELETE", "zeta")
    assert (removed.status_code, removed.json()) == (200, True)
    tag("POST", "zeta")
    listed = api.get(f"{url}/tags", params={"object": "Ticket", "o_id": 1}).json()
    assert listed == {"tags": ["alpha", "mid", "zeta"]}
    after = api.get(f"{url}/tickets/1").json()
    assert after["updated_at"] > before["updated_at"]
    assert after["updated_by_id"] == before["updated_by_id"]  # a touch, not an edit
    assert emulator.stats.for_ticket(1)["tags_added"] == 4
    assert emulator.stats.for_ticket(1)["tags_removed"] == 1


def test_tag_add_ignores_case_and_tag_remove_is_exact(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    url = emulator.api_url

    def tag(method: str, item: str) -> requests.Response:
        path = "/tags/add" if method == "POST" else "/tags/remove"
        return api.request(
            method, f"{url}{path}", json={"object": "Ticket", "o_id": 1, "item": item}
        )

    def listed() -> list[str]:
        answer = api.get(f"{url}/tags", params={"object": "Ticket", "o_id": 1}).json()
        return list(answer["tags"])

    tag("POST", "Retriage")
    assert (tag("POST", "retriage").status_code, listed()) == (201, ["Retriage"])
    removed = tag("DELETE", "retriage")
    assert (removed.status_code, removed.json(), listed()) == (200, True, ["Retriage"])
    tag("DELETE", "Retriage")
    assert listed() == []
    assert emulator.stats.for_ticket(1)["tags_removed"] == 1


def test_blank_tag_is_422(emulator: EmulatorServer, api: requests.Session) -> None:
    answer = api.post(
        f"{emulator.api_url}/tags/add", json={"object": "Ticket", "o_id": 1, "item": " "}
    )
    assert answer.status_code == 422


# -- search and listing ----------------------------------------------------------------------------

OPEN_UNTRIAGED = (
    'state.name:("new" OR "open") AND ((*:* NOT tags:("ai-triaged" OR "triage-error")) '
    'OR tags:"retriage")'
)


def search(api: requests.Session, emulator: EmulatorServer, **params: Any) -> Any:
    answer = api.get(f"{emulator.api_url}/tickets/search", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_search_filters_sorts_and_pages(emulator: EmulatorServer, api: requests.Session) -> None:
    store = emulator.store
    expected = sorted(
        (
            t
            for t in store.tickets.values()
            if store.states[t.state_id].name in ("new", "open") and "ai-triaged" not in t.tags
        ),
        key=lambda t: (t.updated_at, t.id),
    )
    assert len(expected) > 20
    first = search(
        api,
        emulator,
        query=OPEN_UNTRIAGED,
        sort_by="updated_at",
        order_by="asc",
        per_page=20,
        page=1,
        expand="true",
    )
    second = search(
        api,
        emulator,
        query=OPEN_UNTRIAGED,
        sort_by="updated_at",
        order_by="asc",
        per_page=20,
        page=2,
        expand="true",
    )
    assert [t["id"] for t in first + second] == [t.id for t in expected]
    assert all(t["state"] in ("new", "open") for t in first)


def test_search_answers_in_three_shapes(emulator: EmulatorServer, api: requests.Session) -> None:
    flat = search(api, emulator, query="tags:ai-triaged", expand="true")
    full = search(api, emulator, query="tags:ai-triaged", full="true")
    legacy = search(api, emulator, query="tags:ai-triaged")
    ids = [t["id"] for t in flat]
    assert ids and full["record_ids"] == ids and legacy["tickets"] == ids
    assert full["total_count"] == legacy["tickets_count"] == len(ids)
    assert set(full["assets"]["Ticket"]) == {str(i) for i in ids}
    assert flat[0]["group"] == "Billing and Payments"  # expand adds names


def test_search_caps_per_page_at_200_and_rejects_unknown_syntax(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    api.post(f"{emulator.url}/_emulator/tickets/bulk", json={"count": 230})
    page = search(api, emulator, query='state.name:"new"', per_page=500, expand="true")
    assert len(page) == 200
    bad = api.get(f"{emulator.api_url}/tickets/search", params={"query": "secret_field:1"})
    assert bad.status_code == 422


def test_search_by_update_time(emulator: EmulatorServer, api: requests.Session) -> None:
    newest = max(emulator.store.tickets.values(), key=lambda t: t.updated_at)
    since = (newest.updated_at - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    found = search(api, emulator, query=f"updated_at:[{since} TO *]", expand="true")
    assert newest.id in [t["id"] for t in found]
    assert all(t["updated_at"] >= since for t in found)


def test_ticket_list_is_by_id_and_capped_at_100(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    api.post(f"{emulator.url}/_emulator/tickets/bulk", json={"count": 80})
    page = api.get(f"{emulator.api_url}/tickets", params={"per_page": 500, "page": 1}).json()
    assert [t["id"] for t in page] == list(range(1, 101))
    rest = api.get(f"{emulator.api_url}/tickets", params={"per_page": 100, "page": 2}).json()
    assert [t["id"] for t in rest] == list(range(101, 122))
    full = api.get(f"{emulator.api_url}/tickets", params={"per_page": 5, "full": "true"}).json()
    assert full["record_ids"] == [1, 2, 3, 4, 5] and "total_count" not in full
    expanded = api.get(f"{emulator.api_url}/tickets", params={"expand": "true"}).json()
    assert expanded[0]["group"] == "Users"


# -- users and lookups -----------------------------------------------------------------------------


def test_users_search_by_permission_and_group_access(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    support = next(g for g in emulator.store.groups.values() if g.name == "Technical Support")
    found = api.get(
        f"{emulator.api_url}/users/search",
        params={"query": "*", "permissions[]": "ticket.agent", f"group_ids[{support.id}]": "full"},
    ).json()
    assert [u["login"] for u in found] == ["triage-bot", "anna.schmidt", "david.brooks"]


def test_customers_cannot_search_users(emulator: EmulatorServer) -> None:
    maria = next(u for u in emulator.store.users.values() if u.login == "maria.lopez")
    token = emulator.store.issue_token(maria.id)
    answer = requests.get(
        f"{emulator.api_url}/users/search",
        params={"query": "*"},
        headers={"Authorization": f"Token token={token}"},
    )
    assert answer.status_code == 403


def test_groups_priorities_and_states(emulator: EmulatorServer, api: requests.Session) -> None:
    groups = api.get(f"{emulator.api_url}/groups").json()
    names = [g["name"] for g in groups]
    assert names[0] == "Users" and "General Inquiry" in names and len(names) == 11
    hr = next(g for g in groups if g["name"] == "Human Resources")
    assert hr["shared_drafts"] is False
    assert [p["name"] for p in api.get(f"{emulator.api_url}/ticket_priorities").json()] == [
        "1 low",
        "2 normal",
        "3 high",
    ]
    states = [s["name"] for s in api.get(f"{emulator.api_url}/ticket_states").json()]
    assert states == ["new", "open", "pending reminder", "closed"]


# -- shared drafts ---------------------------------------------------------------------------------


def test_shared_draft_lifecycle(emulator: EmulatorServer, api: requests.Session) -> None:
    url = f"{emulator.api_url}/tickets/1/shared_draft"
    assert api.get(url).json() == {"shared_draft_id": None, "assets": None}
    body = {"form_id": "f-1", "new_article": {"body": "draft one"}, "ticket_attributes": {}}
    created = api.put(url, json=body).json()
    replaced = api.put(url, json={**body, "new_article": {"body": "draft two"}}).json()
    assert created["shared_draft_id"] == replaced["shared_draft_id"]
    shown = api.get(url).json()
    record = shown["assets"]["TicketSharedDraftZoom"][str(shown["shared_draft_id"])]
    assert record["new_article"] == {"body": "draft two"}
    assert api.delete(url).json() == {"shared_draft_id": created["shared_draft_id"]}
    assert api.delete(url).status_code == 404
    assert emulator.stats.for_ticket(1)["shared_drafts_written"] == 2


# -- ticket creation and webhooks ------------------------------------------------------------------

NEW_TICKET = {
    "title": "Printer on fire",
    "group": "Users",
    "customer": "maria.lopez",
    "article": {
        "subject": "Printer on fire",
        "body": "Help!",
        "type": "email",
        "sender": "Customer",
    },
}


def create(server: EmulatorServer, payload: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(
        f"{server.api_url}/tickets",
        json=payload or NEW_TICKET,
        headers={"Authorization": f"Token token={DEMO_TOKEN}"},
    )


def test_creating_a_ticket_fires_a_signed_webhook(receiver: WebhookReceiver) -> None:
    with receiver.server() as server:
        created = create(server)
        assert created.status_code == 201
        assert receiver.wait_for(1)
        delivery = receiver.deliveries[0]
        expected = hmac.new(b"hook-s3cret", delivery.body, hashlib.sha1).hexdigest()
        assert delivery.headers["x-hub-signature"] == f"sha1={expected}"
        assert delivery.headers["x-zammad-trigger"] == "helpdesk-triage: ticket created"
        assert delivery.headers["content-type"] == "application/json; charset=utf-8"
        assert delivery.headers["user-agent"] == "Zammad User Agent"
        payload = json.loads(delivery.body)
        assert payload["ticket"]["id"] == created.json()["id"]
        assert payload["article"]["body"] == "Help!"
        assert payload["article"]["sender"] == "Customer"


def test_the_webhook_payload_has_zammads_default_shape(receiver: WebhookReceiver) -> None:
    with receiver.server() as server:
        created = create(server)
        assert receiver.wait_for(1)
        ticket = json.loads(receiver.deliveries[0].body)["ticket"]
        article = json.loads(receiver.deliveries[0].body)["article"]
        assert list(ticket) == sorted(ticket)
        for association in ("owner", "customer", "created_by", "updated_by"):
            user = ticket[association]
            assert isinstance(user, dict) and user["id"] == ticket[f"{association}_id"]
            assert not {"group_ids", "groups", "password", "preferences"} & set(user)
        assert ticket["group"]["id"] == ticket["group_id"] and ticket["group"]["name"] == "Users"
        assert ticket["priority"]["id"] == ticket["priority_id"]
        assert isinstance(ticket["priority"]["name"], str)
        assert ticket["organization"] == {}
        assert ticket["state"] == "new"  # a name: state is not among the associations
        assert "tags" not in ticket
        assert article["ticket_id"] == created.json()["id"]
        assert article["created_by"]["id"] == article["created_by_id"]
        assert article["accounted_time"] == 0


def test_a_ticket_created_without_an_article_sends_an_empty_article(
    receiver: WebhookReceiver,
) -> None:
    with receiver.server() as server:
        payload = {k: v for k, v in NEW_TICKET.items() if k != "article"}
        assert create(server, payload).status_code == 201
        assert receiver.wait_for(1)
        assert json.loads(receiver.deliveries[0].body)["article"] == {}


def test_each_delivery_has_its_own_id(receiver: WebhookReceiver) -> None:
    with receiver.server() as server:
        for _ in range(3):
            create(server)
        assert receiver.wait_for(3)
        ids = {d.headers["x-zammad-delivery"] for d in receiver.deliveries}
        assert len(ids) == 3


def test_failed_deliveries_are_retried_with_the_same_delivery_id(
    receiver: WebhookReceiver,
) -> None:
    receiver.fail_first = 2
    with receiver.server() as server:
        create(server)
        assert receiver.wait_for(3)
        assert server.webhooks is not None and server.webhooks.wait_idle(10)
        assert len({d.headers["x-zammad-delivery"] for d in receiver.deliveries}) == 1
        stats = server.stats.snapshot()["webhooks"]
        assert (stats["attempts"], stats["delivered"], stats["failed_attempts"]) == (3, 1, 2)


def test_a_delivery_is_dropped_after_four_retries(receiver: WebhookReceiver) -> None:
    receiver.fail_first = 100
    with receiver.server() as server:
        created = create(server).json()
        assert server.webhooks is not None and server.webhooks.wait_idle(10)
        assert len(receiver.deliveries) == 5
        assert server.stats.snapshot()["webhooks"]["dropped"] == 1
        assert server.stats.for_ticket(created["id"])["webhook_deliveries"] == 5


def test_a_slow_receiver_does_not_hold_up_the_api(receiver: WebhookReceiver) -> None:
    receiver.gate = threading.Event()
    with receiver.server() as server:
        # The receiver holds every delivery until the gate opens, so the answer
        # can only arrive while the delivery is still pending.
        assert create(server).status_code == 201
        assert receiver.deliveries == []
        receiver.gate.set()
        assert receiver.wait_for(1)


def test_unsigned_when_no_secret(receiver: WebhookReceiver) -> None:
    with receiver.server(secret=None) as server:
        create(server)
        assert receiver.wait_for(1)
        assert "x-hub-signature" not in receiver.deliveries[0].headers


def test_bulk_creation_can_fire_webhooks(receiver: WebhookReceiver) -> None:
    with receiver.server() as server:
        made = requests.post(
            f"{server.url}/_emulator/tickets/bulk", json={"count": 4, "webhooks": True}
        ).json()
        assert len(made["ticket_ids"]) == 4
        assert receiver.wait_for(4)
        assert sorted(json.loads(d.body)["ticket"]["id"] for d in receiver.deliveries) == sorted(
            made["ticket_ids"]
        )


# -- faults ----------------------------------------------------------------------------------------


def add_fault(server: EmulatorServer, **rule: Any) -> requests.Response:
    return requests.post(f"{server.url}/_emulator/faults", json=rule)


def test_injected_429_with_retry_after_for_a_number_of_times(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    added = add_fault(
        emulator, method="GET", path=r"^/api/v1/tickets/\d+$", status=429, retry_after="3", times=2
    )
    assert added.status_code == 201
    url = f"{emulator.api_url}/tickets/1"
    assert api.put(url, json={}).status_code == 200  # other methods are untouched
    for _ in range(2):
        limited = api.get(url)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "3"
        assert limited.json()["error"] == "Too Many Requests"
    assert api.get(url).status_code == 200
    assert emulator.stats.snapshot()["faults"] == {"status_429": 2}


def test_a_dropped_connection_looks_like_one(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    add_fault(emulator, path="/users/me", drop_connection=True, times=1)
    with pytest.raises(requests.ConnectionError):
        api.get(f"{emulator.api_url}/users/me")
    assert api.get(f"{emulator.api_url}/users/me").status_code == 200


def test_a_delay_only_fault_still_answers(emulator: EmulatorServer, api: requests.Session) -> None:
    add_fault(emulator, path="/groups", delay_seconds=0.05, times=1)
    assert api.get(f"{emulator.api_url}/groups").status_code == 200
    assert emulator.stats.snapshot()["faults"] == {"delayed": 1}


def test_faults_can_be_listed_and_cleared_and_never_hit_admin_routes(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    add_fault(emulator, status=503)
    assert api.get(f"{emulator.api_url}/groups").status_code == 503
    assert requests.get(f"{emulator.url}/_emulator/stats").status_code == 200
    listed = requests.get(f"{emulator.url}/_emulator/faults").json()["rules"]
    assert listed[0]["status"] == 503 and listed[0]["hits"] == 1
    requests.delete(f"{emulator.url}/_emulator/faults")
    assert api.get(f"{emulator.api_url}/groups").status_code == 200


@pytest.mark.parametrize(
    "rule",
    [{}, {"status": 99}, {"status": 500, "times": 0}, {"path": "(", "status": 500}, {"x": 1}],
)
def test_invalid_fault_rules_are_refused(emulator: EmulatorServer, rule: dict[str, Any]) -> None:
    assert add_fault(emulator, **rule).status_code == 422


# -- accounting and reset --------------------------------------------------------------------------


def test_stats_count_writes_per_endpoint_and_ticket(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    api.put(
        f"{emulator.api_url}/tickets/3",
        json={"priority": "3 high", "article": {"body": "n", "internal": True}},
    )
    api.post(f"{emulator.api_url}/tags/add", json={"object": "Ticket", "o_id": 3, "item": "x"})
    stats = requests.get(f"{emulator.url}/_emulator/stats").json()
    assert stats["writes"] == {"PUT /api/v1/tickets/{id}": 1, "POST /api/v1/tags/add": 1}
    assert stats["tickets"]["3"]["internal_notes_created"] == 1
    assert stats["tickets"]["3"]["ticket_updates"] == 1
    assert stats["tickets"]["3"]["tags_added"] == 1


def test_reset_restores_the_seed(emulator: EmulatorServer, api: requests.Session) -> None:
    seeded = len(emulator.store.tickets)
    create(emulator)
    add_fault(emulator, status=500, path="/groups")
    reset = requests.post(f"{emulator.url}/_emulator/reset").json()
    assert reset == {"status": "ok", "tickets": seeded}
    assert requests.get(f"{emulator.url}/_emulator/stats").json()["requests_total"] == 0
    assert api.get(f"{emulator.api_url}/groups").status_code == 200


def test_timings_record_creation_and_the_first_triaged_tag(
    emulator: EmulatorServer, api: requests.Session
) -> None:
    first = create(emulator).json()["id"]
    second = create(emulator).json()["id"]

    def timings(**params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = requests.get(
            f"{emulator.url}/_emulator/timings", params=params
        ).json()
        return answer

    def tag(method: str, item: str) -> None:
        path = "/tags/add" if method == "POST" else "/tags/remove"
        api.request(
            method,
            f"{emulator.api_url}{path}",
            json={"object": "Ticket", "o_id": first, "item": item},
        )

    tag("POST", "billing")  # not the marker
    assert timings(from_id=first, to_id=second)["tickets"][str(first)]["triaged"] is None
    tag("POST", "AI-Triaged")  # tags compare case-insensitively
    marked = timings(from_id=first, to_id=second)
    assert marked["triaged_tag"] == "ai-triaged"
    assert (marked["created_count"], marked["triaged_count"]) == (2, 1)
    row = marked["tickets"][str(first)]
    assert row["created"] <= row["triaged"]
    assert marked["tickets"][str(second)]["triaged"] is None
    # Re-triage takes the tag off and puts it back: the first time stays.
    tag("DELETE", "ai-triaged")
    tag("POST", "ai-triaged")
    assert timings(from_id=first, to_id=first)["tickets"][str(first)] == row
    assert "tickets" not in timings(tickets="false")
    assert (
        requests.get(f"{emulator.url}/_emulator/timings", params={"from_id": "x"}).status_code
        == 422
    )
    requests.post(f"{emulator.url}/_emulator/reset")
    assert timings(from_id=first, to_id=second)["created_count"] == 0


def test_seed_covers_the_model_queues_languages_and_shapes(emulator: EmulatorServer) -> None:
    store = emulator.store
    tickets = list(store.tickets.values())
    assert 35 <= len(tickets) <= 50
    first_bodies = [store.articles[t.article_ids[0]] for t in tickets]
    assert any(a.content_type == "text/html" and "blockquote" in a.body for a in first_bodies)
    assert any(a.body == "" for a in first_bodies)
    assert max(len(a.body) for a in first_bodies) > 10_000
    assert {store.states[t.state_id].name for t in tickets} == {
        "new",
        "open",
        "pending reminder",
        "closed",
    }


def test_the_command_line_serves_until_terminated() -> None:
    code = (
        "import argparse, sys\n"
        "from connector.emulator import cli\n"
        "parser = argparse.ArgumentParser()\n"
        "cli.add_arguments(parser)\n"
        "sys.exit(cli.main(parser.parse_args(['--port', '0'])))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        api_url = first.split()[2]
        assert api_url.startswith("http://127.0.0.1:") and api_url.endswith("/api/v1")
        me = requests.get(f"{api_url}/users/me", headers={"Authorization": f"Bearer {DEMO_TOKEN}"})
        assert me.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)
    assert returncode == 0


def test_in_process_helpers_for_the_demo(receiver: WebhookReceiver) -> None:
    with receiver.server() as server:
        waiting = server.ticket_ids()
        store = server.store
        assert all(store.states[store.tickets[i].state_id].name in ("new", "open") for i in waiting)
        assert len(server.ticket_ids(needs_triage=False)) == len(store.tickets) > len(waiting)
        new_id = server.create_customer_ticket("Kaputt", "Der Drucker druckt nicht.")
        assert server.ticket_subject(new_id) == "Kaputt"
        assert server.ticket_ids()[-1] == new_id
        ticket = store.tickets[new_id]
        assert store.users[ticket.created_by_id].has("ticket.customer")
        assert ticket.updated_by_id == ticket.customer_id
        assert receiver.wait_for(1)
        assert json.loads(receiver.deliveries[0].body)["ticket"]["id"] == new_id


def test_listing_groups_can_need_admin_group_as_before_zammad_6_5() -> None:
    server = EmulatorServer(groups_need_admin=True)
    server.start()
    try:
        agent = requests.Session()
        agent.headers["Authorization"] = f"Token token={server.token}"
        refused = agent.get(f"{server.api_url}/groups")
        assert refused.status_code == 403
        me = agent.get(f"{server.api_url}/users/me").json()
        full = agent.get(f"{server.api_url}/users/{me['id']}", params={"full": "true"}).json()
        assert full["id"] == me["id"]
        groups = {g["name"] for g in full["assets"]["Group"].values()}
        assert groups == {g.name for g in server.store.groups.values()}
        assert "password" not in full["assets"]["User"][str(me["id"])]
    finally:
        server.stop()
