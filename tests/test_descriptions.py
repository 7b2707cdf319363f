"""Queues described by the admin: centroids, calibrated scores, the predictor, start-up checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from connector import classify_cli
from connector.classifier import Classifier, TextInput
from connector.config import BUNDLED_MODEL, HelpdeskKind, MarkerSettings, PolicySettings
from connector.demo import demo_queues
from connector.descriptions import DescribedQueues, QueueTexts, combine
from connector.errors import ConfigError
from connector.policy import Policy
from connector.predictor import Predictor

TINY_MODEL = Path(__file__).parent / "fixtures" / "classifier" / "tiny_model"


def bundled_with_embedding() -> Classifier:
    model = Classifier.load(BUNDLED_MODEL, threads=1)
    if not model.has_embedding or model.spec.description_scale is None:
        pytest.skip("the bundled model has no embedding for queue descriptions")
    return model


@pytest.fixture(scope="module")
def bundled() -> Classifier:
    return bundled_with_embedding()


class TestDescribedQueues:
    def test_centroid_per_queue_and_softmax_of_scaled_cosines(self) -> None:
        vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
        # queue 0 has one text, queue 1 two: its centroid is the normalised mean of both.
        queues = DescribedQueues.from_vectors(["a", "b"], vectors, np.array([0, 1, 1]), 10.0)
        mean = np.array([0.3, 0.9]) / np.linalg.norm([0.3, 0.9])
        np.testing.assert_allclose(queues.prototypes[1], mean, rtol=1e-6)
        ticket = np.array([[1.0, 0.0]], dtype=np.float32)
        sims = queues.similarities(ticket)
        np.testing.assert_allclose(sims, [[1.0, mean[0]]], rtol=1e-6)
        expected = np.exp(10 * sims) / np.exp(10 * sims).sum()
        np.testing.assert_allclose(queues.probabilities(ticket), expected, rtol=1e-6)
        assert queues.predictions(ticket)[0].label == "a"

    def test_combine_is_a_normalised_product(self) -> None:
        result = combine(np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]]))
        np.testing.assert_allclose(result, [[0.9, 0.1]])
        result = combine(np.array([[0.8, 0.2]]), np.array([[0.8, 0.2]]))
        np.testing.assert_allclose(result, [[0.64 / 0.68, 0.04 / 0.68]])

    def test_rejects_nonsense(self) -> None:
        with pytest.raises(ValueError, match="no queues"):
            DescribedQueues([], np.zeros((0, 2)), np.zeros(0), 1.0)
        with pytest.raises(ValueError, match="positive"):
            DescribedQueues(["a"], np.ones((1, 2)), np.zeros(1), 0.0)


def two_queues(**extra: object) -> PolicySettings:
    return PolicySettings.model_validate(
        {
            "queues": {
                "Payroll": {"description": "Salary, payslips and wage tax for employees."},
                "Network": {
                    "description": "Network, VPN, Wi-Fi and internet connection problems.",
                    "examples": ["Das WLAN im Büro bricht ständig ab."],
                },
            },
            **extra,
        }
    )


class TestPredictor:
    def test_routes_by_descriptions_in_both_languages(self, bundled: Classifier) -> None:
        predictor = Predictor(bundled, two_queues())
        assert predictor.source == "descriptions"
        assert predictor.labels["queue"] == ("Payroll", "Network")
        assert predictor.labels["priority"] == bundled.labels["priority"]
        tickets = [
            TextInput("Gehaltsabrechnung falsch", "Auf meiner Lohnabrechnung fehlt der Bonus."),
            TextInput("VPN", "I cannot connect to the VPN from home since this morning."),
        ]
        first, second = predictor.predict(tickets)
        assert first["queue"].label == "Payroll"
        assert second["queue"].label == "Network"
        assert set(first["queue"].probabilities) == {"Payroll", "Network"}
        assert sum(first["queue"].probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        # the other heads are the model's own
        alone = bundled.predict(tickets[:1])[0]["sentiment"]
        assert first["sentiment"].label == alone.label
        for label, value in alone.probabilities.items():
            assert first["sentiment"].probabilities[label] == pytest.approx(value, abs=1e-4)

    def test_without_descriptions_the_model_decides(self, bundled: Classifier) -> None:
        predictor = Predictor(bundled, PolicySettings())
        assert predictor.source == "model"
        item = [TextInput("Invoice", "I was charged twice.")]
        assert predictor.predict(item) == bundled.predict(item)

    def test_queue_source_errors_are_config_errors(self, bundled: Classifier) -> None:
        with pytest.raises(ConfigError, match="describes none"):
            Predictor(bundled, PolicySettings(queue_source="descriptions"))
        with pytest.raises(ConfigError, match="not the described queues"):
            Predictor(bundled, two_queues(queue_source="combined"))

    def test_combined_uses_both_when_labels_align(self, bundled: Classifier) -> None:
        queues = demo_queues()
        policy = PolicySettings.model_validate({"queues": queues, "queue_source": "combined"})
        predictor = Predictor(bundled, policy)
        assert predictor.source == "combined"
        item = [TextInput("Refund", "Please refund the double charge on my credit card.")]
        descriptions = Predictor(bundled, PolicySettings.model_validate({"queues": queues}))
        combined = predictor.predict(item)[0]["queue"].probabilities
        alone = descriptions.predict(item)[0]["queue"].probabilities
        model = bundled.predict(item)[0]["queue"].probabilities
        product = {k: alone[k] * model[k] for k in alone}
        total = sum(product.values())
        for name, value in combined.items():
            assert value == pytest.approx(product[name] / total, abs=1e-5)

    def test_a_model_without_embedding_is_refused(self) -> None:
        tiny = Classifier.load(TINY_MODEL, threads=1)
        if tiny.has_embedding:
            pytest.skip("the tiny model has an embedding")
        with pytest.raises(ConfigError, match="no embedding"):
            Predictor(tiny, two_queues())


class TestStartupCheck:
    def test_a_described_queue_the_helpdesk_lacks_is_named(self) -> None:
        policy = Policy(two_queues(), MarkerSettings(), HelpdeskKind.ZAMMAD)
        labels = {
            "queue": ("Payroll", "Network"),
            "priority": ("high", "low", "medium"),
            "type": ("Incident", "Request"),
            "sentiment": ("negative", "neutral", "positive"),
        }
        priorities = ["1 low", "2 normal", "3 high"]
        policy.validate(labels, ["Payroll", "Network", "Users"], priorities)
        with pytest.raises(ConfigError, match="'Network' is described but the helpdesk"):
            policy.validate(labels, ["Payroll", "Users"], priorities)

    def test_queue_map_is_not_applied_to_described_queues(self) -> None:
        policy = Policy(
            two_queues(queue_map={"Payroll": "Elsewhere"}), MarkerSettings(), HelpdeskKind.ZAMMAD
        )
        assert policy.queue_target("Payroll") == "Payroll"


def test_classify_cli_applies_the_configs_descriptions(
    bundled: Classifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "triage.yaml"
    config.write_text(
        yaml.safe_dump({"policy": two_queues().model_dump(include={"queues"})}), encoding="utf-8"
    )
    parser = argparse.ArgumentParser()
    classify_cli.add_arguments(parser)
    args = parser.parse_args(
        ["--text", "My payslip shows the wrong tax class.", "--config", str(config), "-q"]
    )
    assert classify_cli.main(args) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["predictions"]["queue"]["label"] == "Payroll"


def test_demo_queues_describe_every_demo_queue() -> None:
    queues = demo_queues()
    assert len(queues) == 10
    for name, entry in queues.items():
        assert QueueTexts(entry["description"], tuple(entry.get("examples", ())))
        assert entry["description"].strip(), name


@pytest.mark.parametrize(
    "item", [TextInput("", ""), TextInput("  ", "<p>&nbsp;</p>", "text/html"), TextInput("", b"")]
)
def test_a_ticket_without_text_is_left_for_review(bundled: Classifier, item: TextInput) -> None:
    policy_settings = PolicySettings(queues=demo_queues())
    predictor = Predictor(bundled, policy_settings)
    [prediction] = predictor.predict([item])
    for head in prediction.heads:
        labels = predictor.labels[head]
        assert prediction[head].confidence == pytest.approx(1 / len(labels)), head
    plan = Policy(policy_settings, MarkerSettings(), HelpdeskKind.ZAMMAD).decide(
        _ticket_for(item), prediction, "a" * 12
    )
    assert plan.outcome == "review"
    assert plan.change.queue is None and plan.change.priority is None
    # A ticket with words is judged as before.
    [worded] = predictor.predict([TextInput("Invoice charged twice", "Please refund it.")])
    assert worded["queue"].confidence > 0.5


def _ticket_for(item: TextInput) -> Any:
    from connector.domain import Ticket

    return Ticket(id=1, subject=str(item.subject), body=str(item.body), queue="Users")
