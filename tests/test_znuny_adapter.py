"""The Znuny / OTRS / OTOBO adapter against a faked GenericTicketConnectorREST.

Every registered answer carries matchers for the exact query or body expected,
so each test asserts what was sent, and ``assert_all_requests_are_fired`` (the
``responses`` default) asserts that nothing expected was skipped.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import responses
from responses import matchers

from connector import errors
from connector.adapters import marker_value
from connector.adapters.base import HelpdeskAdapter, WebhookRejected
from connector.adapters.znuny import (
    ARTICLE_CONTENT_TYPE,
    DRAFT_SUBJECT,
    NOTE_SUBJECT,
    ZnunyAdapter,
    error_for_code,
)
from connector.config import (
    HelpdeskKind,
    HttpSettings,
    MarkerSettings,
    PolicySettings,
    ZnunyRoutes,
    ZnunySettings,
)
from connector.domain import ChangeSet, Claim, ClaimResult, HeadPrediction, Prediction, Ticket
from connector.footer import footer
from connector.http import HttpClient, RetryPolicy
from connector.metrics import Metrics
from connector.pipeline import Pipeline
from connector.policy import Policy
from tests.lost_answers import lose_answers

BASE = "https://helpdesk.example/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"
PASSWORD = "pa55-w0rd-not-for-logs"
SESSION = "3m8WkFTWxUeO1Tn1Sd3Y7gqP0nIKzPqQ"
NEW_SESSION = "9Q2qv0kqT3Xb8ZyWcM1nR4sL7dE6fH5j"
LOGIN = {"UserLogin": "triage", "Password": PASSWORD}
NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
SERVER_DATE = "Tue, 24 Nov 2026 10:00:00 GMT"
FIXTURES = Path(__file__).parent / "fixtures" / "znuny"
RUN = "0123456789ab"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def make(sleeps: list[float], metrics: Metrics) -> Callable[..., ZnunyAdapter]:
    def build(
        *,
        use_session: bool = False,
        search_method: str = "GET",
        search_route: str = "/Ticket",
        tags_field: str | None = "AITriageTags",
        zone: str = "UTC",
        webhook_secret: str | None = None,
    ) -> ZnunyAdapter:
        settings = ZnunySettings(
            url=BASE,
            username="triage",
            password=PASSWORD,
            use_session=use_session,
            routes=ZnunyRoutes(ticket_search=search_route, ticket_search_method=search_method),
            tags_field=tags_field,
            server_time_zone=zone,
            queues=["Raw", "Sales::Hardware", "Billing"],
            webhook_secret=webhook_secret,
        )
        client = HttpClient(
            helpdesk="znuny",
            base_url=BASE,
            retry=RetryPolicy(attempts=3, total_seconds=60, retry_after_max=30),
            metrics=metrics,
            sleep=sleeps.append,
        )
        return ZnunyAdapter(settings, client, now=lambda: NOW)

    return build


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


# -- helpers that register expected requests ------------------------------------------------


def expect_session(mock: responses.RequestsMock, session: str = SESSION) -> None:
    mock.post(
        f"{BASE}/Session",
        match=[matchers.json_params_matcher(LOGIN)],
        json={"SessionID": session},
    )


def expect_get(
    mock: responses.RequestsMock,
    ids: str,
    answer: dict[str, Any],
    *,
    articles: bool = False,
    auth: dict[str, str] | None = None,
    status: int = 200,
) -> None:
    query: dict[str, Any] = {"DynamicFields": "1", **(auth or LOGIN)}
    if articles:
        query["AllArticles"] = "1"
    mock.get(
        f"{BASE}/Ticket/{ids.replace(',', '%2C')}",
        match=[matchers.query_param_matcher(query)],
        json=answer,
        status=status,
    )


def search_query(
    *, newer: str | None = None, older: str | None = None, limit: int = 3
) -> dict[str, Any]:
    query: dict[str, Any] = {
        "StateType": ["new", "open"],
        "SortBy": "Changed",
        "OrderBy": "Up",
        "Limit": str(limit),
        **LOGIN,
    }
    if newer is not None:
        query["TicketLastChangeTimeNewerDate"] = newer
    if older is not None:
        query["TicketLastChangeTimeOlderDate"] = older
    return query


def expect_search(
    mock: responses.RequestsMock,
    ids: list[int] | None,
    *,
    newer: str | None = None,
    older: str | None = None,
    limit: int = 3,
) -> None:
    mock.get(
        f"{BASE}/Ticket",
        match=[matchers.query_param_matcher(search_query(newer=newer, older=older, limit=limit))],
        json={"TicketID": [str(i) for i in ids]} if ids else {},
        headers={"Date": SERVER_DATE},
    )


def listed(ticket_id: int, changed: str, marker: str | None = None) -> dict[str, Any]:
    return {
        "TicketID": str(ticket_id),
        "Changed": changed,
        "DynamicField": [{"Name": "AITriage", "Value": marker}],
    }


def tickets(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"Ticket": list(rows)}


def marker_update(value: str, auth: dict[str, str] | None = None) -> dict[str, Any]:
    return {**(auth or LOGIN), "DynamicField": [{"Name": "AITriage", "Value": value}]}


def ids_of(refs: Iterator[Any]) -> list[int]:
    return [ref.id for ref in refs]


def plain_ticket(**overrides: Any) -> Ticket:
    fields: dict[str, Any] = {
        "id": 7,
        "subject": "Drucker",
        "body": "text",
        "queue": "Raw",
        "priority": "3 normal",
        "owner": "root@localhost",
        "tags": frozenset({"needs-review"}),
    }
    fields.update(overrides)
    return Ticket(**fields)


# -- protocol and construction --------------------------------------------------------------


def test_the_adapter_implements_the_protocol(make: Callable[..., ZnunyAdapter]) -> None:
    adapter = make()
    assert isinstance(adapter, HelpdeskAdapter)
    assert adapter.kind == "znuny"


def test_from_settings_builds_a_client_with_the_http_settings() -> None:
    adapter = ZnunyAdapter.from_settings(
        ZnunySettings(url=BASE, password=PASSWORD), HttpSettings(read_timeout_seconds=4.5)
    )
    assert adapter._http.timeouts.read == 4.5
    assert adapter._http.base_url == BASE


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"password": None}, "znuny.password"),
        ({"marker_field": "AI Triage"}, "znuny.marker_field"),
        ({"tags_field": "ai-tags"}, "znuny.tags_field"),
        ({"server_time_zone": "Mars/Olympus_Mons"}, "znuny.server_time_zone"),
    ],
)
def test_bad_settings_fail_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    settings = ZnunySettings(url=BASE, **{"password": PASSWORD, **overrides})
    with pytest.raises(errors.ConfigError, match=field):
        ZnunyAdapter(settings, HttpClient(helpdesk="znuny", base_url=BASE))


def test_queues_and_priorities_come_from_the_settings(make: Callable[..., ZnunyAdapter]) -> None:
    adapter = make()
    assert adapter.queues() == ["Raw", "Sales::Hardware", "Billing"]
    assert adapter.priorities() == ["1 very low", "2 low", "3 normal", "4 high", "5 very high"]
    assert adapter.agents("Raw") == []


# -- authentication -------------------------------------------------------------------------


def test_a_session_is_created_once_and_sent_as_a_parameter(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=True)
    expect_session(mocked)
    answer = fixture("ticket_get_new_ticket.json")
    expect_get(mocked, "7", answer, articles=True, auth={"SessionID": SESSION})
    expect_get(mocked, "7", answer, articles=True, auth={"SessionID": SESSION})
    adapter.get_ticket(7)
    adapter.get_ticket(7)
    assert [call.request.method for call in mocked.calls] == ["POST", "GET", "GET"]
    for call in mocked.calls:
        assert "Password" not in (call.request.headers.get("Authorization") or "")
    assert PASSWORD not in (mocked.calls[1].request.url or "")


def test_an_expired_session_is_recreated_once(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=True)
    expect_session(mocked)
    expect_get(
        mocked,
        "7",
        {
            "Error": {
                "ErrorCode": "TicketGet.AuthFail",
                "ErrorMessage": "TicketGet: Authorization failing!",
            }
        },
        articles=True,
        auth={"SessionID": SESSION},
    )
    expect_session(mocked, NEW_SESSION)
    expect_get(
        mocked,
        "7",
        fixture("ticket_get_new_ticket.json"),
        articles=True,
        auth={"SessionID": NEW_SESSION},
    )
    assert adapter.get_ticket(7).id == 7
    assert len(mocked.calls) == 4


def test_a_session_refused_twice_is_an_auth_error(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=True)
    refused = {"Error": {"ErrorCode": "TicketGet.AuthFail", "ErrorMessage": "failing"}}
    expect_session(mocked)
    expect_get(mocked, "7", refused, articles=True, auth={"SessionID": SESSION})
    expect_session(mocked, NEW_SESSION)
    expect_get(mocked, "7", refused, articles=True, auth={"SessionID": NEW_SESSION})
    with pytest.raises(errors.AuthError) as caught:
        adapter.get_ticket(7)
    assert caught.value.code == "TicketGet.AuthFail"
    assert len(mocked.calls) == 4


def test_wrong_credentials_fail_at_session_create(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=True)
    mocked.post(
        f"{BASE}/Session",
        match=[matchers.json_params_matcher(LOGIN)],
        json={"Error": {"ErrorCode": "SessionCreate.AuthFail", "ErrorMessage": "failing"}},
    )
    with pytest.raises(errors.AuthError) as caught:
        adapter.get_ticket(7)
    assert caught.value.code == "SessionCreate.AuthFail"
    assert len(mocked.calls) == 1


def test_without_sessions_login_and_password_are_parameters(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=False)
    expect_get(mocked, "7", tickets(listed(7, "2026-11-24 09:00:00")))
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[matchers.json_params_matcher(marker_update("failed 2026-11-24T10:00:00Z"))],
        json={"TicketID": "7", "TicketNumber": "2026112410000071"},
    )
    adapter.release(7, Claim(NOW, RUN))  # reads: no claim of ours, no write
    adapter.mark_failed(7, None)
    assert all("Authorization" not in call.request.headers for call in mocked.calls)


def test_credentials_never_reach_errors_or_logs(
    make: Callable[..., ZnunyAdapter],
    mocked: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make(use_session=False)
    url = f"{BASE}/Ticket/7?DynamicFields=1&AllArticles=1&UserLogin=triage&Password={PASSWORD}"
    for _ in range(3):
        mocked.get(f"{BASE}/Ticket/7", body=requests.ConnectionError(f"cannot reach {url}"))
    with pytest.raises(errors.NetworkError) as network:
        adapter.get_ticket(7)
    echo = f"TicketUpdate: queue {PASSWORD} of kundin@example.org is invalid"
    mocked.patch(
        f"{BASE}/Ticket/7",
        json={"Error": {"ErrorCode": "TicketUpdate.InvalidParameter", "ErrorMessage": echo}},
    )
    with pytest.raises(errors.ConflictError) as refused:
        adapter.apply(plain_ticket(), ChangeSet(ticket_id=7, queue="Nope"))
    mocked.patch(f"{BASE}/Ticket/7", json={"faultcode": "Server", "faultstring": echo}, status=500)
    with pytest.raises(errors.ServerError) as fault:
        adapter.apply(plain_ticket(), ChangeSet(ticket_id=7, queue="Nope"))
    for error in (network.value, refused.value, fault.value):
        text = f"{error} {error!r} {error.__cause__!r}"
        assert PASSWORD not in text
        assert "kundin@example.org" not in text
    assert PASSWORD not in caplog.text
    assert refused.value.code == "TicketUpdate.InvalidParameter"


def test_an_update_znuny_refuses_as_invalid_names_the_values_and_the_configured_queue(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=False)
    mocked.patch(
        f"{BASE}/Ticket/7",
        json={"Error": {"ErrorCode": "TicketUpdate.InvalidParameter", "ErrorMessage": "x"}},
    )
    with pytest.raises(errors.ConflictError) as refused:
        adapter.apply(plain_ticket(), ChangeSet(ticket_id=7, queue="Billing", priority="4 high"))
    message = str(refused.value)
    assert "queue 'Billing'" in message and "priority '4 high'" in message
    assert "listed in znuny.queues" in message
    assert refused.value.code == "TicketUpdate.InvalidParameter"


# -- error mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("TicketGet.AuthFail", errors.AuthError),
        ("TicketUpdate.AccessDenied", errors.AuthError),
        ("SessionGet.SessionInvalid", errors.AuthError),
        ("TicketGet.NotValidTicketID", errors.NotFoundError),
        ("TicketUpdate.InvalidParameter", errors.ConflictError),
        ("TicketUpdate.MissingParameter", errors.BadRequestError),
        ("TicketGet.WrongStructure", errors.BadRequestError),
        ("Webservice.InvalidConfiguration", errors.HelpdeskConfigError),
        ("TicketSearch.SomethingNew", errors.ServerError),
    ],
)
def test_operation_error_codes_map_by_suffix(
    make: Callable[..., ZnunyAdapter],
    mocked: responses.RequestsMock,
    metrics: Metrics,
    code: str,
    expected: type[errors.HelpdeskError],
) -> None:
    assert error_for_code(code) is expected
    adapter = make(use_session=False)
    message = "Ticket of customer kundin@example.org: no."
    expect_get(mocked, "7", {"Error": {"ErrorCode": code, "ErrorMessage": message}}, articles=True)
    with pytest.raises(expected) as caught:
        adapter.get_ticket(7)
    error = caught.value
    assert type(error) is expected
    assert error.code == code
    assert error.ticket_id == 7
    assert error.endpoint == "/Ticket/{id}"
    assert error.status == 200
    assert "kundin@example.org" not in str(error)
    counted = metrics.registry.get_sample_value(
        "helpdesk_triage_helpdesk_errors_total", {"helpdesk": "znuny", "kind": error.kind}
    )
    assert counted == 1


def test_a_fault_without_code_is_a_server_error(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    mocked.get(
        f"{BASE}/Ticket/7",
        json={"faultcode": "Server", "faultstring": "Could not get Ticket data"},
        status=500,
    )
    with pytest.raises(errors.ServerError) as caught:
        adapter.get_ticket(7)
    assert type(caught.value) is errors.ServerError
    assert caught.value.status == 500
    assert "Could not get" not in str(caught.value)
    assert len(mocked.calls) == 1


def test_an_unknown_route_is_a_configuration_error(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(search_method="POST")
    mocked.post(
        f"{BASE}/Ticket",
        body="HTTP::REST Error while determine Operation for request URI '/Ticket'.",
        content_type="text/plain; charset=UTF-8",
        status=500,
    )
    with pytest.raises(errors.HelpdeskConfigError) as caught:
        list(adapter.untriaged(page_size=10, max_pages=1))
    assert caught.value.endpoint == "/Ticket"
    assert caught.value.method == "POST"


def test_an_oversized_body_is_a_bad_request(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    mocked.patch(f"{BASE}/Ticket/7", body="Payload Too Large", status=413)
    with pytest.raises(errors.BadRequestError) as caught:
        adapter.apply(plain_ticket(), ChangeSet(ticket_id=7, note="x" * 100, run_id=RUN))
    assert caught.value.status == 413
    assert len(mocked.calls) == 1


def test_rate_limit_is_honoured_then_the_call_succeeds(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    adapter = make()
    mocked.get(f"{BASE}/Ticket/7", status=429, headers={"Retry-After": "2"})
    expect_get(mocked, "7", fixture("ticket_get_new_ticket.json"), articles=True)
    assert adapter.get_ticket(7).id == 7
    assert sleeps == [2.0]
    assert len(mocked.calls) == 2


def test_http_401_is_fatal_and_not_retried(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    adapter = make()
    mocked.get(f"{BASE}/Ticket/7", status=401)
    with pytest.raises(errors.AuthError):
        adapter.get_ticket(7)
    assert len(mocked.calls) == 1
    assert sleeps == []


def test_an_update_with_an_article_is_not_retried_blindly(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    mocked.patch(f"{BASE}/Ticket/7", status=503)
    with pytest.raises(errors.UnavailableError):
        adapter.apply(plain_ticket(), ChangeSet(ticket_id=7, note="note", run_id=RUN))
    assert len(mocked.calls) == 1


def test_a_marker_update_is_retried(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock, sleeps: list[float]
) -> None:
    adapter = make()
    body = marker_update("failed 2026-11-24T10:00:00Z")
    mocked.patch(f"{BASE}/Ticket/7", status=503)
    mocked.patch(
        f"{BASE}/Ticket/7", match=[matchers.json_params_matcher(body)], json={"TicketID": "7"}
    )
    adapter.mark_failed(7, None)
    assert len(mocked.calls) == 2
    assert len(sleeps) == 1


# -- search paging ----------------------------------------------------------------------------


def test_an_empty_search_answer_ends_the_walk(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_search(mocked, None)
    assert ids_of(adapter.untriaged(page_size=3, max_pages=5)) == []
    assert len(mocked.calls) == 1


def test_pages_follow_change_time_and_a_tied_second_is_read_whole(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_search(mocked, [1, 2, 3])
    expect_get(
        mocked,
        "1,2,3",
        tickets(
            listed(1, "2026-11-24 09:00:00"),
            listed(2, "2026-11-24 09:00:05"),
            listed(3, "2026-11-24 09:00:05"),
        ),
    )
    # Next page: at or after the newest second seen, before the walk's start.
    expect_search(mocked, [2, 3, 4], newer="2026-11-24 09:00:05", older="2026-11-24 09:59:59")
    expect_get(mocked, "4", tickets(listed(4, "2026-11-24 09:00:05")))
    # The page held one second only: that second is read whole, within the page budget.
    expect_search(
        mocked, [3, 2, 5, 4], newer="2026-11-24 09:00:05", older="2026-11-24 09:00:05", limit=24
    )
    expect_get(mocked, "5", tickets(listed(5, "2026-11-24 09:00:05")))
    expect_search(mocked, [6], newer="2026-11-24 09:00:06", older="2026-11-24 09:59:59")
    expect_get(mocked, "6", tickets(listed(6, "2026-11-24 09:30:00")))

    refs = list(adapter.untriaged(page_size=3, max_pages=10))

    assert [r.id for r in refs] == [1, 2, 3, 4, 5, 6]
    assert [r.updated_at for r in refs] == sorted(r.updated_at for r in refs)
    assert refs[0].updated_at == datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)
    assert len(mocked.calls) == 8


def test_a_repeated_page_stops_the_walk(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_search(mocked, [1, 2, 3])
    expect_get(
        mocked,
        "1,2,3",
        tickets(
            listed(1, "2026-11-24 09:00:00"),
            listed(2, "2026-11-24 09:10:00"),
            listed(3, "2026-11-24 09:20:00"),
        ),
    )
    # A server that ignores the bound answers the same page again.
    expect_search(mocked, [1, 2, 3], newer="2026-11-24 09:20:00", older="2026-11-24 09:59:59")
    refs = ids_of(adapter.untriaged(page_size=3, max_pages=10))
    # Ticket 3 sits at the page's newest second, which the walk could not finish.
    assert refs == [1, 2]
    assert len(mocked.calls) == 3


def test_the_page_cap_stops_the_walk_before_an_unfinished_second(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_search(mocked, [1, 2], limit=2)
    expect_get(
        mocked,
        "1,2",
        tickets(listed(1, "2026-11-24 09:00:00"), listed(2, "2026-11-24 09:10:00")),
    )
    expect_search(mocked, [2, 3], newer="2026-11-24 09:10:00", older="2026-11-24 09:59:59", limit=2)
    expect_get(mocked, "3", tickets(listed(3, "2026-11-24 09:20:00")))
    assert ids_of(adapter.untriaged(page_size=2, max_pages=2)) == [1, 2]
    assert len(mocked.calls) == 4


def test_tickets_changed_after_the_walk_began_are_left_for_the_next_poll(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_search(mocked, [1, 2])
    expect_get(
        mocked,
        "1,2",
        tickets(listed(1, "2026-11-24 09:00:00"), listed(2, "2026-11-24 10:00:00")),
    )
    assert ids_of(adapter.untriaged(page_size=3, max_pages=5)) == [1]


def test_only_tickets_that_need_triage_are_listed(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    stale_claim = marker_value.claimed(Claim(datetime(2026, 11, 24, 8, 0, tzinfo=UTC), RUN))
    expect_search(mocked, [1, 2, 3, 4, 5], limit=10)
    expect_get(
        mocked,
        "1,2,3,4,5",
        tickets(
            listed(1, "2026-11-24 09:00:01"),
            listed(2, "2026-11-24 09:00:02", f"triaged {RUN} v1 2026-11-24T09:00:02Z"),
            listed(3, "2026-11-24 09:00:03", "failed 2026-11-24T09:00:03Z"),
            listed(4, "2026-11-24 09:00:04", "retriage"),
            listed(5, "2026-11-24 09:00:05", stale_claim),
        ),
    )
    assert ids_of(adapter.untriaged(page_size=10, max_pages=5)) == [1, 4, 5]


def test_since_is_sent_in_the_servers_time_zone(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(zone="Europe/Berlin")
    expect_search(mocked, [1], newer="2026-11-24 09:00:00")
    expect_get(mocked, "1", tickets(listed(1, "2026-11-24 09:30:00")))
    since = datetime(2026, 11, 24, 8, 0, 0, tzinfo=UTC)
    refs = list(adapter.changed_since(since, page_size=3, max_pages=5))
    assert [r.id for r in refs] == [1]
    assert refs[0].updated_at == datetime(2026, 11, 24, 8, 30, 0, tzinfo=UTC)


def test_with_a_post_route_the_marker_condition_is_sent_and_walks_merge(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(search_method="POST")
    base = {"StateType": ["new", "open"], "SortBy": "Changed", "OrderBy": "Up", "Limit": 3}
    empty = {**base, **LOGIN, "DynamicField_AITriage": {"Empty": 1}}
    pending = {**base, **LOGIN, "DynamicField_AITriage": {"Like": ["claimed *", "retriage"]}}
    mocked.post(
        f"{BASE}/Ticket",
        match=[matchers.json_params_matcher(empty)],
        json={"TicketID": ["1", "3"]},
        headers={"Date": SERVER_DATE},
    )
    expect_get(
        mocked, "1,3", tickets(listed(1, "2026-11-24 09:00:00"), listed(3, "2026-11-24 09:20:00"))
    )
    mocked.post(
        f"{BASE}/Ticket",
        match=[matchers.json_params_matcher(pending)],
        json={"TicketID": ["2", "3"]},
        headers={"Date": SERVER_DATE},
    )
    expect_get(
        mocked,
        "2,3",
        tickets(listed(2, "2026-11-24 09:10:00", "retriage"), listed(3, "2026-11-24 09:20:00")),
    )
    assert ids_of(adapter.untriaged(page_size=3, max_pages=5)) == [1, 2, 3]
    assert len(mocked.calls) == 4


def test_a_ticket_gone_between_search_and_read_is_skipped(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    denied = {"Error": {"ErrorCode": "TicketGet.AccessDenied", "ErrorMessage": "no"}}
    expect_search(mocked, [1, 2])
    expect_get(mocked, "1,2", denied)
    expect_get(mocked, "1", tickets(listed(1, "2026-11-24 09:00:00")))
    expect_get(mocked, "2", denied)
    assert ids_of(adapter.untriaged(page_size=3, max_pages=5)) == [1]


# -- reading a ticket ---------------------------------------------------------------------------


def test_ticket_get_is_parsed(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(zone="Europe/Berlin")
    expect_get(mocked, "7", fixture("ticket_get_new_ticket.json"), articles=True)
    ticket = adapter.get_ticket(7)
    assert ticket.id == 7
    assert ticket.number == "2026112410000071"
    assert ticket.subject == "Drucker im 2. OG druckt nicht"
    # The first customer article, its content type without the charset.
    assert ticket.body.startswith("<p>Hallo,</p>")
    assert ticket.content_type == "text/html"
    assert ticket.has_customer_article
    assert (ticket.queue, ticket.priority, ticket.owner, ticket.state) == (
        "Raw",
        "3 normal",
        "root@localhost",
        "new",
    )
    assert ticket.tags == frozenset({"needs-review", "ai:queue:hardware"})
    # Only internal agent articles count: the public reply's footer is not ours.
    assert ticket.footers == frozenset({footer("note", RUN)})
    assert ticket.created_at == datetime(2026, 11, 24, 8, 15, 0, tzinfo=UTC)
    assert ticket.updated_at == datetime(2026, 11, 24, 8, 20, 5, tzinfo=UTC)
    assert ticket.marker is None
    assert ticket.claims == ()
    assert not ticket.failed and not ticket.retriage_requested
    assert not ticket.updated_by_self


def test_otrs5_article_types_decide_what_is_internal(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_get(mocked, "9", fixture("ticket_get_otrs5_article_types.json"), articles=True)
    ticket = adapter.get_ticket(9)
    assert ticket.body.startswith("Hello, my card")
    assert ticket.content_type == "text/plain"
    assert ticket.footers == frozenset({footer("note", RUN)})
    assert ticket.marker == f"triaged {RUN} v1.0 2026-11-24T08:29:59Z"
    assert ticket.is_triaged


def test_a_ticket_without_customer_article_has_no_body(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    answer = fixture("ticket_get_new_ticket.json")
    raw = answer["Ticket"][0]
    raw["Article"] = [a for a in raw["Article"] if a["SenderType"] != "customer"]
    raw["DynamicField"][0]["Value"] = "claimed abcdefabcdef 2026-11-24T09:59:00Z"
    expect_get(mocked, "7", answer, articles=True)
    ticket = adapter.get_ticket(7)
    assert not ticket.has_customer_article
    assert ticket.body == ""
    assert ticket.claims == (Claim(datetime(2026, 11, 24, 9, 59, tzinfo=UTC), "abcdefabcdef"),)
    assert ticket.marker is None


def test_an_empty_ticket_list_is_not_found(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_get(mocked, "7", {"Ticket": []}, articles=True)
    with pytest.raises(errors.NotFoundError) as caught:
        adapter.get_ticket(7)
    assert caught.value.ticket_id == 7


def test_a_deleted_ticket_is_not_found_rather_than_a_credentials_failure(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    denied = {"Error": {"ErrorCode": "TicketGet.AccessDenied", "ErrorMessage": "no"}}
    expect_get(mocked, "7", denied, articles=True)
    with pytest.raises(errors.NotFoundError) as caught:
        adapter.get_ticket(7)
    assert caught.value.ticket_id == 7
    assert caught.value.code == "TicketGet.AccessDenied"


def test_a_failed_login_on_read_stays_a_credentials_failure(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_get(
        mocked,
        "7",
        {"Error": {"ErrorCode": "TicketGet.AuthFail", "ErrorMessage": "no"}},
        articles=True,
    )
    with pytest.raises(errors.AuthError):
        adapter.get_ticket(7)


# -- writing back -------------------------------------------------------------------------------


def note_article(body: str) -> dict[str, Any]:
    return {
        "CommunicationChannel": "Internal",
        "IsVisibleForCustomer": 0,
        "SenderType": "agent",
        "Subject": NOTE_SUBJECT,
        "Body": body,
        "ContentType": ARTICLE_CONTENT_TYPE,
    }


def test_apply_sends_one_update_then_checks_it_then_posts_the_draft(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=True)
    note = f"queue: hardware (0.91)\n\n{footer('note', RUN)}"
    draft = f"Guten Tag, wir sehen uns den Drucker an.\n\n{footer('draft', RUN)}"
    expect_session(mocked)
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[
            matchers.json_params_matcher(
                {
                    "SessionID": SESSION,
                    "Ticket": {"Queue": "Sales::Hardware", "Priority": "4 high"},
                    "Article": note_article(note),
                    "DynamicField": [{"Name": "AITriageTags", "Value": ["ai:queue:hardware"]}],
                }
            )
        ],
        json={"TicketID": "7", "TicketNumber": "2026112410000071", "ArticleID": "31"},
    )
    read_back = fixture("ticket_get_new_ticket.json")
    read_back["Ticket"][0].update(Queue="Sales::Hardware", Priority="4 high")
    expect_get(mocked, "7", read_back, auth={"SessionID": SESSION})
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[
            matchers.json_params_matcher(
                {
                    "SessionID": SESSION,
                    "Article": {**note_article(draft), "Subject": DRAFT_SUBJECT},
                }
            )
        ],
        json={"TicketID": "7", "TicketNumber": "2026112410000071", "ArticleID": "32"},
    )
    change = ChangeSet(
        ticket_id=7,
        queue="Sales::Hardware",
        priority="4 high",
        add_tags=frozenset({"ai:queue:hardware"}),
        remove_tags=frozenset({"needs-review"}),
        note=note,
        draft=draft,
        run_id=RUN,
    )
    result = adapter.apply(plain_ticket(), change)
    assert result.changed == ("queue", "priority", "tags")
    assert result.note_created and result.draft_created
    assert result.skipped == ()
    assert len(mocked.calls) == 4


def test_apply_skips_a_note_and_draft_already_posted(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    ticket = plain_ticket(footers=frozenset({footer("note", RUN), footer("draft", RUN)}))
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[matchers.json_params_matcher({**LOGIN, "Ticket": {"Queue": "Billing"}})],
        json={"TicketID": "7"},
    )
    read_back = fixture("ticket_get_new_ticket.json")
    read_back["Ticket"][0]["Queue"] = "Billing"
    expect_get(mocked, "7", read_back)
    change = ChangeSet(
        ticket_id=7,
        queue="Billing",
        note=f"n\n{footer('note', RUN)}",
        draft=f"d\n{footer('draft', RUN)}",
        run_id=RUN,
    )
    result = adapter.apply(ticket, change)
    assert result.skipped == ("note", "draft")
    assert result.changed == ("queue",)
    assert not result.note_created and not result.draft_created


def test_apply_with_nothing_left_to_write_sends_nothing(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    ticket = plain_ticket(footers=frozenset({footer("note", RUN)}))
    result = adapter.apply(ticket, ChangeSet(ticket_id=7, note=f"n\n{footer('note', RUN)}"))
    assert result.skipped == ("note",)
    assert len(mocked.calls) == 0


def test_a_change_that_did_not_take_is_a_conflict(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[matchers.json_params_matcher({**LOGIN, "Ticket": {"Queue": "Sales::Hardware"}})],
        json={"TicketID": "7"},
    )
    expect_get(mocked, "7", fixture("ticket_get_new_ticket.json"))  # still in Raw
    change = ChangeSet(ticket_id=7, queue="Sales::Hardware", draft="d", run_id=RUN)
    with pytest.raises(errors.ConflictError) as caught:
        adapter.apply(plain_ticket(), change)
    assert caught.value.ticket_id == 7
    assert "queue" in str(caught.value)
    assert len(mocked.calls) == 2  # the draft was not posted


def test_tags_are_skipped_without_a_tags_field(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(tags_field=None)
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[matchers.json_params_matcher({**LOGIN, "Article": note_article("n")})],
        json={"TicketID": "7", "ArticleID": "33"},
    )
    change = ChangeSet(ticket_id=7, add_tags=frozenset({"ai:x"}), note="n", run_id=RUN)
    result = adapter.apply(plain_ticket(), change)
    assert result.skipped == ("tags",)
    assert result.note_created


def test_an_unconfirmed_article_is_a_server_error(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    mocked.patch(f"{BASE}/Ticket/7", json={"TicketID": "7"})
    with pytest.raises(errors.ServerError):
        adapter.apply(plain_ticket(), ChangeSet(ticket_id=7, note="n", run_id=RUN))


# -- the marker field ------------------------------------------------------------------------


def test_claim_writes_then_reads_back_its_own_claim(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    claim = Claim(datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC), RUN)
    written = f"claimed {RUN} 2026-11-24T10:00:00Z"
    expect_get(mocked, "7", tickets(listed(7, "2026-11-24 09:00:00")))
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[matchers.json_params_matcher(marker_update(written))],
        json={"TicketID": "7"},
    )
    expect_get(mocked, "7", tickets(listed(7, "2026-11-24 10:00:00", written)))
    assert adapter.claim(7, claim) == ClaimResult(claims=(claim,))


def test_claim_reports_a_later_writer(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    theirs = Claim(datetime(2026, 11, 24, 10, 0, 1, tzinfo=UTC), "fedcba987654")
    expect_get(mocked, "7", tickets(listed(7, "2026-11-24 09:00:00", "retriage")))
    mocked.patch(f"{BASE}/Ticket/7", json={"TicketID": "7"})
    expect_get(mocked, "7", tickets(listed(7, "2026-11-24 10:00:01", marker_value.claimed(theirs))))
    assert adapter.claim(7, Claim(NOW, RUN)) == ClaimResult(claims=(theirs,))


def test_claim_does_not_write_over_a_marker(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    expect_get(
        mocked,
        "7",
        tickets(listed(7, "2026-11-24 09:00:00", "triaged fedcba987654 v1 2026-11-24T09:59:00Z")),
    )
    result = adapter.claim(7, Claim(NOW, RUN))
    assert result.done_elsewhere
    assert len(mocked.calls) == 1


def test_finish_writes_the_marker(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[
            matchers.json_params_matcher(
                marker_update(f"triaged {RUN} model-2026.11 2026-11-24T10:00:00Z")
            )
        ],
        json={"TicketID": "7"},
    )
    adapter.finish(7, Claim(NOW, RUN), "model 2026.11")


def test_release_clears_only_its_own_claim(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    ours = Claim(NOW, RUN)
    theirs = Claim(NOW, "fedcba987654")
    expect_get(mocked, "7", tickets(listed(7, "2026-11-24 10:00:00", marker_value.claimed(ours))))
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[matchers.json_params_matcher(marker_update(""))],
        json={"TicketID": "7"},
    )
    adapter.release(7, ours)
    expect_get(mocked, "8", tickets(listed(8, "2026-11-24 10:00:00", marker_value.claimed(theirs))))
    adapter.release(8, ours)
    assert [call.request.method for call in mocked.calls] == ["GET", "PATCH", "GET"]


def test_mark_failed_writes_the_failure(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make()
    mocked.patch(
        f"{BASE}/Ticket/7",
        match=[matchers.json_params_matcher(marker_update("failed 2026-11-24T10:00:00Z"))],
        json={"TicketID": "7"},
    )
    adapter.mark_failed(7, Claim(NOW, RUN))


# -- start-up check ----------------------------------------------------------------------------


def test_check_passes_when_the_fields_exist(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(use_session=True)
    session = {"SessionID": SESSION}
    expect_session(mocked)
    query = {**search_query(limit=1), **session}
    for key in LOGIN:
        query.pop(key)
    mocked.get(
        f"{BASE}/Ticket", match=[matchers.query_param_matcher(query)], json={"TicketID": ["7"]}
    )
    expect_get(mocked, "7", fixture("ticket_get_new_ticket.json"), auth=session)
    adapter.check()
    assert len(mocked.calls) == 3


def test_check_names_a_missing_dynamic_field(
    make: Callable[..., ZnunyAdapter], mocked: responses.RequestsMock
) -> None:
    adapter = make(tags_field="AITags")
    expect_search(mocked, [7], limit=1)
    expect_get(mocked, "7", fixture("ticket_get_new_ticket.json"))
    with pytest.raises(errors.HelpdeskConfigError, match="tags_field"):
        adapter.check()


# -- webhooks -----------------------------------------------------------------------------------


def webhook_body() -> bytes:
    return (FIXTURES / "webhook_ticket_create.json").read_bytes()


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"znuny:{password}".encode()).decode()


@pytest.mark.parametrize(
    "headers",
    [
        {"x-triage-secret": "s3cr3t-shared"},
        {"authorization": basic("s3cr3t-shared")},
    ],
)
def test_a_webhook_with_the_secret_is_accepted(
    make: Callable[..., ZnunyAdapter], headers: dict[str, str]
) -> None:
    adapter = make(webhook_secret="s3cr3t-shared")
    event = adapter.verify_webhook(headers, webhook_body())
    assert event.ticket_id == 42


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"x-triage-secret": "wrong"}, "bad_signature"),
        ({"authorization": basic("wrong")}, "bad_signature"),
        ({"authorization": "Basic !!not-base64!!"}, "missing_signature"),
        ({}, "missing_signature"),
    ],
)
def test_a_webhook_without_the_secret_is_rejected(
    make: Callable[..., ZnunyAdapter], headers: dict[str, str], reason: str
) -> None:
    adapter = make(webhook_secret="s3cr3t-shared")
    with pytest.raises(WebhookRejected) as caught:
        adapter.verify_webhook(headers, webhook_body())
    assert caught.value.reason == reason
    assert "s3cr3t" not in str(caught.value)


def test_webhooks_are_rejected_when_no_secret_is_configured(
    make: Callable[..., ZnunyAdapter],
) -> None:
    adapter = make(webhook_secret=None)
    with pytest.raises(WebhookRejected) as caught:
        adapter.verify_webhook({"x-triage-secret": "anything"}, webhook_body())
    assert caught.value.reason == "missing_signature"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"Ticket": {"Title": "no id"}, "Event": {}}',
        b'{"Ticket": {"TicketID": "0"}}',
        b'{"Ticket": {"TicketID": true}}',
    ],
)
def test_a_malformed_webhook_is_rejected(make: Callable[..., ZnunyAdapter], body: bytes) -> None:
    adapter = make(webhook_secret="s3cr3t-shared")
    with pytest.raises(WebhookRejected) as caught:
        adapter.verify_webhook({"x-triage-secret": "s3cr3t-shared"}, body)
    assert caught.value.reason == "malformed"


def test_the_ticket_id_may_come_from_the_event_alone(make: Callable[..., ZnunyAdapter]) -> None:
    adapter = make(webhook_secret="s3cr3t-shared")
    payload = copy.deepcopy(json.loads(webhook_body()))
    del payload["Ticket"]
    payload["Event"]["Event"] = "TicketCreate"
    event = adapter.verify_webhook(
        {"x-triage-secret": "s3cr3t-shared"}, json.dumps(payload).encode()
    )
    assert (event.ticket_id, event.event) == (42, "TicketCreate")


# -- end to end: the real pipeline through the adapter against a stateful fake ----------------


class FakeZnuny:
    """Just enough of GenericTicketConnectorREST, with state, to run triage through it.

    Within one second, search results come in descending id order, as a database
    may return them, so the adapter's own ordering is exercised.
    """

    QUEUES = ("Raw", "Billing", "Sales::Hardware")
    PRIORITIES = ("1 very low", "2 low", "3 normal", "4 high", "5 very high")
    FIELDS = ("AITriage", "AITriageTags")

    def __init__(self, mock: responses.RequestsMock, *, search_method: str) -> None:
        self.tickets: dict[int, dict[str, Any]] = {}
        self.clock = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)
        self.writes = 0
        search = re.compile(re.escape(f"{BASE}/TicketSearch") + r"(\?.*)?$")
        if search_method == "GET":
            search = re.compile(re.escape(f"{BASE}/Ticket") + r"(\?.*)?$")
        mock.add_callback(search_method, search, self._search)
        mock.add_callback(
            "GET", re.compile(re.escape(f"{BASE}/Ticket/") + r"[^/?]+(\?.*)?$"), self._get
        )
        mock.add_callback("PATCH", re.compile(re.escape(f"{BASE}/Ticket/") + r"\d+$"), self._update)

    def add(self, ticket_id: int, *, state_type: str = "new", marker: str | None = None) -> None:
        self.tickets[ticket_id] = {
            "TicketID": str(ticket_id),
            "TicketNumber": f"20261124{ticket_id:08d}",
            "Title": f"Ticket {ticket_id}",
            "Queue": "Raw",
            "Priority": "3 normal",
            "Owner": "root@localhost",
            "State": state_type,
            "StateType": state_type,
            "Created": self._tick(),
            "Changed": self._now(),
            "Fields": {"AITriage": marker, "AITriageTags": None},
            "Article": [
                {
                    "ArticleID": str(ticket_id * 100),
                    "SenderType": "customer",
                    "IsVisibleForCustomer": 1,
                    "Subject": f"Ticket {ticket_id}",
                    "Body": "My invoice is wrong.",
                    "ContentType": "text/plain; charset=utf-8",
                }
            ],
        }

    def set_marker(self, ticket_id: int, value: str) -> None:
        self.tickets[ticket_id]["Fields"]["AITriage"] = value
        self.tickets[ticket_id]["Changed"] = self._tick()

    # -- the operations --------------------------------------------------------------------

    def _search(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        data = self._data(request)
        states = data.get("StateType") or []
        states = states if isinstance(states, list) else [states]
        newer, older = (
            data.get("TicketLastChangeTimeNewerDate"),
            data.get("TicketLastChangeTimeOlderDate"),
        )
        condition = data.get("DynamicField_AITriage")
        rows = [
            t
            for t in self.tickets.values()
            if t["StateType"] in states
            and (newer is None or t["Changed"] >= newer)
            and (older is None or t["Changed"] <= older)
            and self._matches(t["Fields"]["AITriage"], condition)
        ]
        rows.sort(key=lambda t: (t["Changed"], -int(t["TicketID"])))
        ids = [t["TicketID"] for t in rows[: int(data["Limit"])]]
        answer = {"TicketID": ids} if ids else {}
        return (
            200,
            # Time passes between the last write and a search.
            {"Date": email.utils.format_datetime(self.clock + timedelta(seconds=1), usegmt=True)},
            json.dumps(answer),
        )

    def _get(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        data = self._data(request)
        path = (request.path_url or "").split("?")[0]
        wanted = [int(i) for i in unquote(path.rsplit("/", 1)[1]).split(",")]
        if any(i not in self.tickets for i in wanted):
            return self._error("TicketGet.AccessDenied")
        found = []
        for ticket_id in wanted:
            raw = self.tickets[ticket_id]
            view = {k: v for k, v in raw.items() if k not in ("Fields", "Article")}
            view["DynamicField"] = [{"Name": n, "Value": raw["Fields"][n]} for n in self.FIELDS]
            if data.get("AllArticles") == "1":
                view["Article"] = copy.deepcopy(raw["Article"])
            found.append(view)
        return 200, {}, json.dumps({"Ticket": found})

    def _update(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        data = self._data(request)
        ticket_id = int((request.path_url or "").rsplit("/", 1)[1])
        raw = self.tickets[ticket_id]
        fields = data.get("Ticket", {})
        if fields.get("Queue", "Raw") not in self.QUEUES:
            return self._error("TicketUpdate.InvalidParameter")
        if fields.get("Priority", "3 normal") not in self.PRIORITIES:
            return self._error("TicketUpdate.InvalidParameter")
        raw.update(fields)
        answer: dict[str, Any] = {"TicketID": str(ticket_id)}
        if "Article" in data:
            article = {"IsVisibleForCustomer": 1, **data["Article"]}
            article["ArticleID"] = str(ticket_id * 100 + len(raw["Article"]))
            raw["Article"].append(article)
            answer["ArticleID"] = article["ArticleID"]
        for item in data.get("DynamicField", []):
            raw["Fields"][item["Name"]] = item["Value"] if item["Value"] not in ("", []) else None
        raw["Changed"] = self._tick()
        self.writes += 1
        return 200, {}, json.dumps(answer)

    # -- helpers -------------------------------------------------------------------------------

    def _data(self, request: requests.PreparedRequest) -> dict[str, Any]:
        if request.method == "GET":
            query = parse_qs(urlsplit(request.url or "").query, keep_blank_values=True)
            data: dict[str, Any] = {k: v if len(v) > 1 else v[0] for k, v in query.items()}
            if isinstance(data.get("StateType"), str):
                data["StateType"] = [data["StateType"]]
        else:
            data = json.loads(request.body or b"{}")
        assert data.pop("UserLogin", None) == "triage" and data.pop("Password", None) == PASSWORD
        return data

    @staticmethod
    def _matches(value: Any, condition: dict[str, Any] | None) -> bool:
        if condition is None:
            return True
        if "Empty" in condition:
            return value in (None, "")
        patterns = [re.escape(p).replace(r"\*", ".*") for p in condition["Like"]]
        return value is not None and any(re.fullmatch(p, value) for p in patterns)

    @staticmethod
    def _error(code: str) -> tuple[int, dict[str, str], str]:
        return 200, {}, json.dumps({"Error": {"ErrorCode": code, "ErrorMessage": "refused"}})

    def _now(self) -> str:
        return self.clock.strftime("%Y-%m-%d %H:%M:%S")

    def _tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self._now()


def triage_predict(ticket: Ticket) -> Prediction:
    return Prediction(
        {
            "queue": HeadPrediction("Billing", 0.95, {"Billing": 0.95, "Raw": 0.05}),
            "priority": HeadPrediction("high", 0.9, {"high": 0.9, "low": 0.1}),
        },
        "model-v1",
    )


def triage_pipeline(adapter: ZnunyAdapter) -> Pipeline:
    """The real pipeline with the default policy over ``adapter``, on a fixed clock."""
    markers = MarkerSettings(claim_ttl_seconds=300)
    policy_settings = PolicySettings()
    return Pipeline(
        adapter,
        triage_predict,
        Policy(policy_settings, markers, HelpdeskKind.ZNUNY),
        policy_settings,
        markers,
        Metrics(),
        now=lambda: NOW,
    )


@pytest.mark.parametrize("search_method", ["GET", "POST"])
def test_the_pipeline_triages_each_ticket_once_through_the_adapter(
    make: Callable[..., ZnunyAdapter], search_method: str
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        server = FakeZnuny(mock, search_method=search_method)
        for ticket_id in range(1, 6):
            server.add(ticket_id)
        server.add(6, marker="triaged fedcba987654 v0 2026-11-23T10:00:00Z")
        server.add(7, state_type="closed")
        route = "/TicketSearch" if search_method == "POST" else "/Ticket"
        adapter = make(search_method=search_method, search_route=route)
        pipeline = triage_pipeline(adapter)

        todo = ids_of(adapter.untriaged(page_size=2, max_pages=50))
        assert todo == [1, 2, 3, 4, 5]
        outcomes = [pipeline.process(ticket_id).outcome for ticket_id in todo]
        assert outcomes == ["applied"] * 5

        for ticket_id in todo:
            raw = server.tickets[ticket_id]
            assert (raw["Queue"], raw["Priority"]) == ("Billing", "4 high")
            assert raw["Fields"]["AITriage"].startswith("triaged ")
            assert set(raw["Fields"]["AITriageTags"]) == {"ai:queue:billing", "ai:priority:high"}
            notes = raw["Article"][1:]
            assert len(notes) == 1
            assert notes[0]["IsVisibleForCustomer"] == 0
            assert "helpdesk-triage note " in notes[0]["Body"]

        # Nothing is listed again, and processing again writes nothing.
        assert ids_of(adapter.untriaged(page_size=2, max_pages=50)) == []
        writes = server.writes
        assert pipeline.process(2).outcome == "already_triaged"
        assert server.writes == writes

        # A person asks for ticket 3 again: it is listed, and gets a second note.
        server.set_marker(3, "retriage")
        since = datetime(2026, 11, 24, 9, 0, 0, tzinfo=UTC)
        assert ids_of(adapter.changed_since(since, page_size=2, max_pages=50)) == [3]
        assert pipeline.process(3).outcome == "applied"
        assert len(server.tickets[3]["Article"]) == 3


def test_an_update_znuny_committed_but_did_not_answer_is_finished_as_decided(
    make: Callable[..., ZnunyAdapter],
) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        server = FakeZnuny(mock, search_method="POST")
        server.add(1)
        adapter = make(search_method="POST", search_route="/TicketSearch")
        lost = lose_answers(adapter._http, "PATCH", r"/Ticket/1$", body_contains="Article")
        pipeline = triage_pipeline(adapter)
        with pytest.raises(errors.NetworkError):
            pipeline.process(1)
        assert lost, "the update was not sent"
        raw = server.tickets[1]
        assert raw["Queue"] == "Billing"  # Znuny did it; the client never heard
        record = pipeline.process(1)

        assert record.outcome == "applied"
        actions = {d.head: d.action.value for d in record.decisions}
        assert actions == {"queue": "apply", "priority": "apply"}
        assert {"queue", "priority", "note"} <= set(record.changed)
        assert set(raw["Fields"]["AITriageTags"]) == {"ai:queue:billing", "ai:priority:high"}
        notes = raw["Article"][1:]
        assert len(notes) == 1
        assert "applied" in notes[0]["Body"]
        assert raw["Fields"]["AITriage"].startswith("triaged ")
