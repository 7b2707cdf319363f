"""The one place helpdesk requests are sent.

Every adapter call goes through ``HttpClient.request``: it fills the path
template, applies timeouts, maps the answer to the error tree, retries what is
worth retrying (with tenacity: exponential backoff with jitter, ``Retry-After``
honoured, bounded by attempts and total time), and records latency and retries
under the path *template*, so metrics never carry ticket ids or credentials.

Only idempotent calls are retried blindly. A POST is retried only when the
adapter says it is safe (``retry=True``), for example a tag add, which is a
set operation. Writes never follow redirects: a redirect there means the base
URL is wrong, and following it could replay the write elsewhere.

Every ticket costs several calls, so the per-call work here is kept small (it
was measured, see docs/benchmarks.md): the tenacity ``Retrying`` is built once
per client (tenacity keeps its per-call state in thread-locals, so one
instance serves every worker thread), metric children are looked up once per
label set, and a request is prepared by requests' own ``PreparedRequest``
with the session's headers, auth and cookies and handed straight to the
session's transport adapter. That skips ``Session.request``'s per-call
merging of settings that never change here (no proxies, no environment, no
hooks, no per-call headers). Cookies still go out from and come back into the
session's jar, and a redirect answered to a GET or HEAD is followed by the
session's own ``resolve_redirects``, as ``Session.request`` did.

An optional ``CircuitBreaker`` guards every attempt, retries included: while
it is open no request is sent at all, and each answer tells it whether the
helpdesk looks down (see ``connector.circuit``).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests
import tenacity

from connector.circuit import CircuitBreaker
from connector.errors import (
    HelpdeskConfigError,
    HelpdeskError,
    NetworkError,
    RateLimitedError,
    RetryableError,
    ServerError,
    error_for_status,
)
from connector.metrics import Metrics

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. Bounded both by attempts and by total time."""

    attempts: int = 4
    total_seconds: float = 30.0
    backoff_initial: float = 0.25
    backoff_max: float = 8.0
    # A Retry-After longer than this is not waited for here: the error goes up
    # and the ticket is requeued, so one rate-limited call does not hold a worker.
    retry_after_max: float = 30.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 3.05
    read: float = 10.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header, in delta-seconds or HTTP-date form."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _fill(template: str, path: Mapping[str, object]) -> str:
    """Put path parameters into a template such as ``/tickets/{id}``, each URL-quoted."""
    return template.format_map({k: quote(str(v), safe="") for k, v in path.items()})


