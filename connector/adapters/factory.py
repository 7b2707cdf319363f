"""Build the configured helpdesk's adapter: the one place that knows all three."""

from __future__ import annotations

from connector.adapters.base import HelpdeskAdapter
from connector.circuit import CircuitBreaker
from connector.config import HelpdeskKind, HttpSettings, Settings
from connector.metrics import Metrics

# Threads besides the workers that may call the helpdesk at the same time: the
# poller, the sweep, the readiness re-check and a model reload's policy check.
OTHER_CALLERS = 4


def http_settings(settings: Settings) -> HttpSettings:
    """``settings.http`` with a connection pool no smaller than the threads that share it.

    A pool smaller than that discards connections under load, with a warning per
    request, and with a helpdesk that closes every connection (Znuny does) that
    is most requests.
    """
    wanted = settings.ingest.concurrency + OTHER_CALLERS
    if settings.http.pool_size >= wanted:
        return settings.http
    return settings.http.model_copy(update={"pool_size": wanted})


def build_adapter(
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    breaker: CircuitBreaker | None = None,
) -> HelpdeskAdapter:
    http = http_settings(settings)
    if settings.helpdesk is HelpdeskKind.ZAMMAD:
        from connector.adapters.zammad import ZammadAdapter

        return ZammadAdapter(
            settings.zammad, settings.markers, http, metrics=metrics, breaker=breaker
        )
    if settings.helpdesk is HelpdeskKind.ZNUNY:
        from connector.adapters.znuny import ZnunyAdapter

        return ZnunyAdapter.from_settings(settings.znuny, http, metrics=metrics, breaker=breaker)
    from connector.adapters.rt import RTAdapter

    return RTAdapter.from_settings(settings.rt, http, metrics=metrics, breaker=breaker)
