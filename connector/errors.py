"""The project's error tree, grouped by what the caller does about an error.

- ``RetryableError``: try again later (429, 502/503/504, timeouts, resets).
  The HTTP layer retries these itself, within bounds; what escapes it is
  counted against the ticket.
- ``TicketError``: this ticket cannot be processed as asked (400, 404, 409,
  413, 422, or an operation error naming the ticket). Skip it, count it.
- ``CircuitOpenError``: the helpdesk as a whole is taken to be down (the
  circuit breaker is open) and the call was not sent. Not the ticket's fault:
  the ticket waits, and its attempts are not used up.
- ``AuthError``: the credentials or permissions are wrong (401/403). Nothing
  will work until an operator fixes them; readiness fails.
- ``HelpdeskConfigError``: the helpdesk is set up differently from what the
  configuration says (unknown route, redirect on a write, missing field).
- ``ModelError``: the model directory is missing, corrupt or inconsistent.
- ``ConfigError``: the sidecar's own configuration is invalid.

Messages carry metadata only (helpdesk, method, path template, status, ticket
id): never ticket text, addresses, response bodies or tokens.
"""

from __future__ import annotations


class TriageError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(TriageError):
    """The sidecar's configuration is invalid; the message names the field."""


class ModelError(TriageError):
    """The model directory cannot be loaded; the message names the file."""


class HelpdeskError(TriageError):
    """A helpdesk call failed. Carries where, never what was said."""

    def __init__(
        self,
        reason: str,
        *,
        helpdesk: str = "",
        method: str = "",
        endpoint: str = "",
        status: int | None = None,
        ticket_id: int | None = None,
        code: str | None = None,
    ) -> None:
        self.reason = reason
        self.helpdesk = helpdesk
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.ticket_id = ticket_id
        self.code = code
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [self.reason]
        where = " ".join(p for p in (self.helpdesk, self.method, self.endpoint) if p)
        if where:
            parts.append(f"[{where}]")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.ticket_id is not None:
            parts.append(f"ticket={self.ticket_id}")
        return " ".join(parts)

    @property
    def kind(self) -> str:
        """A short stable name for metrics labels."""
        return _KIND_NAMES.get(type(self), "error")


class RetryableError(HelpdeskError):
    """A passing failure: overload, gateway errors, timeouts, resets."""


class RateLimitedError(RetryableError):
    """429, or the helpdesk's equivalent. ``retry_after`` is in seconds."""

    def __init__(self, reason: str, *, retry_after: float | None = None, **where: object) -> None:
        self.retry_after = retry_after
        super().__init__(reason, **where)  # type: ignore[arg-type]


class UnavailableError(RetryableError):
    """408/502/503/504: the helpdesk or a proxy in front of it is down for now."""


class NetworkError(RetryableError):
    """No usable answer: connect or read timeout, connection reset or refused.

    ``request_sent`` is False only when the request surely never left (a connect
    timeout); after a read timeout or a reset the helpdesk may have acted on it.
    """

    def __init__(self, reason: str, *, request_sent: bool = True, **where: object) -> None:
        self.request_sent = request_sent
        super().__init__(reason, **where)  # type: ignore[arg-type]


class CircuitOpenError(HelpdeskError):
    """Not sent: recent calls say the helpdesk is down. ``retry_after``: seconds to the next probe.

    Deliberately not a ``RetryableError``: retrying inside the call would only
    be rejected again, and a ticket must not be charged for an outage.
    """

    def __init__(self, reason: str, *, retry_after: float, **where: object) -> None:
        self.retry_after = retry_after
        super().__init__(reason, **where)  # type: ignore[arg-type]


class TicketError(HelpdeskError):
    """This ticket cannot be processed as asked; skip it and count it."""


class NotFoundError(TicketError):
    """The ticket (or the thing asked for) does not exist."""


class ConflictError(TicketError):
    """409/422 or a validation error: the write contradicts the helpdesk's state."""


class BadRequestError(TicketError):
    """400/413: the request itself was wrong for this ticket."""


class AuthError(HelpdeskError):
    """401/403 or the helpdesk's equivalent: fix credentials or permissions."""


class ServerError(HelpdeskError):
    """500 and other 5xx that a retry will not heal."""


class HelpdeskConfigError(HelpdeskError):
    """The helpdesk is not set up as configured (unknown route, redirect on write)."""


_KIND_NAMES: dict[type[HelpdeskError], str] = {
    HelpdeskError: "error",
    RetryableError: "retryable",
    RateLimitedError: "rate_limited",
    UnavailableError: "unavailable",
    NetworkError: "network",
    CircuitOpenError: "circuit_open",
    TicketError: "ticket",
    NotFoundError: "not_found",
    ConflictError: "conflict",
    BadRequestError: "bad_request",
    AuthError: "auth",
    ServerError: "server",
    HelpdeskConfigError: "helpdesk_config",
}


def error_for_status(status: int) -> type[HelpdeskError] | None:
    """The error class for an HTTP status, or None when the status is a success.

    One table for every adapter; adapters whose helpdesk reports errors inside
    a 200 (Znuny) map those codes themselves and then raise these classes.
    """
    if status < 300:
        return None
    if status == 429:
        return RateLimitedError
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status in (409, 422):
        return ConflictError
    if status in (400, 413):
        return BadRequestError
    if status in (408, 502, 503, 504):
        return UnavailableError
    if status >= 500:
        return ServerError
    if 300 <= status < 400:
        return HelpdeskConfigError
    return BadRequestError