class HttpClient:
    """A requests session bound to one helpdesk, with its retry policy and metrics."""

    def __init__(
        self,
        *,
        helpdesk: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        metrics: Metrics | None = None,
        verify_tls: bool | str = True,
        pool_size: int = 16,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.helpdesk = helpdesk
        self.breaker = breaker
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.retry_policy = retry or RetryPolicy()
        self.metrics = metrics
        self._sleep = sleep
        self.session = session or requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.verify = verify_tls
        # Environment proxies and .netrc must not silently reroute a sidecar's calls.
        self.session.trust_env = False
        if headers:
            self.session.headers.update(headers)
        if auth:
            self.session.auth = auth
        self.session.headers.setdefault("Accept", "application/json")
        self._transport = adapter
        self._timeout = (self.timeouts.connect, self.timeouts.read)
        self._verify: bool | str = verify_tls
        # One controller for every call: its per-call state lives in thread-locals.
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetryableError),
            wait=self._wait,
            stop=self._stop,
            sleep=self._sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        self._latency: dict[tuple[str, str, str], Any] = {}

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        path: Mapping[str, object] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        ticket_id: int | None = None,
        retry: bool | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> requests.Response:
        """Send one request, retrying as policy allows; return the successful response.

        ``endpoint`` is a path template relative to the base URL; ``path`` fills it.
        ``ok_statuses`` lists non-2xx statuses the caller handles itself.
        """
        method = method.upper()
        url = self.base_url + _fill(endpoint, path or {})
        may_retry = retry if retry is not None else method in IDEMPOTENT_METHODS
        where = {
            "helpdesk": self.helpdesk,
            "method": method,
            "endpoint": endpoint,
            "ticket_id": ticket_id,
        }

        try:
            if not may_retry:
                return self._send_once(method, url, endpoint, where, params, json, ok_statuses)
            return self._retrying(
                self._send_once, method, url, endpoint, where, params, json, ok_statuses
            )
        except HelpdeskError as error:
            self._count_error(error)
            raise

    def request_json(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        """``request`` and decode the JSON answer; a non-JSON answer is a server error."""
        response = self.request(method, endpoint, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                "answer is not JSON",
                helpdesk=self.helpdesk,
                method=method.upper(),
                endpoint=endpoint,
                status=response.status_code,
                ticket_id=kwargs.get("ticket_id"),
            ) from None

    # -- one attempt -----------------------------------------------------------------

    def _send_once(
        self,
        method: str,
        url: str,
        endpoint: str,
        where: dict[str, Any],
        params: Mapping[str, Any] | None,
        body: Any,
        ok_statuses: frozenset[int],
    ) -> requests.Response:
        """One attempt, through the circuit breaker when there is one."""
        breaker = self.breaker
        if breaker is None:
            return self._send_unguarded(method, url, endpoint, where, params, body, ok_statuses)
        breaker.before_call(**where)
        try:
            response = self._send_unguarded(method, url, endpoint, where, params, body, ok_statuses)
        except HelpdeskError as error:
            breaker.record(error)
            raise
        except BaseException:
            breaker.record_neutral()
            raise
        breaker.record_success()
        return response

    def _send_unguarded(
        self,
        method: str,
        url: str,
        endpoint: str,
        where: dict[str, Any],
        params: Mapping[str, Any] | None,
        body: Any,
        ok_statuses: frozenset[int],
    ) -> requests.Response:
        started = time.perf_counter()
        status_label = "error"
        try:
            try:
                response = self._exchange(method, url, params, body)
            except requests.ConnectTimeout:
                status_label = "timeout"
                raise NetworkError("connect timed out", request_sent=False, **where) from None
            except requests.Timeout:
                status_label = "timeout"
                raise NetworkError("timed out", **where) from None
            except requests.ConnectionError:
                status_label = "connection"
                raise NetworkError("connection failed", **where) from None
            except requests.RequestException:
                raise NetworkError("request failed", **where) from None
            status_label = str(response.status_code)
            if response.status_code in ok_statuses:
                return response
            if 300 <= response.status_code < 400:
                raise HelpdeskConfigError(
                    "redirect on a write: check the base URL", status=response.status_code, **where
                )
            error_class = error_for_status(response.status_code)
            if error_class is None:
                return response
            if error_class is RateLimitedError:
                raise RateLimitedError(
                    "rate limited",
                    retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    status=response.status_code,
                    **where,
                )
            raise error_class(
                _reason_for(response.status_code), status=response.status_code, **where
            )
        finally:
            if self.metrics is not None:
                self._latency_child(method, endpoint, status_label).observe(
                    time.perf_counter() - started
                )

    def _exchange(
        self, method: str, url: str, params: Mapping[str, Any] | None, body: Any
    ) -> requests.Response:
        """One HTTP exchange, prepared as ``Session.request`` would and sent by its adapter."""
        session = self.session
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=method,
            url=url,
            headers=session.headers,
            params=params,
            json=body,
            auth=session.auth,
            cookies=session.cookies,
        )
        settings: dict[str, Any] = {
            "stream": False,
            "timeout": self._timeout,
            "verify": self._verify,
            "cert": session.cert,
            "proxies": session.proxies,
        }
        response = self._transport.send(prepared, **settings)
        # Read the body now, as Session.send does: it returns the connection to the pool.
        response.content  # noqa: B018
        if response.cookies:
            session.cookies.update(response.cookies)
        if response.is_redirect and method in ("GET", "HEAD"):
            # Rare (a proxy in front of the helpdesk): requests' own redirect handling,
            # which also drops the credentials when the redirect leaves the host.
            history = [response, *session.resolve_redirects(response, prepared, **settings)]
            response = history.pop()
            response.history = history
        return response

    def _latency_child(self, method: str, endpoint: str, status: str) -> Any:
        """The latency histogram for one label set, looked up once and then reused."""
        key = (method, endpoint, status)
        child = self._latency.get(key)
        if child is None:
            assert self.metrics is not None
            child = self.metrics.helpdesk_request_seconds.labels(
                helpdesk=self.helpdesk, method=method, endpoint=endpoint, status=status
            )
            self._latency[key] = child
        return child

    # -- tenacity hooks ------------------------------------------------------------

    def _wait(self, state: tenacity.RetryCallState) -> float:
        policy = self.retry_policy
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return error.retry_after
        backoff = tenacity.wait_random_exponential(
            multiplier=policy.backoff_initial, max=policy.backoff_max
        )
        return float(backoff(state))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        policy = self.retry_policy
        if state.attempt_number >= policy.attempts:
            return True
        error = state.outcome.exception() if state.outcome else None
        upcoming = state.upcoming_sleep or 0.0
        if isinstance(error, RateLimitedError) and upcoming > policy.retry_after_max:
            return True
        elapsed = state.seconds_since_start or 0.0
        return elapsed + upcoming > policy.total_seconds

    def _count_retry(self, state: tenacity.RetryCallState) -> None:
        if self.metrics is None or state.outcome is None:
            return
        error = state.outcome.exception()
        if isinstance(error, HelpdeskError):
            self.metrics.helpdesk_retries.labels(
                helpdesk=self.helpdesk, endpoint=error.endpoint, reason=error.kind
            ).inc()

    def _count_error(self, error: HelpdeskError) -> None:
        if self.metrics is not None:
            self.metrics.helpdesk_errors.labels(helpdesk=self.helpdesk, kind=error.kind).inc()


_REASONS = {
    400: "bad request",
    401: "not authenticated",
    403: "not permitted",
    404: "not found",
    408: "request timeout",
    409: "conflict",
    413: "request too large",
    422: "unprocessable",
    500: "server error",
    502: "bad gateway",
    503: "unavailable",
    504: "gateway timeout",
}


def _reason_for(status: int) -> str:
    return _REASONS.get(status, f"HTTP {status}")


__all__ = [
    "HttpClient",
    "RetryPolicy",
    "Timeouts",
    "parse_retry_after",
]
