"""Metric naming conventions, and logs that carry metadata but no ticket text."""

from __future__ import annotations

import io
import json
import logging

from prometheus_client.core import Metric

from connector.config import LoggingSettings, MarkerSettings, PolicySettings
from connector.logs import configure_logging
from connector.metrics import PREFIX, Metrics
from connector.pipeline import Pipeline
from connector.policy import Policy
from tests.memory_adapter import MemoryAdapter
from tests.test_pipeline import new_ticket, predict

FORBIDDEN_LABELS = {"ticket", "ticket_id", "id", "subject", "url", "path", "user", "email"}


def families() -> list[Metric]:
    metrics = Metrics()
    metrics.preinitialise("zammad", ["queue", "priority"])
    return list(metrics.registry.collect())


def test_every_metric_follows_the_naming_rules() -> None:
    found = families()
    assert len(found) >= 15
    for family in found:
        assert family.name.startswith(f"{PREFIX}_"), family.name
        if family.type == "counter":
            assert any(s.name.endswith("_total") for s in family.samples) or not family.samples
        if family.type == "histogram" and "duration" in family.name:
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (family.name, sample.labels)


def test_inference_buckets_resolve_milliseconds() -> None:
    from connector.metrics import INFERENCE_BUCKETS

    assert INFERENCE_BUCKETS[0] <= 0.001
    assert sorted(INFERENCE_BUCKETS) == list(INFERENCE_BUCKETS)


def run_logged(settings: LoggingSettings) -> str:
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    try:
        subject = "Secret merger plans of ACME"
        adapter = MemoryAdapter([new_ticket(subject=subject)])
        policy_settings = PolicySettings()
        markers = MarkerSettings()
        pipeline = Pipeline(
            adapter,
            predict,
            Policy(policy_settings, markers, "zammad"),  # type: ignore[arg-type]
            policy_settings,
            markers,
            Metrics(),
        )
        pipeline.process(1)
        logging.getLogger("connector.test").info("extra text", extra={"subject": subject})
    finally:
        logging.getLogger().handlers.clear()
    return stream.getvalue()


def test_logs_are_json_with_metadata_and_without_ticket_text() -> None:
    output = run_logged(LoggingSettings(format="json"))
    lines = [json.loads(line) for line in output.splitlines()]
    processed = next(line for line in lines if line["message"] == "ticket processed")
    assert processed["ticket_id"] == 1
    assert processed["outcome"] == "applied"
    assert processed["predictions"]["queue"]["label"] == "Billing and Payments"
    assert "Secret merger" not in output
    assert "Please fix" not in output


def test_ticket_text_reaches_logs_only_when_allowed() -> None:
    output = run_logged(LoggingSettings(format="json", ticket_text=True))
    assert "Secret merger plans of ACME" in output
