"""Build the configured helpdesk's adapter: the one place that knows all three."""

from __future__ import annotations

from connector.adapters.base import HelpdeskAdapter
from connector.circuit import CircuitBreaker
from connector.config import HelpdeskKind, Settings
from connector.metrics import Metrics


def build_adapter(
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    breaker: CircuitBreaker | None = None,
) -> HelpdeskAdapter:
    if settings.helpdesk is HelpdeskKind.ZAMMAD:
        from connector.adapters.zammad import ZammadAdapter

        return ZammadAdapter(
            settings.zammad, settings.markers, settings.http, metrics=metrics, breaker=breaker
        )
    if settings.helpdesk is HelpdeskKind.ZNUNY:
        from connector.adapters.znuny import ZnunyAdapter

        return ZnunyAdapter.from_settings(
            settings.znuny, settings.http, metrics=metrics, breaker=breaker
        )
    from connector.adapters.rt import RTAdapter

    return RTAdapter.from_settings(settings.rt, settings.http, metrics=metrics, breaker=breaker)
