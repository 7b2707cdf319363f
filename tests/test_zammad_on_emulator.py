"""The Zammad adapter against the emulator, over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import requests

from connector import errors
from connector.adapters.base import WebhookEvent, WebhookRejected
from connector.adapters.zammad import ZammadAdapter
from connector.config import HttpSettings, MarkerSettings, ZammadSettings
from connector.domain import ChangeSet, Claim
from connector.emulator import EmulatorServer
from connector.footer import footer, new_run_id
from connector.metrics import Metrics

if TYPE_CHECKING:
    from tests.conftest_emulator import Delivery, WebhookReceiver

# The emulator, api and receiver fixtures.
pytest_plugins = ("tests.conftest_emulator",)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def adapter_for(
    server: EmulatorServer, sleeps: list[float], *, token: str | None = None, **zammad: Any
) -> ZammadAdapter:
    settings = ZammadSettings(url=server.url, token=token or server.token, **zammad)
    http = HttpSettings(retry_attempts=4, retry_total_seconds=60, retry_after_max_seconds=30)
    return ZammadAdapter(settings, MarkerSettings(), http, sleep=sleeps.append)


@pytest.fixture
def adapter(emulator: EmulatorServer, sleeps: list[float]) -> ZammadAdapter:
    zammad = adapter_for(emulator, sleeps)
    zammad.check()
    return zammad


def open_untriaged_ids(server: EmulatorServer) -> list[int]:
    store = server.store
    wanted = [
        t
        for t in store.tickets.values()
        if store.states[t.state_id].name in ("new", "open")
        and (
            "retriage" in t.tags or not {"ai-triaged", "triage-error"} & {x.lower() for x in t.tags}
        )
    ]
    return [t.id for t in sorted(wanted, key=lambda t: (t.updated_at, t.id))]


def triage(adapter: ZammadAdapter, ticket_id: int, run: str, **change: Any) -> tuple[Claim, Any]:
    ticket = adapter.get_ticket(ticket_id)
    claim = Claim(datetime.now(UTC), run)
    assert adapter.claim(ticket_id, claim).claims[-1] == claim
    result = adapter.apply(adapter.get_ticket(ticket_id), ChangeSet(ticket_id=ticket.id, **change))
    adapter.finish(ticket_id, claim, "model-test")
    return claim, result


def human_session(server: EmulatorServer, login: str = "anna.schmidt") -> requests.Session:
    user = next(u for u in server.store.users.values() if u.login == login)
    session = requests.Session()
    session.headers["Authorization"] = f"Token token={server.store.issue_token(user.id)}"
    return session


# -- credentials and finding tickets ------------------------------------------------------------


def test_a_bad_token_fails_the_check(emulator: EmulatorServer, sleeps: list[float]) -> None:
    with pytest.raises(errors.AuthError) as caught:
        adapter_for(emulator, sleeps, token="not-the-token").check()
    assert caught.value.status == 401
    assert sleeps == []
    assert emulator.stats.snapshot()["requests"] == {"GET /api/v1/users/me": 1}


def test_untriaged_finds_open_tickets_without_the_marker_in_update_order(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    refs = list(adapter.untriaged(page_size=7, max_pages=50))
    assert [r.id for r in refs] == open_untriaged_ids(emulator)
    assert refs == sorted(refs, key=lambda r: (r.updated_at, r.id))
    assert len(refs) >= 30


def test_changed_since_leaves_out_older_tickets(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    everything = list(adapter.untriaged(page_size=50, max_pages=5))
    since = everything[len(everything) // 2].updated_at
    recent = list(adapter.changed_since(since, page_size=50, max_pages=5))
    assert recent and all(r.updated_at >= since.replace(microsecond=0) for r in recent)
    assert len(recent) < len(everything)


def test_without_elasticsearch_the_scan_finds_the_same_tickets(
    emulator: EmulatorServer, adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    scanner = adapter_for(emulator, sleeps, use_search=False)
    searched = [r.id for r in adapter.untriaged(page_size=10, max_pages=50)]
    scanned = [r.id for r in scanner.untriaged(page_size=10, max_pages=50)]
    assert scanned == searched


# -- reading, claiming, writing back ------------------------------------------------------------


def test_get_ticket_reads_the_first_customer_article(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    html_ticket = next(
        t
        for t in emulator.store.tickets.values()
        if emulator.store.articles[t.article_ids[0]].content_type == "text/html"
    )
    ticket = adapter.get_ticket(html_ticket.id)
    assert ticket.content_type == "text/html"
    assert ticket.body == emulator.store.articles[html_ticket.article_ids[0]].body
    assert (ticket.queue, ticket.state, ticket.owner) == ("Users", "new", None)
    assert ticket.has_customer_article and not ticket.is_triaged and not ticket.updated_by_self


def test_reading_a_ticket_takes_one_request_once_the_names_are_known(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    store = emulator.store
    adapter.get_ticket(1)  # reads the group, priority and state tables once
    for ticket_id in (2, 3, 4):
        emulator.stats.reset()
        ticket = adapter.get_ticket(ticket_id)
        assert emulator.stats.snapshot()["requests"] == {"GET /api/v1/tickets/{id}": 1}
        raw = store.tickets[ticket_id]
        assert (ticket.queue, ticket.priority, ticket.state) == (
            store.groups[raw.group_id].name,
            store.priorities[raw.priority_id].name,
            store.states[raw.state_id].name,
        )
        assert ticket.tags == frozenset(raw.tags)


def test_a_group_renamed_in_the_helpdesk_is_named_anew_within_a_minute(
    emulator: EmulatorServer, sleeps: list[float]
) -> None:
    now = [0.0]
    settings = ZammadSettings(url=emulator.url, token=emulator.token)
    adapter = ZammadAdapter(settings, MarkerSettings(), sleep=sleeps.append, clock=lambda: now[0])
    group = emulator.store.groups[emulator.store.tickets[1].group_id]
    before = adapter.get_ticket(1).queue
    group.name = "Renamed"
    assert adapter.get_ticket(1).queue == before
    now[0] += 61
    assert adapter.get_ticket(1).queue == "Renamed"


def test_a_full_run_writes_everything_once_and_marks_the_ticket(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    run = new_run_id()
    anna = next(u for u in emulator.store.users.values() if u.login == "anna.schmidt")
    _, result = triage(
        adapter,
        1,
        run,
        queue="Technical Support",
        priority="2 normal",
        owner=str(anna.id),
        add_tags=frozenset({"ai:technical-support"}),
        note=f"Routed by the model.\n\n{footer('note', run)}",
        draft=f"Hello Maria,\nwe are on it.\n\n{footer('draft', run)}",
        run_id=run,
    )
    assert result.changed == ("queue", "priority", "owner", "note", "tags", "shared_draft")
    ticket = adapter.get_ticket(1)
    assert (ticket.queue, ticket.priority, ticket.owner) == (
        "Technical Support",
        "2 normal",
        str(anna.id),
    )
    assert ticket.marker == "ai-triaged"
    assert ticket.claims == ()
    assert ticket.updated_by_self is True
    assert ticket.footers == frozenset({footer("note", run)})
    assert 1 not in [r.id for r in adapter.untriaged(page_size=100, max_pages=5)]
    counts = emulator.stats.for_ticket(1)
    assert counts["internal_notes_created"] == 1
    assert counts["articles_created"] == 1
    assert counts["shared_drafts_written"] == 1
    assert counts["ticket_updates"] == 1
    note = emulator.store.articles[emulator.store.tickets[1].article_ids[-1]]
    assert note.internal is True and note.content_type == "text/html"


def test_a_resumed_run_posts_nothing_twice(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    run = new_run_id()
    change = ChangeSet(
        ticket_id=2,
        priority="3 high",
        note=f"n\n\n{footer('note', run)}",
        draft=f"d\n\n{footer('draft', run)}",
        run_id=run,
    )
    adapter.apply(adapter.get_ticket(2), change)
    again = adapter.apply(adapter.get_ticket(2), change)
    assert again.skipped == ("note", "draft")
    assert again.changed == ()
    counts = emulator.stats.for_ticket(2)
    assert (counts["internal_notes_created"], counts["shared_drafts_written"]) == (1, 1)


def test_draft_becomes_an_internal_note_in_a_group_without_shared_drafts(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    run = new_run_id()
    result = adapter.apply(
        adapter.get_ticket(3),
        ChangeSet(
            ticket_id=3, queue="Human Resources", draft=f"d\n\n{footer('draft', run)}", run_id=run
        ),
    )
    assert result.changed == ("queue", "draft_note")
    counts = emulator.stats.for_ticket(3)
    assert (counts["internal_notes_created"], counts["shared_drafts_written"]) == (1, 0)
    assert adapter.get_ticket(3).footers == frozenset({footer("draft", run)})


def user_id(emulator: EmulatorServer, login: str) -> int:
    return next(u.id for u in emulator.store.users.values() if u.login == login)


def owner_adapter(emulator: EmulatorServer, **zammad: Any) -> tuple[ZammadAdapter, Metrics]:
    metrics = Metrics()
    settings = ZammadSettings(url=emulator.url, token=emulator.token, **zammad)
    adapter = ZammadAdapter(settings, MarkerSettings(), HttpSettings(), metrics=metrics)
    adapter.check()
    return adapter, metrics


def owner_events(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "helpdesk_triage_owner_conflicts_total", {"helpdesk": "zammad", "outcome": outcome}
    )
    return value or 0.0


def note_of(emulator: EmulatorServer, ticket_id: int) -> str:
    ticket = emulator.store.tickets[ticket_id]
    bodies = [emulator.store.articles[a].body for a in ticket.article_ids]
    return next(b for b in reversed(bodies) if "helpdesk-triage note" in b)


def test_an_owner_zammad_unassigned_is_reported_not_a_failure(emulator: EmulatorServer) -> None:
    adapter, metrics = owner_adapter(emulator)
    emma = user_id(emulator, "emma.fischer")  # only read access to Users, ticket 4's group
    result = adapter.apply(adapter.get_ticket(4), ChangeSet(ticket_id=4, owner=str(emma)))
    assert "owner" in result.skipped and "owner" not in result.changed
    assert adapter.get_ticket(4).owner is None
    assert owner_events(metrics, "assignment_refused") == 1


def test_a_move_away_from_the_owners_access_is_not_made_by_default(
    emulator: EmulatorServer,
) -> None:
    adapter, metrics = owner_adapter(emulator)
    ben = user_id(emulator, "ben.keller")  # full access to Users, none to Technical Support
    adapter.apply(adapter.get_ticket(4), ChangeSet(ticket_id=4, owner=str(ben)))
    run = "0123456789ab"
    change = ChangeSet(
        ticket_id=4,
        queue="Technical Support",
        note=f"queue: Technical Support (91%) - applied\n\n{footer('note', run)}",
        run_id=run,
    )
    result = adapter.apply(adapter.get_ticket(4), change)
    ticket = adapter.get_ticket(4)
    assert (ticket.queue, ticket.owner) == ("Users", str(ben))
    assert "queue" in result.skipped and "queue" not in result.changed
    note = note_of(emulator, 4)
    assert "Queue not changed to Technical Support" in note
    assert note.rstrip().endswith(f"{footer('note', run)}</p>")
    assert owner_events(metrics, "move_skipped") == 1


def test_a_move_away_from_the_owners_access_can_be_made_and_says_so(
    emulator: EmulatorServer,
) -> None:
    adapter, metrics = owner_adapter(emulator, owner_without_access="move")
    ben = user_id(emulator, "ben.keller")
    adapter.apply(adapter.get_ticket(4), ChangeSet(ticket_id=4, owner=str(ben)))
    run = "0123456789ab"
    change = ChangeSet(
        ticket_id=4, queue="Technical Support", note=f"queue\n\n{footer('note', run)}", run_id=run
    )
    result = adapter.apply(adapter.get_ticket(4), change)
    ticket = adapter.get_ticket(4)
    assert (ticket.queue, ticket.owner) == ("Technical Support", None)
    assert "queue" in result.changed
    assert "Moved to Technical Support, where the ticket" in note_of(emulator, 4)
    assert owner_events(metrics, "unassigned_by_move") == 1


def test_a_move_within_the_owners_access_keeps_the_owner(emulator: EmulatorServer) -> None:
    adapter, metrics = owner_adapter(emulator)
    anna = user_id(emulator, "anna.schmidt")  # full access to Users and Technical Support
    adapter.apply(adapter.get_ticket(4), ChangeSet(ticket_id=4, owner=str(anna)))
    adapter.apply(adapter.get_ticket(4), ChangeSet(ticket_id=4, queue="Technical Support"))
    ticket = adapter.get_ticket(4)
    assert (ticket.queue, ticket.owner) == ("Technical Support", str(anna))
    assert (
        sum(
            owner_events(metrics, o)
            for o in ("assignment_refused", "unassigned_by_move", "unassigned", "move_skipped")
        )
        == 0
    )


def test_an_unknown_queue_is_a_conflict(emulator: EmulatorServer, adapter: ZammadAdapter) -> None:
    with pytest.raises(errors.ConflictError) as caught:
        adapter.apply(adapter.get_ticket(4), ChangeSet(ticket_id=4, queue="Nowhere"))
    assert caught.value.status == 422


def test_claims_are_read_back_in_the_order_they_were_written(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    later = Claim(datetime(2026, 11, 24, 10, 0, 9, tzinfo=UTC), "bbbbbbbbbbbb")
    earlier = Claim(datetime(2026, 11, 24, 10, 0, 1, 500_000, tzinfo=UTC), "aaaaaaaaaaaa")
    adapter.claim(5, later)
    assert adapter.claim(5, earlier).claims == (later, earlier)
    adapter.release(5, later)
    assert adapter.get_ticket(5).claims == (earlier,)


def test_failed_tickets_stay_out_until_someone_asks_for_retriage(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    claim = Claim(datetime.now(UTC), new_run_id())
    adapter.claim(6, claim)
    adapter.mark_failed(6, claim)
    failed = adapter.get_ticket(6)
    assert failed.failed and failed.claims == ()
    assert 6 not in [r.id for r in adapter.untriaged(page_size=100, max_pages=5)]
    human = human_session(emulator)
    human.post(
        f"{emulator.api_url}/tags/add", json={"object": "Ticket", "o_id": 6, "item": "retriage"}
    )
    assert 6 in [r.id for r in adapter.untriaged(page_size=100, max_pages=5)]
    claim, _ = triage(adapter, 6, new_run_id())
    ticket = adapter.get_ticket(6)
    assert ticket.is_triaged and not ticket.retriage_requested and not ticket.failed


def test_a_failure_after_a_retriage_request_consumes_the_request(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    human = human_session(emulator)
    human.post(
        f"{emulator.api_url}/tags/add", json={"object": "Ticket", "o_id": 6, "item": "retriage"}
    )
    adapter.get_ticket(6)
    adapter.mark_failed(6, None)
    ticket = adapter.get_ticket(6)
    assert ticket.failed and not ticket.retriage_requested
    assert 6 not in [r.id for r in adapter.untriaged(page_size=100, max_pages=5)]


def tags_of(emulator: EmulatorServer, ticket_id: int) -> list[str]:
    return list(emulator.store.tickets[ticket_id].tags)


def test_a_retriage_tag_an_admin_spelled_differently_is_removed_by_its_spelling(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    # Zammad adds tags case-insensitively but removes them by exact name only.
    triage(adapter, 6, new_run_id())
    human = human_session(emulator)
    human.post(
        f"{emulator.api_url}/tags/add", json={"object": "Ticket", "o_id": 6, "item": "Retriage"}
    )
    ticket = adapter.get_ticket(6)
    assert ticket.retriage_requested
    assert 6 in [r.id for r in adapter.untriaged(page_size=100, max_pages=5)]
    triage(adapter, 6, new_run_id())
    assert not {"retriage", "ai-triage-run"} & {
        t.lower().split(":")[0] for t in tags_of(emulator, 6)
    }
    assert not adapter.get_ticket(6).retriage_requested


def test_a_failure_removes_a_differently_spelled_retriage_tag_read_afresh(
    emulator: EmulatorServer, sleeps: list[float]
) -> None:
    human = human_session(emulator)
    human.post(
        f"{emulator.api_url}/tags/add", json={"object": "Ticket", "o_id": 6, "item": "RETRIAGE"}
    )
    fresh = adapter_for(emulator, sleeps)  # has seen no tags of ticket 6
    fresh.mark_failed(6, None)
    assert [t.lower() for t in tags_of(emulator, 6)] == ["triage-error"]


def test_stale_label_tags_are_removed_by_their_stored_spelling_and_wanted_ones_kept(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    human = human_session(emulator)
    for item in ("ai:queue:Sales", "AI:priority:high", "Needs-Review"):
        human.post(
            f"{emulator.api_url}/tags/add", json={"object": "Ticket", "o_id": 7, "item": item}
        )
    ticket = adapter.get_ticket(7)
    change = ChangeSet(
        ticket_id=7,
        add_tags=frozenset({"ai:priority:high"}),
        remove_tags=frozenset({"ai:queue:sales", "needs-review", "ai:priority:high"}),
    )
    adapter.apply(ticket, change)
    assert tags_of(emulator, 7) == ["AI:priority:high"]


def test_a_human_edit_is_not_the_services_own(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    adapter.apply(adapter.get_ticket(7), ChangeSet(ticket_id=7, priority="3 high"))
    assert adapter.get_ticket(7).updated_by_self is True
    human_session(emulator).put(f"{emulator.api_url}/tickets/7", json={"priority": "1 low"})
    assert adapter.get_ticket(7).updated_by_self is False


def test_agents_and_their_open_tickets(emulator: EmulatorServer, adapter: ZammadAdapter) -> None:
    anna = next(u for u in emulator.store.users.values() if u.login == "anna.schmidt")
    adapter.apply(
        adapter.get_ticket(8), ChangeSet(ticket_id=8, queue="Technical Support", owner=str(anna.id))
    )
    agents = {a.login: a.open_tickets for a in adapter.agents("Technical Support")}
    assert agents == {"anna.schmidt": 1, "david.brooks": 0}
    assert "Technical Support" in adapter.queues()
    assert adapter.priorities() == ["1 low", "2 normal", "3 high"]


# -- failures on the way -----------------------------------------------------------------------


def add_fault(server: EmulatorServer, **rule: Any) -> None:
    server.faults.add(rule)


def test_429_with_retry_after_is_honoured(
    emulator: EmulatorServer, adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    add_fault(emulator, method="GET", path=r"/tickets/9$", status=429, retry_after="1", times=1)
    assert adapter.get_ticket(9).id == 9
    assert sleeps == [1.0]
    assert emulator.stats.snapshot()["faults"] == {"status_429": 1}


def test_503_is_retried_until_it_clears(
    emulator: EmulatorServer, adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    add_fault(emulator, method="GET", path=r"/tickets/10$", status=503, times=2)
    assert adapter.get_ticket(10).has_customer_article
    assert len(sleeps) == 2


def test_500_is_not_retried(
    emulator: EmulatorServer, adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    # The project's error tree: a plain 500 is a server error a retry will not heal.
    add_fault(emulator, method="GET", path=r"/tickets/10$", status=500, times=1)
    with pytest.raises(errors.ServerError):
        adapter.get_ticket(10)
    assert sleeps == []
    assert adapter.get_ticket(10).id == 10


def test_a_dropped_connection_is_retried(
    emulator: EmulatorServer, adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    add_fault(emulator, method="GET", path=r"/tickets/11$", drop_connection=True, times=1)
    assert adapter.get_ticket(11).id == 11
    assert len(sleeps) == 1
    assert emulator.stats.snapshot()["faults"] == {"dropped_connection": 1}


def test_a_note_write_that_failed_is_not_repeated_blindly_and_posts_once_on_retry(
    emulator: EmulatorServer, adapter: ZammadAdapter, sleeps: list[float]
) -> None:
    run = new_run_id()
    change = ChangeSet(ticket_id=12, priority="3 high", note=f"n\n\n{footer('note', run)}")
    add_fault(emulator, method="PUT", path=r"/tickets/12$", drop_connection=True, times=1)
    with pytest.raises(errors.NetworkError):
        adapter.apply(adapter.get_ticket(12), change)
    assert sleeps == []
    assert emulator.stats.for_ticket(12)["internal_notes_created"] == 0
    adapter.apply(adapter.get_ticket(12), change)  # the ticket-level retry
    adapter.apply(adapter.get_ticket(12), change)  # and a replayed one
    assert emulator.stats.for_ticket(12)["internal_notes_created"] == 1


def test_a_slow_answer_within_the_timeout_is_fine(
    emulator: EmulatorServer, adapter: ZammadAdapter
) -> None:
    add_fault(emulator, method="GET", path="/ticket_priorities", delay_seconds=0.2, times=1)
    assert adapter.priorities() == ["1 low", "2 normal", "3 high"]


def test_a_read_timeout_is_a_network_error(emulator: EmulatorServer, sleeps: list[float]) -> None:
    settings = ZammadSettings(url=emulator.url, token=emulator.token)
    http = HttpSettings(read_timeout_seconds=0.2, retry_attempts=1)
    slow = ZammadAdapter(settings, MarkerSettings(), http, sleep=sleeps.append)
    add_fault(emulator, method="GET", path="/groups", delay_seconds=1.5, times=1)
    with pytest.raises(errors.NetworkError):
        slow.queues()


# -- webhooks --------------------------------------------------------------------------------------


def test_emulator_webhooks_verify_with_the_adapter(receiver: WebhookReceiver) -> None:
    verifier = ZammadAdapter(
        ZammadSettings(url="http://127.0.0.1:1", token="x", webhook_secret="hook-s3cret"),
        MarkerSettings(),
    )
    events: list[WebhookEvent] = []
    lock = threading.Lock()

    def handle(delivery: Delivery) -> int:
        try:
            event = verifier.verify_webhook(delivery.headers, delivery.body)
        except WebhookRejected:
            return 401
        with lock:
            events.append(event)
        return 200

    receiver.handle = handle
    with receiver.server() as server:
        created = requests.post(
            f"{server.api_url}/tickets",
            headers={"Authorization": f"Token token={server.token}"},
            json={
                "title": "Webhook check",
                "group": "Users",
                "customer": "maria.lopez",
                "article": {"body": "hello", "type": "web", "sender": "Customer"},
            },
        ).json()
        assert receiver.wait_for(1)
    assert [e.ticket_id for e in events] == [created["id"]]
    assert events[0].delivery_id == receiver.deliveries[0].headers["x-zammad-delivery"]
    # A delivery signed with another secret would have been refused:
    body = receiver.deliveries[0].body
    forged = {**receiver.deliveries[0].headers, "x-hub-signature": "sha1=" + "0" * 40}
    with pytest.raises(WebhookRejected):
        verifier.verify_webhook(forged, body)
    assert json.loads(body)["ticket"]["id"] == created["id"]


def test_the_since_cursor_catches_a_ticket_created_after_a_poll(
    emulator: EmulatorServer, adapter: ZammadAdapter, api: requests.Session
) -> None:
    before = list(adapter.untriaged(page_size=100, max_pages=5))
    cursor = max(r.updated_at for r in before) - timedelta(seconds=1)
    made = api.post(
        f"{emulator.api_url}/tickets",
        json={
            "title": "New after the poll",
            "group": "Users",
            "customer": "jonas.becker",
            "article": {"body": "Hallo", "type": "email", "sender": "Customer"},
        },
    ).json()
    after = [r.id for r in adapter.changed_since(cursor, page_size=100, max_pages=5)]
    assert made["id"] in after


def test_an_agent_token_works_where_only_admins_may_list_groups(sleeps: list[float]) -> None:
    server = EmulatorServer(groups_need_admin=True)
    server.start()
    try:
        adapter = adapter_for(server, sleeps)
        adapter.check()
        assert set(adapter.queues()) == {g.name for g in server.store.groups.values()}
        assert adapter.get_ticket(3).queue == "Users"
        run = new_run_id()
        # Human Resources has no shared drafts; the flag comes with the group's asset.
        result = adapter.apply(
            adapter.get_ticket(3),
            ChangeSet(
                ticket_id=3,
                queue="Human Resources",
                draft=f"d\n\n{footer('draft', run)}",
                run_id=run,
            ),
        )
        assert result.changed == ("queue", "draft_note")
        assert adapter.get_ticket(3).queue == "Human Resources"
        requests_made = server.stats.snapshot()["requests"]
        assert requests_made["GET /api/v1/groups"] == 1  # refused once, then not asked again
        assert requests_made["GET /api/v1/users/{id}"] >= 1
    finally:
        server.stop()
