"""Draft replies for the agent, never sent to the customer.

Two sources, best first: the answer of the most similar already-answered
ticket from the admin's knowledge file (cosine similarity of the model's
embeddings, above ``min_similarity``), then the admin's template for the
predicted queue. A draft is only written when the queue prediction was at
least confident enough to suggest; otherwise a wrong template is worse than
none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from connector.config import DraftSettings
from connector.domain import Action, Prediction, Ticket
from connector.errors import ConfigError
from connector.footer import DRAFT, footer
from connector.policy import QUEUE_HEAD, Plan

log = logging.getLogger("connector.drafts")

# (subject, body) pairs -> one L2-normalised row per pair
Embedder = Callable[[Sequence[tuple[str, str]]], np.ndarray]


@dataclass(frozen=True, slots=True)
class AnsweredTicket:
    subject: str
    body: str
    answer: str


def load_knowledge(path: Path) -> list[AnsweredTicket]:
    """Read a JSONL file of answered tickets; a bad line fails start-up naming it."""
    entries = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answer = str(row["answer"]).strip()
            except (ValueError, KeyError, TypeError):
                raise ConfigError(
                    f"drafts.knowledge_file: {path}:{number}: "
                    "expected a JSON object with subject, body and answer"
                ) from None
            if answer:
                entries.append(
                    AnsweredTicket(str(row.get("subject", "")), str(row.get("body", "")), answer)
                )
    return entries


class _SafeFormat(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class DraftWriter:
    def __init__(self, settings: DraftSettings, embed: Embedder | None = None) -> None:
        self.settings = settings
        self._embed = embed
        self._answers: list[AnsweredTicket] = []
        self._matrix: np.ndarray | None = None
        if settings.knowledge_file is not None:
            if embed is None:
                raise ConfigError("drafts.knowledge_file needs a model with an embedding output")
            self._answers = load_knowledge(settings.knowledge_file)
            if self._answers:
                self._matrix = embed([(a.subject, a.body) for a in self._answers])
            log.info("knowledge file loaded", extra={"answers": len(self._answers)})

    def __call__(self, ticket: Ticket, prediction: Prediction, plan: Plan) -> str | None:
        if not self.settings.enabled:
            return None
        queue = next((d for d in plan.decisions if d.head == QUEUE_HEAD), None)
        if queue is None or queue.action is Action.REVIEW:
            return None
        text = self._retrieved(ticket) or self._template(queue.label, ticket)
        if not text:
            return None
        return (
            "Draft reply (not sent to the customer; review and edit before use)\n\n"
            f"{text.strip()}\n\n{footer(DRAFT, plan.change.run_id)}"
        )

    def _retrieved(self, ticket: Ticket) -> str | None:
        if self._matrix is None or self._embed is None:
            return None
        query = self._embed([(ticket.subject, ticket.body)])[0]
        scores = self._matrix @ query
        best = int(np.argmax(scores))
        if float(scores[best]) < self.settings.min_similarity:
            return None
        return self._answers[best].answer

    def _template(self, label: str, ticket: Ticket) -> str | None:
        template = self.settings.templates.get(label)
        if not template:
            return None
        values = _SafeFormat(number=ticket.number or str(ticket.id), title=ticket.subject)
        return template.format_map(values)
