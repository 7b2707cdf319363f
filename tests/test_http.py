"""The HTTP choke point: error mapping, retries, Retry-After, redirects, metrics."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses

from connector import errors
from connector.http import HttpClient, RetryPolicy, parse_retry_after
from connector.metrics import Metrics

BASE = "https://helpdesk.example/api/v1"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(sleeps: list[float], metrics: Metrics) -> HttpClient:
    return HttpClient(
        helpdesk="zammad",
        base_url=BASE,
        headers={"Authorization": "Token token=secret-token"},
        retry=RetryPolicy(attempts=4, total_seconds=60, retry_after_max=30),
        metrics=metrics,
        sleep=sleeps.append,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthError),
        (403, errors.AuthError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (413, errors.BadRequestError),
        (422, errors.ConflictError),
        (429, errors.RateLimitedError),
        (500, errors.ServerError),
        (502, errors.UnavailableError),
        (503, errors.UnavailableError),
        (504, errors.UnavailableError),
    ],
)
@responses.activate
def test_status_maps_to_error_class(client: HttpClient, status: int, expected: type) -> None:
    responses.get(f"{BASE}/tickets/7", status=status, json={"error": "customer@example.com"})
    with pytest.raises(expected) as caught:
        client.request("GET", "/tickets/{id}", path={"id": 7}, ticket_id=7)
    error = caught.value
    assert error.status == status
    assert error.endpoint == "/tickets/{id}"
    assert error.ticket_id == 7
    # Response bodies can carry customer data and never reach the message.
    assert "customer@example.com" not in str(error)
    assert "secret-token" not in str(error)


@pytest.mark.parametrize("status", [200, 201, 204])
@responses.activate
def test_success_statuses_return_the_response(client: HttpClient, status: int) -> None:
    responses.get(f"{BASE}/groups", status=status)
    assert client.request("GET", "/groups").status_code == status


@responses.activate
def test_retryable_errors_are_retried_until_success_and_counted(
    client: HttpClient, sleeps: list[float], metrics: Metrics
) -> None:
    url = f"{BASE}/tickets/1"
    responses.get(url, status=503)
    responses.get(url, status=502)
    responses.get(url, json={"id": 1})
    assert client.request_json("GET", "/tickets/{id}", path={"id": 1}) == {"id": 1}
    assert len(responses.calls) == 3
    assert len(sleeps) == 2
    retries = metrics.registry.get_sample_value(
        "helpdesk_triage_helpdesk_retries_total",
        {"helpdesk": "zammad", "endpoint": "/tickets/{id}", "reason": "unavailable"},
    )
    assert retries == 2


@responses.activate
def test_retries_stop_after_the_attempt_limit(client: HttpClient, metrics: Metrics) -> None:
    responses.get(f"{BASE}/tickets/1", status=503)
    with pytest.raises(errors.UnavailableError):
        client.request("GET", "/tickets/{id}", path={"id": 1})
    assert len(responses.calls) == 4
    failed = metrics.registry.get_sample_value(
        "helpdesk_triage_helpdesk_errors_total", {"helpdesk": "zammad", "kind": "unavailable"}
    )
    assert failed == 1


@responses.activate
def test_retry_after_seconds_is_honoured(client: HttpClient, sleeps: list[float]) -> None:
    url = f"{BASE}/tickets/1"
    responses.get(url, status=429, headers={"Retry-After": "7"})
    responses.get(url, json={"id": 1})
    client.request("GET", "/tickets/{id}", path={"id": 1})
    assert sleeps == [7.0]
    assert len(responses.calls) == 2


@responses.activate
def test_retry_after_longer_than_the_bound_is_not_waited_for(
    client: HttpClient, sleeps: list[float]
) -> None:
    responses.get(f"{BASE}/tickets/1", status=429, headers={"Retry-After": "3600"})
    with pytest.raises(errors.RateLimitedError) as caught:
        client.request("GET", "/tickets/{id}", path={"id": 1})
    assert caught.value.retry_after == 3600
    assert sleeps == []
    assert len(responses.calls) == 1


@responses.activate
def test_auth_errors_are_not_retried(client: HttpClient, sleeps: list[float]) -> None:
    responses.get(f"{BASE}/users/me", status=401)
    with pytest.raises(errors.AuthError):
        client.request("GET", "/users/me")
    assert len(responses.calls) == 1
    assert sleeps == []


@responses.activate
def test_post_is_not_retried_unless_declared_safe(client: HttpClient) -> None:
    responses.post(f"{BASE}/ticket_articles", status=503)
    with pytest.raises(errors.UnavailableError):
        client.request("POST", "/ticket_articles", json={"ticket_id": 1})
    assert len(responses.calls) == 1


@responses.activate
def test_post_declared_safe_is_retried(client: HttpClient) -> None:
    url = f"{BASE}/tags/add"
    responses.post(url, status=503)
    responses.post(url, status=201, json=True)
    client.request("POST", "/tags/add", json={"item": "x"}, retry=True)
    assert len(responses.calls) == 2


@responses.activate
def test_connection_errors_become_network_errors_and_are_retried(client: HttpClient) -> None:
    url = f"{BASE}/tickets/1"
    responses.get(url, body=requests.ConnectionError("reset by peer"))
    responses.get(url, body=requests.ReadTimeout("slow"))
    responses.get(url, json={"id": 1})
    client.request("GET", "/tickets/{id}", path={"id": 1})
    assert len(responses.calls) == 3


@responses.activate
def test_redirect_on_a_write_is_a_configuration_error(client: HttpClient) -> None:
    responses.put(
        f"{BASE}/tickets/1", status=301, headers={"Location": "https://elsewhere.example/"}
    )
    with pytest.raises(errors.HelpdeskConfigError):
        client.request("PUT", "/tickets/{id}", path={"id": 1}, json={})
    assert len(responses.calls) == 1


@responses.activate
def test_a_redirect_on_a_read_is_followed(client: HttpClient) -> None:
    responses.get(f"{BASE}/tickets/1", status=302, headers={"Location": f"{BASE}/tickets/1/moved"})
    responses.get(f"{BASE}/tickets/1/moved", json={"id": 1})
    response = client.request("GET", "/tickets/{id}", path={"id": 1})
    assert response.json() == {"id": 1}
    assert [r.status_code for r in response.history] == [302]
    # The credentials go along on the same host, as with requests' own redirects.
    assert responses.calls[1].request.headers["Authorization"] == "Token token=secret-token"


@responses.activate
def test_cookies_the_helpdesk_sets_are_sent_back(client: HttpClient) -> None:
    responses.get(f"{BASE}/users/me", json={}, headers={"Set-Cookie": "session=abc; Path=/"})
    responses.get(f"{BASE}/groups", json=[])
    client.request("GET", "/users/me")
    client.request("GET", "/groups")
    assert "Cookie" not in responses.calls[0].request.headers
    assert responses.calls[1].request.headers["Cookie"] == "session=abc"


@responses.activate
def test_one_client_retries_for_many_threads_at_once(
    client: HttpClient, sleeps: list[float], metrics: Metrics
) -> None:
    # The client keeps one tenacity controller; each call's attempts must stay its own.
    count = 8
    for ticket in range(count):
        responses.get(f"{BASE}/tickets/{ticket}", status=503)
        responses.get(f"{BASE}/tickets/{ticket}", status=503)
        responses.get(f"{BASE}/tickets/{ticket}", json={"id": ticket})
    start = threading.Barrier(count)

    def read(ticket: int) -> Any:
        start.wait()
        return client.request_json("GET", "/tickets/{id}", path={"id": ticket})

    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(read, range(count)))
    assert answers == [{"id": ticket} for ticket in range(count)]
    assert len(responses.calls) == 3 * count
    assert len(sleeps) == 2 * count
    retries = metrics.registry.get_sample_value(
        "helpdesk_triage_helpdesk_retries_total",
        {"helpdesk": "zammad", "endpoint": "/tickets/{id}", "reason": "unavailable"},
    )
    assert retries == 2 * count


@responses.activate
def test_path_parameters_are_quoted(client: HttpClient) -> None:
    responses.get(f"{BASE}/queue/General%2FSub", json={})
    client.request("GET", "/queue/{name}", path={"name": "General/Sub"})
    assert responses.calls[0].request.url == f"{BASE}/queue/General%2FSub"


@responses.activate
def test_latency_is_recorded_under_the_template(client: HttpClient, metrics: Metrics) -> None:
    responses.get(f"{BASE}/tickets/42", json={})
    client.request("GET", "/tickets/{id}", path={"id": 42})
    count = metrics.registry.get_sample_value(
        "helpdesk_triage_helpdesk_request_duration_seconds_count",
        {"helpdesk": "zammad", "method": "GET", "endpoint": "/tickets/{id}", "status": "200"},
    )
    assert count == 1


@responses.activate
def test_non_json_answer_is_a_server_error(client: HttpClient) -> None:
    responses.get(f"{BASE}/groups", body="<html>maintenance</html>")
    with pytest.raises(errors.ServerError):
        client.request_json("GET", "/groups")


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 0 ") == 0
    assert parse_retry_after("Wed, 25 Nov 2026 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("-5") == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None


def test_the_pool_is_as_large_as_the_threads_sharing_it_so_nothing_is_discarded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading
    import time as clock
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from connector.adapters.factory import build_adapter
    from connector.config import load_settings

    class ClosesEveryConnection(BaseHTTPRequestHandler):  # as Znuny's Apache does
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            clock.sleep(0.02)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), ClosesEveryConnection)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = load_settings(
            helpdesk="znuny",
            znuny={"url": f"http://127.0.0.1:{server.server_port}", "password": "x"},
            ingest={"concurrency": 24},
        )
        client = build_adapter(settings)._http  # type: ignore[attr-defined]
        caplog.set_level(logging.WARNING, logger="urllib3")

        def work() -> None:
            for _ in range(4):
                client.request("GET", "/Ticket/1")

        threads = [threading.Thread(target=work) for _ in range(28)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    finally:
        server.shutdown()
