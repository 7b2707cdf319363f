"""The classifier as the policy sees it: trained heads plus the admin's queue descriptions.

The service and ``helpdesk-triage classify`` both predict through
``Predictor``, so a ticket gets the same queue from either. Which source the
queue head uses follows ``policy.queue_source``:

- ``model``: the model's trained queue head (with ``policy.queue_map``);
- ``descriptions``: similarity to ``policy.queues``;
- ``combined``: both, as a product of experts; needs a trained head whose
  labels, after ``queue_map``, are exactly the described queues;
- ``auto`` (default): ``descriptions`` when queues are described, else
  ``model``. Not ``combined``: a model's queue head may carry the same names
  while trained on another organisation's tickets (the bundled one is), and
  with an organisation's own history the trained head alone is as good as the
  combination (scripts/evaluate_descriptions.py, docs/queues.md).

A ticket with no text (subject and body empty after cleaning) gets a uniform
distribution on every head: it is never applied or suggested, and goes to
review.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from connector.classifier import Classifier, TextInput, head_prediction
from connector.config import PolicySettings
from connector.descriptions import DEFAULT_SCALE, DescribedQueues, QueueTexts, combine
from connector.domain import Prediction
from connector.errors import ConfigError

QUEUE_HEAD = "queue"


class Predictor:
    def __init__(self, classifier: Classifier, policy: PolicySettings) -> None:
        self.classifier = classifier
        self.source = _resolve_source(classifier, policy)
        self.queues: DescribedQueues | None = None
        self._merge: np.ndarray | None = None  # model queue label -> described queue (or -1)
        if self.source in ("descriptions", "combined"):
            texts = {
                name: QueueTexts(entry.description, tuple(entry.examples))
                for name, entry in policy.queues.items()
            }
            scale = classifier.spec.description_scale or DEFAULT_SCALE
            self.queues = DescribedQueues.build(texts, classifier.embed, scale)
        if self.source == "combined" and self.queues is not None:
            position = {name: i for i, name in enumerate(self.queues.names)}
            self._merge = np.asarray(
                [
                    position.get(policy.queue_map.get(label, label), -1)
                    for label in classifier.labels[QUEUE_HEAD]
                ]
            )

    @property
    def version(self) -> str:
        return self.classifier.version

    @property
    def heads(self) -> tuple[str, ...]:
        return self.classifier.heads

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        labels = dict(self.classifier.labels)
        if self.queues is not None:
            labels[QUEUE_HEAD] = self.queues.names
        return labels

    def predict(self, items: Sequence[TextInput]) -> list[Prediction]:
        predictions = self._predict(items)
        # A ticket with no text left after cleaning has nothing to decide on: whatever the
        # heads say about an empty string is their prior, not a judgment about the ticket.
        return [
            self._knowing_nothing(p) if not self.classifier.prepare(item) else p
            for item, p in zip(items, predictions, strict=True)
        ]

    def _knowing_nothing(self, prediction: Prediction) -> Prediction:
        labels = self.labels
        return Prediction(
            heads={
                head: head_prediction(
                    labels[head], np.full(len(labels[head]), 1 / len(labels[head]))
                )
                for head in prediction.heads
            },
            model_version=prediction.model_version,
        )

    def _predict(self, items: Sequence[TextInput]) -> list[Prediction]:
        if self.queues is None:
            return self.classifier.predict(items)
        predictions, embeddings = self.classifier.predict_and_embed(items)
        probabilities = self.queues.probabilities(embeddings)
        if self._merge is not None:
            probabilities = combine(probabilities, self._model_queue(predictions))
        names = self.queues.names
        return [
            Prediction(
                heads={**p.heads, QUEUE_HEAD: head_prediction(names, row)},
                model_version=p.model_version,
            )
            for p, row in zip(predictions, probabilities, strict=True)
        ]

    def _model_queue(self, predictions: Sequence[Prediction]) -> np.ndarray:
        """The trained head's probabilities summed onto the described queues."""
        assert self.queues is not None and self._merge is not None
        labels = self.classifier.labels[QUEUE_HEAD]
        merged = np.zeros((len(predictions), len(self.queues.names)))
        for column, target in enumerate(self._merge):
            if target >= 0:
                merged[:, target] += [
                    p[QUEUE_HEAD].probabilities[labels[column]] for p in predictions
                ]
        total = merged.sum(axis=1, keepdims=True)
        result: np.ndarray = np.divide(
            merged, total, out=np.full_like(merged, 1.0 / merged.shape[1]), where=total > 0
        )
        return result


def _resolve_source(classifier: Classifier, policy: PolicySettings) -> str:
    wanted = policy.queue_source
    if wanted == "model" or (wanted == "auto" and not policy.queues):
        return "model"
    if not policy.queues:
        raise ConfigError(f"policy.queue_source is {wanted!r} but policy.queues describes none")
    if not classifier.has_embedding:
        raise ConfigError(
            "policy.queues: the model has no embedding output, so it cannot route by "
            "descriptions (use a model built by scripts/train_pretrained.py)"
        )
    if wanted == "combined" and not _aligned(classifier, policy):
        raise ConfigError(
            "policy.queue_source is 'combined' but the model's queue labels (after "
            "policy.queue_map) are not the described queues"
        )
    return "combined" if wanted == "combined" else "descriptions"


def _aligned(classifier: Classifier, policy: PolicySettings) -> bool:
    labels = classifier.labels.get(QUEUE_HEAD)
    if not labels:
        return False
    targets = {policy.queue_map.get(label, label) for label in labels} - {""}
    return targets == set(policy.queues)
