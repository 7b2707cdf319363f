"""The RT adapter against a real Request Tracker 5 (started by .ci/rt-setup.sh).

Every test makes its own tickets through REST2 as the admin and checks the
result on the server as the admin, never through the adapter under test.
"""

from __future__ import annotations

import email.message
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from connector import errors
from connector.adapters import marker_value
from connector.adapters.base import WebhookRejected
from connector.adapters.rt import DRAFT_SUBJECT, NOTE_SUBJECT, RTAdapter
from connector.config import HttpSettings, RTSettings
from connector.domain import ChangeSet, Claim
from connector.footer import DRAFT, NOTE, footer, new_run_id
from connector.metrics import Metrics
from tests.integration.rt_server import RTAdmin, RTServer, require_server

pytestmark = pytest.mark.rt

SEARCH_ENDPOINT_COUNT = "helpdesk_triage_helpdesk_request_duration_seconds_count"


@pytest.fixture(scope="module")
def server() -> RTServer:
    return require_server()


@pytest.fixture(scope="module")
def admin(server: RTServer) -> Iterator[RTAdmin]:
    client = RTAdmin(server)
    yield client
    client.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def make_adapter(server: RTServer, metrics: Metrics | None = None) -> RTAdapter:
    settings = RTSettings(
        url=server.url,
        token=SecretStr(server.token),
        tags_field=server.tags_field,
        marker_field=server.marker_field,
    )
    return RTAdapter.from_settings(settings, HttpSettings(retry_attempts=2), metrics=metrics)


@pytest.fixture
def adapter(server: RTServer, metrics: Metrics) -> Iterator[RTAdapter]:
    built = make_adapter(server, metrics)
    yield built
    built.close()


def new_ticket(admin: RTAdmin, server: RTServer, text: str = "", **fields: Any) -> int:
    queue = str(fields.pop("queue", server.queues[0]))
    subject = str(fields.pop("subject", f"live test {secrets.token_hex(4)}"))
    return admin.create_ticket(queue=queue, subject=subject, content=text, **fields)


def a_claim(run_id: str | None = None) -> Claim:
    return Claim(created_at=datetime.now(UTC).replace(microsecond=0), run_id=run_id or new_run_id())


def search_calls(metrics: Metrics) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == SEARCH_ENDPOINT_COUNT and sample.labels.get("endpoint") == "/tickets":
                total += sample.value
    return total


# -- set-up and lookups -----------------------------------------------------------------


def test_check_accepts_the_prepared_server(adapter: RTAdapter) -> None:
    adapter.check()


def test_queues_lists_the_visible_queues(adapter: RTAdapter, server: RTServer) -> None:
    assert set(server.queues) <= set(adapter.queues())


