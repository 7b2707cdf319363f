"""Draft replies (templates, retrieval, when not to draft) and owner picking."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from connector.config import (
    DraftSettings,
    HelpdeskKind,
    MarkerSettings,
    OwnerSettings,
    PolicySettings,
)
from connector.domain import Agent, HeadPrediction, Prediction, Ticket
from connector.drafts import DraftWriter
from connector.errors import ConfigError
from connector.footer import find_footers
from connector.owners import OwnerPicker
from connector.policy import Policy

TICKET = Ticket(id=5, number="67005", subject="Invoice wrong", body="charged twice", queue="Users")


def plan_for(label: str, confidence: float) -> tuple[Prediction, object]:
    prediction = Prediction({"queue": HeadPrediction(label, confidence, {label: confidence})}, "m1")
    policy = Policy(PolicySettings(), MarkerSettings(), HelpdeskKind.ZAMMAD)
    return prediction, policy.decide(TICKET, prediction, "0123456789ab")


def test_template_for_the_predicted_queue_with_fields_filled_in() -> None:
    writer = DraftWriter(DraftSettings(templates={"Billing": "Re {number}: {title} {unknown}"}))
    prediction, plan = plan_for("Billing", 0.9)
    draft = writer(TICKET, prediction, plan)  # type: ignore[arg-type]
    assert draft is not None
    assert "Re 67005: Invoice wrong {unknown}" in draft
    assert "not sent to the customer" in draft
    assert find_footers([draft]) == {"helpdesk-triage draft 0123456789ab"}


def test_no_draft_when_the_queue_is_unsure_or_no_template_fits() -> None:
    writer = DraftWriter(DraftSettings(templates={"Billing": "Hello"}))
    prediction, plan = plan_for("Billing", 0.1)
    assert writer(TICKET, prediction, plan) is None  # type: ignore[arg-type]
    prediction, plan = plan_for("Sales", 0.95)
    assert writer(TICKET, prediction, plan) is None  # type: ignore[arg-type]
    disabled = DraftWriter(DraftSettings(enabled=False, templates={"Billing": "Hello"}))
    prediction, plan = plan_for("Billing", 0.95)
    assert disabled(TICKET, prediction, plan) is None  # type: ignore[arg-type]


def fake_embed(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Bag of two words, normalised: enough to tell billing from printers."""
    rows = []
    for subject, body in pairs:
        text = f"{subject} {body}".lower()
        vector = np.array(
            [text.count("invoice") + text.count("charged"), text.count("printer")], float
        )
        rows.append(vector / (np.linalg.norm(vector) or 1.0))
    return np.vstack(rows)


def test_the_most_similar_answered_ticket_wins_over_the_template(tmp_path: Path) -> None:
    knowledge = tmp_path / "answers.jsonl"
    knowledge.write_text(
        json.dumps(
            {"subject": "Printer jam", "body": "printer broken", "answer": "Restart the printer."}
        )
        + "\n"
        + json.dumps(
            {"subject": "Invoice twice", "body": "charged twice", "answer": "We refunded you."}
        )
        + "\n",
        encoding="utf-8",
    )
    settings = DraftSettings(
        templates={"Billing": "template"}, knowledge_file=knowledge, min_similarity=0.5
    )
    writer = DraftWriter(settings, fake_embed)
    prediction, plan = plan_for("Billing", 0.9)
    draft = writer(TICKET, prediction, plan)  # type: ignore[arg-type]
    assert draft is not None and "We refunded you." in draft and "template" not in draft


def test_a_bad_knowledge_file_fails_start_up_naming_the_line(tmp_path: Path) -> None:
    knowledge = tmp_path / "answers.jsonl"
    knowledge.write_text('{"answer": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"answers\.jsonl:2"):
        DraftWriter(DraftSettings(knowledge_file=knowledge), fake_embed)
    with pytest.raises(ConfigError, match="embedding output"):
        DraftWriter(DraftSettings(knowledge_file=knowledge), None)


def test_least_loaded_spreads_a_burst_and_caches_the_lookup() -> None:
    lookups: list[str] = []

    def agents(queue: str) -> list[Agent]:
        lookups.append(queue)
        return [Agent("1", "anna", 2), Agent("2", "ben", 0), Agent("3", "cem", 5)]

    picker = OwnerPicker(
        OwnerSettings(strategy="least_loaded", cache_seconds=60), agents, clock=lambda: 0.0
    )
    chosen = [picker("Billing").login for _ in range(5)]  # type: ignore[union-attr]
    assert chosen == ["ben", "ben", "anna", "ben", "anna"]
    assert lookups == ["Billing"]


def test_round_robin_and_exclusions() -> None:
    def agents(queue: str) -> list[Agent]:
        return [Agent("1", "anna"), Agent("2", "ben"), Agent("3", "cem")]

    picker = OwnerPicker(OwnerSettings(strategy="round_robin", exclude=["ben"]), agents)
    assert [picker("Q").login for _ in range(3)] == ["anna", "cem", "anna"]  # type: ignore[union-attr]


def test_no_agents_no_owner() -> None:
    picker = OwnerPicker(OwnerSettings(strategy="least_loaded"), lambda queue: [])
    assert picker("Q") is None
