"""The RT adapter's contract with REST2, on recorded and scripted answers (``responses``).

Answers under tests/fixtures/rt/ were recorded from RT 5.0.3 (.ci/rt-setup.sh).
Body matchers pin down exactly what the adapter writes; a request that no
registered answer matches fails the test, so "never calls X" is checked too.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pydantic import SecretStr
from responses import matchers

from connector import errors
from connector.adapters import marker_value
from connector.adapters.base import HelpdeskAdapter, WebhookRejected
from connector.adapters.rt import (
    DRAFT_SUBJECT,
    MAX_PER_PAGE,
    NOTE_SUBJECT,
    PriorityLevels,
    RTAdapter,
    api_url,
    decode_content,
    pick_text_part,
    relative_time,
)
from connector.config import RTSettings
from connector.domain import ChangeSet, Claim, Ticket
from connector.footer import DRAFT, NOTE, footer
from connector.http import HttpClient, RetryPolicy

BASE = "https://rt.example"
API = f"{BASE}/REST/2.0"
TOKEN = "1-33-" + "ab" * 16
NOW = datetime(2026, 11, 25, 20, 0, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parent / "fixtures" / "rt"
TICKET_ID = 47  # the recorded ticket
CREATE_TXN = 445
COMMENT_TXN = 448
TEXT_PART = 232
MARKER = "AI Triage"
TAGS = "AI Labels"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture
def sleeps() -> list[float]:
    return []


def build(
    sleeps: list[float], *, attempts: int = 4, tags_field: str | None = TAGS, **settings: Any
) -> RTAdapter:
    client = HttpClient(
        helpdesk="rt",
        base_url=api_url(BASE),
        headers={"Authorization": f"token {TOKEN}"},
        retry=RetryPolicy(attempts=attempts, total_seconds=60, retry_after_max=30),
        sleep=sleeps.append,
    )
    config = RTSettings(url=BASE, token=SecretStr(TOKEN), tags_field=tags_field, **settings)
    return RTAdapter(config, client, now=lambda: NOW)


@pytest.fixture
def adapter(sleeps: list[float]) -> RTAdapter:
    return build(sleeps)


def collection(items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"count": len(items), "page": 1, "per_page": MAX_PER_PAGE}
    body.update(total=None, pages=None, items=items)
    body.update(extra)
    return body


def params_of(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def calls_to(path: str) -> list[Any]:
    return [c for c in responses.calls if urlsplit(c.request.url).path == f"/REST/2.0{path}"]


def mock_identity() -> None:
    responses.get(f"{API}/user/33", json={"id": 33, "Name": "triage-bot"})


def mock_triage_queues(
    queues: dict[int, str], *, with_marker: frozenset[int] | None = None
) -> None:
    responses.get(
        f"{API}/queues/all",
        json=collection([{"id": str(i), "Name": n, "type": "queue"} for i, n in queues.items()]),
    )
    for queue_id in queues:
        names = [MARKER, TAGS] if with_marker is None or queue_id in with_marker else [TAGS]
        responses.get(
            f"{API}/queue/{queue_id}/customfields",
            json=collection([{"id": str(n), "Name": name} for n, name in enumerate(names)]),
        )


def ticket_answer(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = fixture("ticket.json")
    marker = changes.pop("marker", None)
    tags = changes.pop("tags", None)
    for custom_field in raw["CustomFields"]:
        if custom_field["name"] == MARKER and marker is not None:
            custom_field["values"] = [marker] if marker else []
        if custom_field["name"] == TAGS and tags is not None:
            custom_field["values"] = list(tags)
    for key, value in changes.items():
        if key == "Queue":
            raw["Queue"] = {"id": "3", "Name": value, "type": "queue"}
        elif key in ("Owner", "LastUpdatedBy"):
            raw[key] = {"id": value, "type": "user"}
        else:
            raw[key] = value
    return raw


def a_ticket(**fields: Any) -> Ticket:
    values: dict[str, Any] = {
        "id": TICKET_ID,
        "subject": "Rechnung doppelt abgebucht",
        "body": "text",
        "queue": "General",
        "priority": "Low",
        "owner": None,
    }
    values.update(fields)
    return Ticket(**values)


# -- the protocol ----------------------------------------------------------------------


def test_the_adapter_implements_the_protocol(adapter: RTAdapter) -> None:
    assert isinstance(adapter, HelpdeskAdapter)
    assert adapter.kind == "rt"


def test_rt_is_polled_and_rejects_webhooks(adapter: RTAdapter) -> None:
    assert adapter.supports_webhooks is False
    with pytest.raises(WebhookRejected) as caught:
        adapter.verify_webhook({"content-type": "application/json"}, b'{"id": 1}')
    assert caught.value.reason == "ignored"


@pytest.mark.parametrize(
    ("settings", "field_name"),
    [
        ({"token": None}, "rt.token"),
        ({"marker_field": "AI {Triage}"}, "rt.marker_field"),
        ({"tags_field": "it's"}, "rt.tags_field"),
        ({"active_statuses": []}, "rt.active_statuses"),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_field(
    settings: dict[str, Any], field_name: str
) -> None:
    values: dict[str, Any] = {"url": BASE, "token": SecretStr(TOKEN), **settings}
    with pytest.raises(errors.ConfigError, match=re.escape(field_name)):
        RTAdapter(RTSettings(**values), HttpClient(helpdesk="rt", base_url=API))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://rt.example", API),
        ("https://rt.example/", API),
        ("https://rt.example/REST/2.0", API),
        ("https://host/rt", "https://host/rt/REST/2.0"),
    ],
)
def test_api_url(url: str, expected: str) -> None:
    assert api_url(url) == expected


# -- paging ----------------------------------------------------------------------------


@responses.activate
def test_a_listing_follows_next_page_until_the_last_page(adapter: RTAdapter) -> None:
    responses.get(
        f"{API}/queues/all",
        match=[matchers.query_param_matcher({"page": "1", "per_page": "100"}, strict_match=False)],
        json=collection([{"id": "1", "Name": "General"}], next_page=f"{API}/queues/all?page=2"),
    )
    responses.get(
        f"{API}/queues/all",
        match=[matchers.query_param_matcher({"page": "2", "per_page": "100"}, strict_match=False)],
        json=collection([{"id": "3", "Name": "Billing"}], page=2),
    )
    assert adapter.queues() == ["General", "Billing"]
    assert len(responses.calls) == 2


@responses.activate
def test_a_listing_uses_pages_and_total_when_there_is_no_link(adapter: RTAdapter) -> None:
    for number, name in ((1, "General"), (2, "Billing")):
        responses.get(
            f"{API}/queues/all",
            match=[matchers.query_param_matcher({"page": str(number)}, strict_match=False)],
            json=collection(
                [{"id": str(number), "Name": name}], page=number, per_page=1, total=2, pages=2.0
            ),
        )
    assert adapter.queues() == ["General", "Billing"]
    assert len(responses.calls) == 2


@responses.activate
def test_without_a_total_a_full_page_asks_for_more_and_a_short_one_ends(
    adapter: RTAdapter,
) -> None:
    full = [{"id": str(n), "Name": f"Q{n}"} for n in range(MAX_PER_PAGE)]
    responses.get(
        f"{API}/queues/all",
        match=[matchers.query_param_matcher({"page": "1"}, strict_match=False)],
        json=collection(full),
    )
    responses.get(
        f"{API}/queues/all",
        match=[matchers.query_param_matcher({"page": "2"}, strict_match=False)],
        json=collection([{"id": "999", "Name": "Last"}], page=2),
    )
    assert len(adapter.queues()) == MAX_PER_PAGE + 1
    assert len(responses.calls) == 2


@responses.activate
def test_an_empty_page_past_the_end_stops_a_listing(adapter: RTAdapter) -> None:
    full = [{"id": str(n), "Name": f"Q{n}"} for n in range(MAX_PER_PAGE)]
    responses.get(
        f"{API}/queues/all",
        match=[matchers.query_param_matcher({"page": "1"}, strict_match=False)],
        json=collection(full),
    )
    responses.get(
        f"{API}/queues/all",
        match=[matchers.query_param_matcher({"page": "2"}, strict_match=False)],
        json=collection([], page=2),
    )
    assert len(adapter.queues()) == MAX_PER_PAGE
    assert len(responses.calls) == 2


@responses.activate
def test_a_server_that_ignores_the_page_number_is_caught(adapter: RTAdapter) -> None:
    responses.get(
        f"{API}/queues/all",
        json=collection([{"id": "1", "Name": "General"}], next_page=f"{API}/queues/all?page=2"),
    )
    assert adapter.queues() == ["General"]
    assert len(responses.calls) == 2  # the repeat is noticed at once, not at the page cap


# -- search ----------------------------------------------------------------------------


@dataclass
class FakeSearch:
    """RT's ticket search as far as the walk sees it: filter, order, page, count.

    ``open`` is the set of tickets that still need triage; a test removes ids to
    play a worker finishing them while the walk goes on.
    """

    updated: dict[int, datetime]
    open: set[int] = field(default_factory=set)
    ignore_page: bool = False
    endless: bool = False
    jitter: bool = False  # every other query reaches one second further back, as RT's may
    queries: list[dict[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.open = self.open or set(self.updated)

    def __call__(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        params = parse_qs(urlsplit(str(request.url)).query)
        self.queries.append(params)
        per_page = int(params["per_page"][0])
        page = 1 if self.ignore_page else int(params["page"][0])
        bound = re.search(r"LastUpdated >= 'now ([-+]) (\d+) seconds'", params["query"][0])
        since = None
        if bound:
            delta = timedelta(seconds=int(bound.group(2)))
            since = NOW - delta if bound.group(1) == "-" else NOW + delta
            if self.jitter and len(self.queries) % 2:
                since -= timedelta(seconds=1)
        rows = sorted(
            (self.updated[i], i) for i in self.open if since is None or self.updated[i] >= since
        )
        chunk = rows[(page - 1) * per_page : page * per_page]
        pages = -(-len(rows) // per_page)
        body: dict[str, Any] = {
            "count": len(chunk),
            "page": page,
            "per_page": per_page,
            "total": len(rows),
            "pages": pages,
            "items": [
                {"id": str(i), "type": "ticket", "LastUpdated": t.strftime("%Y-%m-%dT%H:%M:%SZ")}
                for t, i in chunk
            ],
        }
        if page < pages or self.endless:
            body["next_page"] = f"{API}/tickets?page={page + 1}"
        return 200, {"Content-Type": "application/json"}, json.dumps(body)


def serve_search(search: FakeSearch) -> None:
    mock_identity()
    mock_triage_queues({1: "General", 3: "Billing", 5: "Sales"}, with_marker=frozenset({1, 3}))
    responses.add_callback(responses.GET, f"{API}/tickets", callback=search)


@responses.activate
def test_the_search_asks_for_untriaged_active_tickets_of_triage_queues_in_update_order(
    adapter: RTAdapter,
) -> None:
    search = FakeSearch({1: NOW - timedelta(seconds=30)})
    serve_search(search)
    refs = list(adapter.changed_since(NOW - timedelta(seconds=60.4), page_size=20, max_pages=5))
    assert [ref.id for ref in refs] == [1]
    params = search.queries[0]
    assert params["query"] == [
        "(Queue = 1 OR Queue = 3)"  # Sales: the marker field does not apply there
        " AND (Status = 'new' OR Status = 'open' OR Status = 'stalled')"
        " AND ('CF.{AI Triage}' IS NULL OR 'CF.{AI Triage}' = 'retriage'"
        " OR 'CF.{AI Triage}' STARTSWITH 'claimed ')"
        " AND LastUpdated >= 'now - 63 seconds'"  # 60.4 rounded up, plus the clock margin
    ]
    assert params["orderby"] == ["LastUpdated", "id"]
    assert params["order"] == ["ASC", "ASC"]
    assert params["fields"] == ["LastUpdated"]
    assert params["per_page"] == ["20"]


@responses.activate
def test_the_sweep_has_no_time_condition(adapter: RTAdapter) -> None:
    search = FakeSearch({1: NOW - timedelta(days=400)})
    serve_search(search)
    assert [ref.id for ref in adapter.untriaged(page_size=10, max_pages=5)] == [1]
    assert "LastUpdated" not in search.queries[0]["query"][0]


@responses.activate
def test_page_size_is_capped_at_rts_limit(adapter: RTAdapter) -> None:
    search = FakeSearch({1: NOW})
    serve_search(search)
    list(adapter.untriaged(page_size=500, max_pages=1))
    assert search.queries[0]["per_page"] == [str(MAX_PER_PAGE)]


@responses.activate
def test_the_walk_pages_through_everything_in_order(adapter: RTAdapter) -> None:
    updated = {n: NOW - timedelta(minutes=30 - n) for n in range(1, 8)}
    search = FakeSearch(updated)
    serve_search(search)
    refs = list(adapter.untriaged(page_size=3, max_pages=20))
    assert [ref.id for ref in refs] == list(range(1, 8))
    assert [ref.updated_at for ref in refs] == sorted(updated.values())


@responses.activate
def test_tickets_that_leave_the_search_while_it_is_read_do_not_hide_others(
    adapter: RTAdapter,
) -> None:
    updated = {n: NOW - timedelta(minutes=30 - n) for n in range(1, 8)}
    search = FakeSearch(updated)
    serve_search(search)
    seen = []
    for ref in adapter.untriaged(page_size=2, max_pages=20):
        seen.append(ref.id)
        search.open.discard(ref.id)  # finished: the marker takes it out of the search
    assert seen == list(range(1, 8))


@responses.activate
def test_a_whole_page_in_one_second_is_stepped_through_once_each(adapter: RTAdapter) -> None:
    second = NOW - timedelta(minutes=5)
    search = FakeSearch({n: second for n in range(1, 6)} | {6: NOW - timedelta(minutes=1)})
    serve_search(search)
    refs = list(adapter.untriaged(page_size=2, max_pages=20))
    assert [ref.id for ref in refs] == [1, 2, 3, 4, 5, 6]


@responses.activate
def test_unfinished_tickets_at_the_anchor_and_a_jittery_clock_hide_nothing(
    adapter: RTAdapter,
) -> None:
    start = NOW - timedelta(seconds=20)
    stuck = {n: start for n in range(1, 5)}  # listed, never finished
    moving = {n: start + timedelta(seconds=(n - 5) // 3) for n in range(5, 14)}
    search = FakeSearch(stuck | moving, jitter=True)
    serve_search(search)
    seen = []
    for ref in adapter.changed_since(start, page_size=2, max_pages=100):
        seen.append(ref.id)
        if ref.id in moving:
            search.open.discard(ref.id)
    assert sorted(seen) == list(range(1, 14))
    assert len(seen) == len(set(seen))


@responses.activate
def test_the_walk_stops_at_the_page_cap(adapter: RTAdapter) -> None:
    search = FakeSearch({n: NOW - timedelta(minutes=60 - n) for n in range(1, 50)})
    serve_search(search)
    refs = list(adapter.untriaged(page_size=2, max_pages=3))
    assert len(search.queries) == 3
    # A re-anchored page starts at the ticket it was anchored on, so it brings one new.
    assert [ref.id for ref in refs] == [1, 2, 3, 4]


@responses.activate
def test_the_walk_stops_when_rt_repeats_a_page(adapter: RTAdapter) -> None:
    second = NOW - timedelta(minutes=5)
    search = FakeSearch({n: second for n in range(1, 6)}, ignore_page=True, endless=True)
    serve_search(search)
    refs = list(adapter.untriaged(page_size=2, max_pages=50))
    assert [ref.id for ref in refs] == [1, 2, 3, 4, 5]
    # Pages grow to RT's largest (2, 2, 4, ... 100), then page 2 comes back as page 1: stop.
    assert [q["per_page"][0] for q in search.queries] == [
        "2",
        "2",
        "4",
        "8",
        "16",
        "32",
        "64",
        "100",
        "100",
    ]
    assert search.queries[-1]["page"] == ["2"]


@responses.activate
def test_a_rejected_search_is_a_setup_error(adapter: RTAdapter) -> None:
    mock_identity()
    mock_triage_queues({1: "General"})
    responses.get(f"{API}/tickets", status=400, json={"message": "Wrong query"})
    with pytest.raises(errors.HelpdeskConfigError) as caught:
        list(adapter.untriaged(page_size=10, max_pages=2))
    assert caught.value.status == 400
    assert "Wrong query" not in str(caught.value)


@responses.activate
def test_no_queue_with_the_marker_field_is_a_setup_error(adapter: RTAdapter) -> None:
    mock_triage_queues({1: "General"}, with_marker=frozenset())
    with pytest.raises(errors.HelpdeskConfigError, match="applies to no queue"):
        list(adapter.untriaged(page_size=10, max_pages=2))


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (NOW - timedelta(seconds=90.2), "now - 93 seconds"),
        (NOW, "now - 2 seconds"),
        (NOW + timedelta(seconds=30), "now + 28 seconds"),
        (datetime(2026, 11, 25, 19, 0, 0), "now - 3602 seconds"),  # naive means UTC
    ],
)
def test_relative_time_is_measured_on_rts_clock_with_a_margin(
    since: datetime, expected: str
) -> None:
    assert relative_time(since, NOW) == expected


# -- reading ---------------------------------------------------------------------------


def serve_recorded_ticket(*, ticket: dict[str, Any] | None = None) -> None:
    mock_identity()
    responses.get(
        f"{API}/ticket/{TICKET_ID}",
        match=[matchers.query_param_matcher({"fields[Queue]": "Name"})],
        json=ticket or fixture("ticket.json"),
    )
    history_query = json.dumps(
        [{"field": "Type", "value": "Create"}, {"field": "Type", "value": "Comment"}]
    )
    responses.get(
        f"{API}/ticket/{TICKET_ID}/history",
        match=[
            matchers.query_param_matcher(
                {"query": history_query, "fields": "Type,Creator"}, strict_match=False
            )
        ],
        json=fixture("history_create_and_comment.json"),
    )
    responses.get(
        f"{API}/transaction/{CREATE_TXN}/attachments",
        json=fixture("create_attachments_multipart.json"),
    )
    responses.get(f"{API}/attachment/{TEXT_PART}", json=fixture("attachment_text_plain.json"))
    comment_query = json.dumps(
        [
            {"field": "TransactionId", "value": COMMENT_TXN},
            {"field": "ContentType", "operator": "LIKE", "value": "text/"},
        ]
    )
    responses.get(
        f"{API}/ticket/{TICKET_ID}/attachments",
        match=[matchers.query_param_matcher({"query": comment_query}, strict_match=False)],
        json=fixture("comment_attachments.json"),
    )


@responses.activate
def test_get_ticket_reads_a_recorded_multipart_mail(adapter: RTAdapter) -> None:
    serve_recorded_ticket()
    ticket = adapter.get_ticket(TICKET_ID)
    assert ticket.subject == "Rechnung doppelt abgebucht"
    assert (
        ticket.body
        == "Guten Tag,\nmeine Rechnung wurde doppelt abgebucht. Bitte prüfen.\nGrüße, Jürgen\n"
    )
    assert ticket.content_type == "text/plain"
    assert ticket.has_customer_article
    assert (ticket.queue, ticket.priority, ticket.owner, ticket.state) == (
        "General",
        "Low",
        None,
        "new",
    )
    assert ticket.number == "47"
    assert ticket.claims == (
        Claim(created_at=datetime(2026, 11, 25, 19, 58, tzinfo=UTC), run_id="0a1b2c3d4e5f"),
    )
    assert ticket.marker is None and not ticket.failed and not ticket.retriage_requested
    assert ticket.footers == frozenset({"helpdesk-triage note 0a1b2c3d4e5f"})
    assert not ticket.updated_by_self  # root changed it last
    assert ticket.created_at == datetime(2026, 11, 25, 19, 54, 57, tzinfo=UTC)
    # Only the text part was downloaded: not the wrappers, not the PDF.
    assert [urlsplit(c.request.url).path for c in responses.calls].count(
        f"/REST/2.0/attachment/{TEXT_PART}"
    ) == 1
    assert not calls_to("/attachment/234")


@responses.activate
def test_the_service_user_s_own_last_edit_is_recognised(adapter: RTAdapter) -> None:
    serve_recorded_ticket(ticket=ticket_answer(LastUpdatedBy="triage-bot", tags=["ai:billing"]))
    ticket = adapter.get_ticket(TICKET_ID)
    assert ticket.updated_by_self
    assert ticket.tags == frozenset({"ai:billing"})


@responses.activate
def test_a_missing_ticket_is_not_found(adapter: RTAdapter) -> None:
    responses.get(f"{API}/ticket/9", status=404, json={"message": "Not Found"})
    with pytest.raises(errors.NotFoundError) as caught:
        adapter.get_ticket(9)
    assert caught.value.ticket_id == 9


def test_latin_1_bytes_are_read_with_the_charset_the_part_declares() -> None:
    content = base64.b64encode("Grüße aus Köln".encode("iso-8859-1")).decode()
    assert decode_content(content, base64_encoded=True, charset="iso-8859-1") == "Grüße aus Köln"


def test_base64_with_line_breaks_is_read_as_utf_8() -> None:
    encoded = base64.encodebytes("Zählerstand: 42\n".encode()).decode()
    assert decode_content(encoded, base64_encoded=True) == "Zählerstand: 42\n"


def test_content_that_is_not_base64_is_taken_as_it_is() -> None:
    assert decode_content("Hello, world!", base64_encoded=True) == "Hello, world!"
    assert decode_content("plain", base64_encoded=False) == "plain"
    assert decode_content(None, base64_encoded=True) == ""


@pytest.mark.parametrize(
    ("parts", "expected_id"),
    [
        (
            [
                {"id": "1", "ContentType": "multipart/mixed", "ContentLength": "0"},
                {"id": "2", "ContentType": "text/html", "ContentLength": "50"},
                {"id": "3", "ContentType": "text/plain", "ContentLength": "40"},
            ],
            "3",
        ),
        (
            [
                {"id": "1", "ContentType": "text/plain", "Filename": "server.log"},
                {"id": "2", "ContentType": "text/html", "ContentLength": "50"},
            ],
            "2",
        ),
        ([{"id": "1", "ContentType": "text/plain", "ContentLength": "0"}], None),
        ([{"id": "1", "ContentType": "image/png", "ContentLength": "9"}], None),
    ],
)
def test_the_text_part_is_plain_text_else_html_never_a_file(
    parts: list[dict[str, Any]], expected_id: str | None
) -> None:
    chosen = pick_text_part(parts)
    assert (chosen["id"] if chosen else None) == expected_id


# -- priorities ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "name"),
    [(0, "Low"), (49, "Low"), (50, "Medium"), (99, "Medium"), (100, "High"), (255, "High")],
)
def test_a_priority_number_reads_as_the_level_at_or_below_it(number: int, name: str) -> None:
    assert PriorityLevels({"Low": 0, "Medium": 50, "High": 100}).name_for(number) == name


def test_a_number_below_every_level_reads_as_the_lowest() -> None:
    levels = PriorityLevels({"High": 90, "Normal": 40})
    assert levels.name_for(5) == "Normal"
    assert levels.names == ["Normal", "High"]
    assert levels.number_for("high") == 90
    assert levels.number_for("urgent") is None


@responses.activate
def test_a_priority_is_written_as_its_number(adapter: RTAdapter) -> None:
    responses.put(
        f"{API}/ticket/{TICKET_ID}",
        match=[matchers.json_params_matcher({"Priority": 100})],
        json=["Ticket 47: Priority changed from 'Low' to 'High'"],
    )
    responses.get(f"{API}/ticket/{TICKET_ID}", json=ticket_answer(Priority="100"))
    result = adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, priority="high"))
    assert result.changed == ("priority",)


def test_an_unknown_priority_name_is_a_setup_error(adapter: RTAdapter) -> None:
    with pytest.raises(errors.HelpdeskConfigError) as caught:
        adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, priority="Urgent"))
    assert caught.value.code == "unknown_priority"


def test_priorities_are_the_configured_levels_lowest_first(adapter: RTAdapter) -> None:
    assert adapter.priorities() == ["Low", "Medium", "High"]


# -- writing ---------------------------------------------------------------------------


@responses.activate
def test_apply_moves_first_then_sets_the_owner_and_confirms_by_reading_back(
    adapter: RTAdapter,
) -> None:
    first = responses.put(
        f"{API}/ticket/{TICKET_ID}",
        match=[
            matchers.json_params_matcher(
                {"Queue": "Billing", "Priority": 50, "CustomFields": {TAGS: ["ai:a", "ai:old"]}}
            )
        ],
        json=["Ticket 47: Queue changed from 'General' to 'Billing'"],
    )
    second = responses.put(
        f"{API}/ticket/{TICKET_ID}",
        match=[matchers.json_params_matcher({"Owner": "agent-anna"})],
        json=["Ticket 47: Owner changed from Nobody to agent-anna"],
    )
    responses.get(
        f"{API}/ticket/{TICKET_ID}",
        json=ticket_answer(
            Queue="Billing", Priority="50", Owner="agent-anna", tags=["ai:a", "ai:old"]
        ),
    )
    change = ChangeSet(
        ticket_id=TICKET_ID,
        queue="Billing",
        priority="Medium",
        owner="agent-anna",
        add_tags=frozenset({"ai:a"}),
    )
    result = adapter.apply(a_ticket(tags=frozenset({"ai:old"})), change)
    assert set(result.changed) == {"queue", "priority", "owner", "tags"}
    assert first.call_count == 1 and second.call_count == 1
    puts = [c for c in responses.calls if c.request.method == "PUT"]
    assert [json.loads(c.request.body or "") for c in puts][1] == {"Owner": "agent-anna"}


@responses.activate
def test_fields_already_as_wanted_are_not_written(adapter: RTAdapter) -> None:
    result = adapter.apply(
        a_ticket(queue="General", priority="Low"),
        ChangeSet(ticket_id=TICKET_ID, queue="general", priority="Low"),
    )
    assert result.changed == ()
    assert len(responses.calls) == 0


@responses.activate
def test_a_change_rt_answered_200_but_did_not_make_is_a_conflict(adapter: RTAdapter) -> None:
    responses.put(f"{API}/ticket/{TICKET_ID}", json=[])
    responses.get(f"{API}/ticket/{TICKET_ID}", json=ticket_answer())  # still Low
    with pytest.raises(errors.ConflictError) as caught:
        adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, priority="High"))
    assert caught.value.code == "not_applied"
    assert caught.value.ticket_id == TICKET_ID


@responses.activate
def test_permission_denied_in_a_200_answer_is_an_auth_error(adapter: RTAdapter) -> None:
    responses.put(f"{API}/ticket/{TICKET_ID}", json=["Ticket 47: Permission Denied"])
    responses.get(f"{API}/ticket/{TICKET_ID}", json=ticket_answer())
    responses.get(f"{API}/queues/all", json=collection([{"id": "3", "Name": "Billing"}]))
    with pytest.raises(errors.AuthError) as caught:
        adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, queue="Billing"))
    assert caught.value.code == "permission_denied"


@responses.activate
def test_a_queue_that_does_not_exist_is_a_conflict_saying_so(adapter: RTAdapter) -> None:
    responses.put(
        f"{API}/ticket/{TICKET_ID}",
        match=[matchers.json_params_matcher({"Queue": "Nope"})],
        json=["Ticket 47: Queue Nope does not exist"],
    )
    responses.get(f"{API}/ticket/{TICKET_ID}", json=ticket_answer())
    responses.get(f"{API}/queues/all", json=collection([{"id": "1", "Name": "General"}]))
    with pytest.raises(errors.ConflictError) as caught:
        adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, queue="Nope"))
    assert caught.value.code == "queue_not_found"
    assert "Nope" not in str(caught.value)


@responses.activate
def test_updating_a_missing_ticket_is_not_found(adapter: RTAdapter) -> None:
    responses.put(
        f"{API}/ticket/{TICKET_ID}",
        status=404,
        json={"message": "Resource does not exist; use POST to create"},
    )
    with pytest.raises(errors.NotFoundError):
        adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, priority="High"))


@responses.activate
def test_the_note_is_a_comment_and_never_a_correspondence(adapter: RTAdapter) -> None:
    note = f"Queue: Billing (0.93)\n\n{footer(NOTE, '0a1b2c3d4e5f')}"
    responses.post(
        f"{API}/ticket/{TICKET_ID}/comment",
        match=[
            matchers.json_params_matcher(
                {"Subject": NOTE_SUBJECT, "Content": note, "ContentType": "text/plain"}
            )
        ],
        status=201,
        headers={"Location": "/REST/2.0/transaction/900"},
        json=["Comments added"],
    )
    result = adapter.apply(
        a_ticket(), ChangeSet(ticket_id=TICKET_ID, note=note, run_id="0a1b2c3d4e5f")
    )
    assert result.note_created
    assert not any(str(c.request.url).endswith("/correspond") for c in responses.calls)


@responses.activate
def test_the_draft_is_a_comment_whose_subject_says_it_was_not_sent(adapter: RTAdapter) -> None:
    draft = f"Guten Tag, ...\n\n{footer(DRAFT, '0a1b2c3d4e5f')}"
    responses.post(
        f"{API}/ticket/{TICKET_ID}/comment",
        match=[
            matchers.json_params_matcher(
                {"Subject": DRAFT_SUBJECT, "Content": draft, "ContentType": "text/plain"}
            )
        ],
        status=201,
        json=["Comments added"],
    )
    result = adapter.apply(
        a_ticket(), ChangeSet(ticket_id=TICKET_ID, draft=draft, run_id="0a1b2c3d4e5f")
    )
    assert result.draft_created
    assert "not sent" in DRAFT_SUBJECT


@responses.activate
def test_a_note_or_draft_already_on_the_ticket_is_not_posted_again(adapter: RTAdapter) -> None:
    run = "0a1b2c3d4e5f"
    ticket = a_ticket(footers=frozenset({footer(NOTE, run), footer(DRAFT, run)}))
    change = ChangeSet(
        ticket_id=TICKET_ID,
        note=f"n\n{footer(NOTE, run)}",
        draft=f"d\n{footer(DRAFT, run)}",
        run_id=run,
    )
    result = adapter.apply(ticket, change)
    assert result.skipped == ("note", "draft")
    assert not result.note_created and not result.draft_created
    assert len(responses.calls) == 0


@responses.activate
def test_tags_without_a_tags_field_are_skipped(sleeps: list[float]) -> None:
    adapter = build(sleeps, tags_field=None)
    result = adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, add_tags=frozenset({"x"})))
    assert result.skipped == ("tags",)
    assert len(responses.calls) == 0


# -- the marker ------------------------------------------------------------------------


def marker_put(value: str | None) -> Any:
    return responses.put(
        f"{API}/ticket/{TICKET_ID}",
        match=[matchers.json_params_matcher({"CustomFields": {MARKER: value}})],
        json=[],
    )


def marker_reads(*values: str) -> None:
    for value in values:
        responses.get(f"{API}/ticket/{TICKET_ID}", json=ticket_answer(marker=value))


CLAIM = Claim(
    created_at=datetime(2026, 11, 25, 19, 59, 30, 123456, tzinfo=UTC), run_id="0a1b2c3d4e5f"
)
CLAIM_TEXT = "claimed 0a1b2c3d4e5f 2026-11-25T19:59:30Z"


@responses.activate
def test_claim_writes_the_claim_and_reads_it_back(adapter: RTAdapter) -> None:
    marker_reads("", CLAIM_TEXT)
    put = marker_put(CLAIM_TEXT)
    result = adapter.claim(TICKET_ID, CLAIM)
    assert result.claims == (CLAIM,)
    assert not result.triaged
    assert put.call_count == 1


@responses.activate
def test_claim_reports_a_lost_race_when_another_claim_is_read_back(adapter: RTAdapter) -> None:
    other = "claimed ffffffffffff 2026-11-25T19:59:31Z"
    marker_reads("", other)
    marker_put(CLAIM_TEXT)
    result = adapter.claim(TICKET_ID, CLAIM)
    assert [c.run_id for c in result.claims] == ["ffffffffffff"]


@responses.activate
def test_claim_does_not_write_over_a_marker(adapter: RTAdapter) -> None:
    marker_reads("triaged 0a1b2c3d4e5f m1 2026-11-25T19:00:00Z")
    result = adapter.claim(TICKET_ID, CLAIM)
    assert result.triaged and result.done_elsewhere
    assert not [c for c in responses.calls if c.request.method == "PUT"]


@responses.activate
def test_claim_takes_over_a_retriage_request(adapter: RTAdapter) -> None:
    marker_reads("retriage", CLAIM_TEXT)
    marker_put(CLAIM_TEXT)
    assert adapter.claim(TICKET_ID, CLAIM).claims == (CLAIM,)


@responses.activate
def test_a_claim_rt_refused_is_an_auth_error(adapter: RTAdapter) -> None:
    marker_reads("", "")
    responses.put(f"{API}/ticket/{TICKET_ID}", json=["Permission Denied"])
    with pytest.raises(errors.AuthError):
        adapter.claim(TICKET_ID, CLAIM)


@responses.activate
def test_finish_writes_the_triaged_marker(adapter: RTAdapter) -> None:
    value = "triaged 0a1b2c3d4e5f model-1.2 2026-11-25T20:00:00Z"
    marker_put(value)
    marker_reads(value)
    adapter.finish(TICKET_ID, CLAIM, "model 1.2")


@responses.activate
def test_a_marker_rt_did_not_keep_is_a_conflict(adapter: RTAdapter) -> None:
    marker_put("failed 2026-11-25T20:00:00Z")
    marker_reads(CLAIM_TEXT)
    with pytest.raises(errors.ConflictError):
        adapter.mark_failed(TICKET_ID, CLAIM)


@responses.activate
def test_release_clears_our_claim(adapter: RTAdapter) -> None:
    marker_reads(CLAIM_TEXT, "")
    put = marker_put(None)
    adapter.release(TICKET_ID, CLAIM)
    assert put.call_count == 1


@responses.activate
def test_release_leaves_another_workers_claim_alone(adapter: RTAdapter) -> None:
    marker_reads("claimed ffffffffffff 2026-11-25T19:59:31Z")
    adapter.release(TICKET_ID, CLAIM)
    assert not [c for c in responses.calls if c.request.method == "PUT"]


@responses.activate
def test_mark_failed_writes_the_failure(adapter: RTAdapter) -> None:
    marker_put("failed 2026-11-25T20:00:00Z")
    marker_reads("failed 2026-11-25T20:00:00Z")
    adapter.mark_failed(TICKET_ID, None)


@responses.activate
def test_a_ticket_whose_queue_lacks_the_marker_field_is_a_ticket_error(adapter: RTAdapter) -> None:
    raw = ticket_answer()
    raw["CustomFields"] = [f for f in raw["CustomFields"] if f["name"] != MARKER]
    responses.get(f"{API}/ticket/{TICKET_ID}", json=raw)
    with pytest.raises(errors.ConflictError) as caught:
        adapter.claim(TICKET_ID, CLAIM)
    assert caught.value.code == "marker_not_applicable"


# -- lookups ---------------------------------------------------------------------------


@responses.activate
def test_agents_are_the_queue_s_admincc_with_open_ticket_counts(adapter: RTAdapter) -> None:
    responses.get(
        f"{API}/queue/Billing",
        json={
            "Name": "Billing",
            "AdminCc": [
                {"type": "user", "id": "agent-anna"},
                {"type": "group", "id": "9"},
                {"type": "user", "id": "agent-anna"},
            ],
        },
    )
    responses.get(f"{API}/group/9/members", status=403, json={"message": "Forbidden"})
    responses.get(
        f"{API}/tickets",
        match=[
            matchers.query_param_matcher(
                {
                    "query": "Owner = 'agent-anna' AND "
                    "(Status = 'new' OR Status = 'open' OR Status = 'stalled')"
                },
                strict_match=False,
            )
        ],
        json=collection([{"id": "5"}], total=4, pages=4, per_page=1),
    )
    agents = adapter.agents("Billing")
    assert [(a.login, a.open_tickets) for a in agents] == [("agent-anna", 4)]


@responses.activate
def test_agents_of_a_queue_that_is_not_there_is_a_conflict(adapter: RTAdapter) -> None:
    responses.get(f"{API}/queue/Nope", status=403, json={"message": "Forbidden"})
    responses.get(f"{API}/queues/all", json=collection([{"id": "1", "Name": "General"}]))
    with pytest.raises(errors.ConflictError) as caught:
        adapter.agents("Nope")
    assert caught.value.code == "queue_not_found"


def serve_check(marker_max_values: str = "1") -> None:
    responses.get(f"{API}/rt", json={"Version": "5.0.3"})
    mock_identity()
    for name, max_values in ((MARKER, marker_max_values), (TAGS, "0")):
        query = json.dumps(
            [
                {"field": "Name", "value": name},
                {"field": "LookupType", "value": "RT::Queue-RT::Ticket"},
            ]
        )
        responses.get(
            f"{API}/customfields",
            match=[matchers.query_param_matcher({"query": query}, strict_match=False)],
            json=collection([{"id": "2", "Name": name, "MaxValues": max_values, "Disabled": "0"}]),
        )
    mock_triage_queues({1: "General"})


@responses.activate
def test_check_proves_credentials_fields_and_queues(adapter: RTAdapter) -> None:
    serve_check()
    adapter.check()
    assert calls_to("/user/33")  # the user id comes from the token itself


@responses.activate
def test_check_wants_a_single_value_marker_field(adapter: RTAdapter) -> None:
    serve_check(marker_max_values="0")
    with pytest.raises(errors.HelpdeskConfigError, match="one value"):
        adapter.check()


# -- errors and retries ----------------------------------------------------------------


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
def test_status_maps_to_error_class(
    sleeps: list[float], status: int, expected: type[errors.HelpdeskError]
) -> None:
    adapter = build(sleeps, attempts=1)
    responses.get(
        f"{API}/ticket/{TICKET_ID}", status=status, json={"message": "kundin@example.test"}
    )
    with pytest.raises(expected) as caught:
        adapter.get_ticket(TICKET_ID)
    assert caught.value.status == status
    assert caught.value.endpoint == "/ticket/{id}"
    assert caught.value.ticket_id == TICKET_ID
    assert "kundin@example.test" not in str(caught.value)
    assert TOKEN not in str(caught.value)


@responses.activate
def test_429_waits_for_retry_after_then_succeeds(adapter: RTAdapter, sleeps: list[float]) -> None:
    responses.get(f"{API}/queues/all", status=429, headers={"Retry-After": "3"})
    responses.get(f"{API}/queues/all", json=collection([{"id": "1", "Name": "General"}]))
    assert adapter.queues() == ["General"]
    assert len(responses.calls) == 2
    assert sleeps == [3.0]


@responses.activate
def test_401_is_fatal_and_not_retried(adapter: RTAdapter, sleeps: list[float]) -> None:
    responses.get(f"{API}/rt", status=401, json={"message": "Unauthorized"})
    with pytest.raises(errors.AuthError):
        adapter.check()
    assert len(responses.calls) == 1
    assert sleeps == []


@responses.activate
def test_a_comment_is_not_retried_on_503(adapter: RTAdapter, sleeps: list[float]) -> None:
    responses.post(f"{API}/ticket/{TICKET_ID}/comment", status=503)
    note = f"n\n{footer(NOTE, '0a1b2c3d4e5f')}"
    with pytest.raises(errors.UnavailableError):
        adapter.apply(a_ticket(), ChangeSet(ticket_id=TICKET_ID, note=note, run_id="0a1b2c3d4e5f"))
    assert len(responses.calls) == 1
    assert sleeps == []


@responses.activate
def test_idempotent_updates_are_retried_on_503(adapter: RTAdapter, sleeps: list[float]) -> None:
    responses.put(f"{API}/ticket/{TICKET_ID}", status=503)
    responses.put(f"{API}/ticket/{TICKET_ID}", json=[])
    marker_reads("failed 2026-11-25T20:00:00Z")
    adapter.mark_failed(TICKET_ID, None)
    assert len([c for c in responses.calls if c.request.method == "PUT"]) == 2
    assert len(sleeps) == 1


def test_marker_values_written_are_the_shared_format() -> None:
    # The adapter writes what marker_value parses; a round trip keeps the claim.
    assert marker_value.parse(CLAIM_TEXT).claim == Claim(
        created_at=datetime(2026, 11, 25, 19, 59, 30, tzinfo=UTC), run_id="0a1b2c3d4e5f"
    )


@responses.activate
def test_search_items_whose_id_is_not_plain_ascii_digits_are_skipped(adapter: RTAdapter) -> None:
    # RT sends ids as strings; float() and int() would read U+0661 as 1 and choke on 5,000 digits.
    stamp = (NOW - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bad = ["\u0661", "\u00b2", "9" * 5000, "12.0", "-4", "0"]
    items = [{"id": raw, "type": "ticket", "LastUpdated": stamp} for raw in [*bad, "7"]]
    mock_identity()
    mock_triage_queues({1: "General"})
    responses.get(f"{API}/tickets", json=collection(items, total=len(items), pages=1))
    refs = list(adapter.changed_since(NOW - timedelta(seconds=60), page_size=20, max_pages=5))
    assert [ref.id for ref in refs] == [7]
