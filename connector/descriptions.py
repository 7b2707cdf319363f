"""Queues the admin describes: routing by similarity before any training.

Each queue of ``policy.queues`` has a description and optionally a few
example tickets. At start-up they are embedded once with the model's own
``embedding`` output and averaged into one vector per queue (a queue's
centroid: on the unambiguous evaluation set it routes better than the
description alone or the closest single text); a ticket's score for a queue
is its cosine similarity to that vector, and the scores become probabilities through
a softmax whose scale the model directory declares (``embedding.
description_scale`` in labels.json, fitted on a held-out organisation by
``scripts/evaluate_descriptions.py``), so the apply and suggest thresholds
mean the same here as for a trained head.

When asked to (``policy.queue_source: combined``) and the model has a trained
queue head whose labels are the described queues (an organisation's own
history), the two distributions are combined as a product of experts
(``combine``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from connector.classifier import TextInput, head_prediction, softmax
from connector.domain import HeadPrediction

Embed = Callable[[Sequence[TextInput]], np.ndarray]

# A model without a fitted scale: the value fitted for the bundled encoder.
DEFAULT_SCALE = 20.0


@dataclass(frozen=True)
class QueueTexts:
    description: str
    examples: tuple[str, ...] = ()


class DescribedQueues:
    """Described queues, embedded; ``probabilities`` maps ticket embeddings to queue scores."""

    def __init__(
        self, names: Sequence[str], prototypes: np.ndarray, owners: np.ndarray, scale: float
    ) -> None:
        if not names:
            raise ValueError("no queues described")
        if scale <= 0:
            raise ValueError("the description scale must be positive")
        self.names = tuple(names)
        self.prototypes = np.asarray(prototypes, dtype=np.float32)
        self.owners = np.asarray(owners, dtype=np.int64)
        self.scale = float(scale)

    @classmethod
    def build(
        cls, queues: Mapping[str, QueueTexts], embed: Embed, scale: float = DEFAULT_SCALE
    ) -> DescribedQueues:
        names = list(queues)
        texts: list[TextInput] = []
        owners: list[int] = []
        for index, name in enumerate(names):
            for text in (queues[name].description, *queues[name].examples):
                texts.append(TextInput("", text))
                owners.append(index)
        return cls.from_vectors(names, embed(texts), np.asarray(owners), scale)

    @classmethod
    def from_vectors(
        cls, names: Sequence[str], vectors: np.ndarray, owners: np.ndarray, scale: float
    ) -> DescribedQueues:
        """One normalised centroid per queue from the embeddings of its texts."""
        centroids = np.stack([vectors[owners == i].mean(axis=0) for i in range(len(names))])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        return cls(names, centroids, np.arange(len(names)), scale)

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """Tickets x queues: cosine similarity to each queue's closest prototype."""
        sims = np.asarray(embeddings, dtype=np.float32) @ self.prototypes.T
        best = np.full((sims.shape[0], len(self.names)), -1.0, dtype=np.float32)
        for column, owner in enumerate(self.owners):
            np.maximum(best[:, owner], sims[:, column], out=best[:, owner])
        return best

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return softmax(self.similarities(embeddings) * self.scale, axis=1)

    def predictions(self, embeddings: np.ndarray) -> list[HeadPrediction]:
        return [head_prediction(self.names, row) for row in self.probabilities(embeddings)]


def combine(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Product of two calibrated distributions over the same labels, renormalised."""
    logits = np.log(np.clip(first, 1e-12, 1.0)) + np.log(np.clip(second, 1e-12, 1.0))
    return softmax(logits, axis=-1)