def test_agents_are_the_queue_staff_with_their_open_ticket_counts(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    agent = server.agents[-1]
    before = {a.login: a.open_tickets for a in adapter.agents(server.queues[1])}
    assert set(server.agents) <= set(before)
    new_ticket(admin, server, "owned", queue=server.queues[1], Owner=agent)
    after = {a.login: a.open_tickets for a in adapter.agents(server.queues[1])}
    assert after[agent] == before[agent] + 1


# -- search -----------------------------------------------------------------------------


def test_changed_since_pages_through_new_tickets_in_update_order(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer, metrics: Metrics
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    mine = {new_ticket(admin, server, f"paging {n}") for n in range(5)}
    refs = list(adapter.changed_since(since, page_size=2, max_pages=50))
    found = [ref for ref in refs if ref.id in mine]
    assert {ref.id for ref in found} == mine
    assert [ref.cursor for ref in refs] == sorted(ref.cursor for ref in refs)
    assert len({ref.id for ref in refs}) == len(refs)  # no ticket twice in one walk
    assert search_calls(metrics) >= 3  # five tickets at two a page


def test_changed_since_leaves_out_older_updates(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    old = new_ticket(admin, server, "older")
    updated = admin.ticket(old)["LastUpdated"]
    since = datetime.fromisoformat(updated.replace("Z", "+00:00")) + timedelta(seconds=30)
    assert old not in {ref.id for ref in adapter.changed_since(since, page_size=50, max_pages=5)}


def test_tickets_finished_while_walking_do_not_hide_the_rest(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    mine = {new_ticket(admin, server, f"shrinking {n}") for n in range(6)}
    seen: set[int] = set()
    for ref in adapter.changed_since(since, page_size=2, max_pages=50):
        seen.add(ref.id)
        if ref.id in mine:
            # Each finished ticket leaves the search while later pages are still unread.
            adapter.finish(ref.id, a_claim(), "test-model")
    assert mine <= seen


def test_search_follows_the_marker(adapter: RTAdapter, admin: RTAdmin, server: RTServer) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    fresh = new_ticket(admin, server, "no marker")
    triaged = new_ticket(admin, server, "triaged")
    failed = new_ticket(admin, server, "failed")
    retriage = new_ticket(admin, server, "retriage")
    resolved = new_ticket(admin, server, "resolved")
    field = server.marker_field
    admin.set_custom_field(triaged, field, marker_value.triaged("0123456789ab", "m1"))
    admin.set_custom_field(failed, field, marker_value.failed())
    admin.set_custom_field(retriage, field, marker_value.RETRIAGE)
    admin.put(f"/ticket/{resolved}", {"Status": "resolved"})

    listed = {ref.id for ref in adapter.changed_since(since, page_size=100, max_pages=10)}
    assert {fresh, retriage} <= listed
    assert not {triaged, failed, resolved} & listed
    swept = {ref.id for ref in adapter.untriaged(page_size=100, max_pages=100)}
    assert {fresh, retriage} <= swept
    assert not {triaged, failed, resolved} & swept


def test_changed_since_does_not_depend_on_the_users_time_zone(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    # RT reads quoted dates in the API user's zone; a relative date does not care.
    admin.put(f"/user/{server.user}", {"Timezone": "America/New_York"})
    try:
        since = datetime.now(UTC) - timedelta(seconds=1)
        ticket_id = new_ticket(admin, server, "time zones")
        listed = {ref.id for ref in adapter.changed_since(since, page_size=100, max_pages=10)}
        assert ticket_id in listed
    finally:
        admin.put(f"/user/{server.user}", {"Timezone": ""})


# -- reading ----------------------------------------------------------------------------


def test_get_ticket_reads_fields_and_the_customer_text(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    text = "Der Drucker im 2. Stock brennt. Grüße, Jürgen"
    ticket_id = new_ticket(admin, server, text, Priority=60)
    ticket = adapter.get_ticket(ticket_id)
    assert ticket.id == ticket_id
    assert ticket.body == text
    assert ticket.content_type == "text/plain"
    assert ticket.queue == server.queues[0]
    assert ticket.priority == "Medium"  # 60: at or above Medium (50), below High (100)
    assert ticket.owner is None
    assert ticket.state == "new"
    assert ticket.marker is None
    assert ticket.claims == ()
    assert ticket.has_customer_article
    assert not ticket.updated_by_self  # the admin made it
    assert ticket.created_at is not None and ticket.updated_at is not None


def mail(subject: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "Kundin <kundin@example.test>"
    message["To"] = "support@example.test"
    message["Subject"] = subject
    return message


def test_get_ticket_reads_the_text_part_of_a_multipart_mail_in_latin_1(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    message = mail(f"Rechnung {secrets.token_hex(4)}")
    message.set_content("Die Rechnung ist zu hoch. Bitte prüfen. Grüße", charset="iso-8859-1")
    message.add_alternative("<p>Die Rechnung ist <b>zu hoch</b>.</p>", subtype="html")
    message.add_attachment(
        b"%PDF-1.4 not really", maintype="application", subtype="pdf", filename="rechnung.pdf"
    )
    ticket_id = admin.mail_ticket(server.queues[0], message)
    ticket = adapter.get_ticket(ticket_id)
    assert ticket.body.strip() == "Die Rechnung ist zu hoch. Bitte prüfen. Grüße"
    assert ticket.content_type == "text/plain"


def test_get_ticket_reads_an_html_only_mail_as_html(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    message = mail(f"HTML {secrets.token_hex(4)}")
    message.set_content("<html><body><p>Nur HTML, bitte helfen</p></body></html>", subtype="html")
    ticket_id = admin.mail_ticket(server.queues[0], message)
    ticket = adapter.get_ticket(ticket_id)
    assert ticket.content_type == "text/html"
    assert "<p>Nur HTML, bitte helfen</p>" in ticket.body


def test_a_text_file_attached_to_a_mail_is_not_taken_for_its_text(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    message = mail(f"Log {secrets.token_hex(4)}")
    message.set_content("Please see the attached log.")
    message.add_attachment("ERROR line 1\nERROR line 2\n", filename="server.log")
    ticket_id = admin.mail_ticket(server.queues[0], message)
    assert adapter.get_ticket(ticket_id).body.strip() == "Please see the attached log."


def test_a_ticket_without_text_has_no_customer_article(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    ticket = adapter.get_ticket(new_ticket(admin, server))
    assert not ticket.has_customer_article
    assert ticket.body == ""


# -- writing ----------------------------------------------------------------------------


def test_apply_changes_queue_priority_owner_and_tags_and_rt_holds_them(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    ticket_id = new_ticket(admin, server, "route me")
    ticket = adapter.get_ticket(ticket_id)
    change = ChangeSet(
        ticket_id=ticket_id,
        queue=server.queues[1],
        priority="High",
        owner=server.agents[0],
        add_tags=frozenset({"ai:billing", "ai:urgent"}),
        run_id=new_run_id(),
    )
    result = adapter.apply(ticket, change)
    assert set(result.changed) == {"queue", "priority", "owner", "tags"}
    raw = admin.ticket(ticket_id)
    assert raw["Queue"]["Name"] == server.queues[1]
    assert raw["Priority"] == "100"
    assert raw["Owner"]["id"] == server.agents[0]
    assert set(admin.custom_field(ticket_id, server.tags_field)) == {"ai:billing", "ai:urgent"}

    after = adapter.get_ticket(ticket_id)
    assert after.updated_by_self
    assert (after.queue, after.priority, after.owner) == (
        server.queues[1],
        "High",
        server.agents[0],
    )
    removed = adapter.apply(
        after, ChangeSet(ticket_id=ticket_id, remove_tags=frozenset({"ai:urgent"}))
    )
    assert removed.changed == ("tags",)
    assert admin.custom_field(ticket_id, server.tags_field) == ["ai:billing"]


def test_note_and_draft_are_internal_comments_posted_once(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    ticket_id = new_ticket(admin, server, "needs a note")
    run_id = new_run_id()
    change = ChangeSet(
        ticket_id=ticket_id,
        note=f"Routed by the model.\n\n{footer(NOTE, run_id)}",
        draft=f"Dear customer, ...\n\n{footer(DRAFT, run_id)}",
        run_id=run_id,
    )
    result = adapter.apply(adapter.get_ticket(ticket_id), change)
    assert result.note_created and result.draft_created

    by_bot = [t for t in admin.transactions(ticket_id) if t["Creator"]["id"] == server.user]
    assert [t["Type"] for t in by_bot] == ["Comment", "Comment"]  # never Correspond
    texts = [admin.transaction_text(int(t["id"])) for t in by_bot]
    assert NOTE_SUBJECT in texts[0] and footer(NOTE, run_id) in texts[0]
    assert DRAFT_SUBJECT in texts[1] and footer(DRAFT, run_id) in texts[1]

    again = adapter.get_ticket(ticket_id)
    assert {footer(NOTE, run_id), footer(DRAFT, run_id)} <= again.footers
    repeated = adapter.apply(again, change)
    assert not repeated.note_created and not repeated.draft_created
    assert set(repeated.skipped) == {"note", "draft"}
    assert len([t for t in admin.transactions(ticket_id) if t["Type"] == "Comment"]) == 2


def test_claim_finish_release_and_mark_failed_use_the_marker_field(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    field = server.marker_field
    ticket_id = new_ticket(admin, server, "marker")
    claim = a_claim()
    result = adapter.claim(ticket_id, claim)
    assert result.claims == (claim,) and not result.triaged
    assert admin.custom_field(ticket_id, field) == [marker_value.claimed(claim)]
    assert adapter.get_ticket(ticket_id).claims == (claim,)

    adapter.release(ticket_id, a_claim())  # someone else's claim: ours stays
    assert admin.custom_field(ticket_id, field) == [marker_value.claimed(claim)]
    adapter.release(ticket_id, claim)
    assert admin.custom_field(ticket_id, field) == []

    adapter.claim(ticket_id, claim)
    adapter.finish(ticket_id, claim, "model 7")
    value = admin.custom_field(ticket_id, field)[0]
    assert value.startswith(f"triaged {claim.run_id} model-7 ")
    assert adapter.get_ticket(ticket_id).is_triaged
    second = adapter.claim(ticket_id, a_claim())
    assert second.triaged and second.done_elsewhere
    assert admin.custom_field(ticket_id, field) == [value]  # not overwritten

    admin.set_custom_field(ticket_id, field, marker_value.RETRIAGE)
    assert adapter.get_ticket(ticket_id).retriage_requested
    adapter.mark_failed(ticket_id, None)
    assert admin.custom_field(ticket_id, field)[0].startswith("failed ")
    assert adapter.get_ticket(ticket_id).failed


# -- errors -----------------------------------------------------------------------------


def test_a_bad_token_is_an_auth_error(server: RTServer, admin: RTAdmin) -> None:
    ticket_id = new_ticket(admin, server, "auth")
    bad = RTSettings(url=server.url, token=SecretStr("1-1-" + "0" * 32))
    adapter = RTAdapter.from_settings(bad, HttpSettings(retry_attempts=2))
    with pytest.raises(errors.AuthError) as caught:
        adapter.get_ticket(ticket_id)
    assert caught.value.status == 401
    with pytest.raises(errors.AuthError):
        adapter.check()


def test_a_missing_ticket_is_not_found(adapter: RTAdapter) -> None:
    with pytest.raises(errors.NotFoundError) as caught:
        adapter.get_ticket(987_654_321)
    assert caught.value.status == 404


def test_moving_to_a_missing_queue_is_a_conflict(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    ticket_id = new_ticket(admin, server, "nowhere")
    change = ChangeSet(ticket_id=ticket_id, queue=f"No Such Queue {secrets.token_hex(3)}")
    with pytest.raises(errors.ConflictError) as caught:
        adapter.apply(adapter.get_ticket(ticket_id), change)
    assert caught.value.code == "queue_not_found"
    assert admin.ticket(ticket_id)["Queue"]["Name"] == server.queues[0]


def test_an_owner_rt_refuses_is_a_conflict(
    adapter: RTAdapter, admin: RTAdmin, server: RTServer
) -> None:
    ticket_id = new_ticket(admin, server, "owner without OwnTicket")
    change = ChangeSet(ticket_id=ticket_id, owner=server.readonly_user)
    with pytest.raises(errors.ConflictError) as caught:
        adapter.apply(adapter.get_ticket(ticket_id), change)
    assert caught.value.code == "not_applied"
    assert admin.ticket(ticket_id)["Owner"]["id"] == "Nobody"


def test_a_user_without_write_rights_gets_auth_errors_not_silence(
    server: RTServer, admin: RTAdmin
) -> None:
    ticket_id = new_ticket(admin, server, "read only")
    settings = RTSettings(
        url=server.url,
        username=server.readonly_user,
        password=SecretStr(server.readonly_password),
        marker_field=server.marker_field,
    )
    reader = RTAdapter.from_settings(settings, HttpSettings(retry_attempts=2))
    ticket = reader.get_ticket(ticket_id)  # reading is allowed
    with pytest.raises(errors.AuthError) as caught:
        reader.apply(ticket, ChangeSet(ticket_id=ticket_id, priority="High"))
    assert caught.value.code == "permission_denied"
    with pytest.raises(errors.AuthError):
        reader.claim(ticket_id, a_claim())
    assert admin.custom_field(ticket_id, server.marker_field) == []


def test_rt_has_no_webhooks(adapter: RTAdapter) -> None:
    assert adapter.supports_webhooks is False
    with pytest.raises(WebhookRejected) as caught:
        adapter.verify_webhook({}, b"{}")
    assert caught.value.reason == "ignored"
