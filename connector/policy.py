"""The policy: turns a ticket's predictions into decisions and one change set.

Pure apart from the owner callback: no HTTP, no model. For each head the
confidence is compared with the admin's thresholds:

- at or above ``apply``: the change is made (queue, priority) and tagged;
- at or above ``suggest``: a ``suggest`` tag and a line in the note, no change;
- below both: the head is noted as unsure, and heads with
  ``review_when_unsure`` put the ticket up for review (``needs-review``).

Escalation rules combine heads (negative sentiment on a high-priority ticket),
human choices are kept where the settings say so, and shadow mode records the
same decisions without changing the ticket.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from connector.config import HeadPolicy, HelpdeskKind, MarkerSettings, PolicySettings
from connector.domain import Action, Agent, ChangeSet, Decision, Prediction, Ticket
from connector.errors import ConfigError
from connector.footer import NOTE, footer

QUEUE_HEAD = "queue"
PRIORITY_HEAD = "priority"

DEFAULT_PRIORITY_MAPS: dict[HelpdeskKind, dict[str, str]] = {
    HelpdeskKind.ZAMMAD: {"low": "1 low", "medium": "2 normal", "high": "3 high"},
    HelpdeskKind.ZNUNY: {"low": "2 low", "medium": "3 normal", "high": "4 high"},
    HelpdeskKind.RT: {"low": "Low", "medium": "Medium", "high": "High"},
}

OUTCOME_APPLIED = "applied"
OUTCOME_SUGGESTED = "suggested"
OUTCOME_REVIEW = "review"
OUTCOME_SHADOW = "shadow"

OwnerPicker = Callable[[str], Agent | None]


def slug(label: str) -> str:
    """A tag-safe form of a label: lower case, words joined by dashes."""
    text = re.sub(r"[^\w]+", "-", label.strip().lower(), flags=re.UNICODE).strip("-")
    return text or "unknown"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the policy decided for one ticket."""

    decisions: tuple[Decision, ...]
    change: ChangeSet
    outcome: str
    escalations: tuple[str, ...] = ()
    review: bool = False


class Policy:
    """Decides per head, then builds the ticket's change set."""

    def __init__(
        self,
        settings: PolicySettings,
        markers: MarkerSettings,
        helpdesk: HelpdeskKind,
        *,
        owner_picker: OwnerPicker | None = None,
    ) -> None:
        self.settings = settings
        self.markers = markers
        self.helpdesk = helpdesk
        self.priority_map = settings.priority_map or DEFAULT_PRIORITY_MAPS[helpdesk]
        # Described queues are the helpdesk's own names: queue_map is for trained labels.
        self._described = settings.routes_by_descriptions
        self._owner_picker = owner_picker

    # -- start-up checks -------------------------------------------------------------

    def validate(
        self,
        model_labels: Mapping[str, Iterable[str]],
        queues: Iterable[str],
        priorities: Iterable[str],
    ) -> None:
        """Check every mapping against the model and the helpdesk; raise ConfigError listing all.

        A label routed to a queue that does not exist would fail on every
        ticket; it is a start-up error instead of a runtime surprise.
        """
        labels = {head: set(values) for head, values in model_labels.items()}
        queue_names, priority_names = set(queues), set(priorities)
        problems: list[str] = []
        for head in self.settings.heads:
            if head not in labels:
                problems.append(f"policy.heads.{head}: the model has no head {head!r}")
        for head, config in self.settings.heads.items():
            for label in config.classes:
                if head in labels and label not in labels[head]:
                    problems.append(f"policy.heads.{head}.classes: unknown label {label!r}")
        for queue in self.settings.queues if self._described else ():
            if queue not in queue_names:
                problems.append(
                    f"policy.queues: queue {queue!r} is described but the helpdesk does not have it"
                )
        for label in self.settings.queue_map if not self._described else ():
            if label not in labels.get(QUEUE_HEAD, set()):
                problems.append(f"policy.queue_map: the model has no queue label {label!r}")
        for label in labels.get(QUEUE_HEAD, set()) if not self._described else ():
            target = self.queue_target(label)
            if target and target not in queue_names:
                problems.append(
                    f"policy.queue_map: label {label!r} maps to queue {target!r}, "
                    "which the helpdesk does not have"
                )
        for label in labels.get(PRIORITY_HEAD, set()):
            target = self.priority_map.get(label)
            if target is None:
                problems.append(f"policy.priority_map: no priority for label {label!r}")
            elif target not in priority_names:
                problems.append(
                    f"policy.priority_map: label {label!r} maps to priority {target!r}, "
                    "which the helpdesk does not have"
                )
        default = self.settings.default_priority
        if default and default not in priority_names:
            problems.append(f"policy.default_priority: unknown priority {default!r}")
        for queue in self.settings.intake_queues:
            if queue not in queue_names:
                problems.append(f"policy.intake_queues: unknown queue {queue!r}")
        for index, rule in enumerate(self.settings.escalations):
            where = f"policy.escalations[{index}] ({rule.name})"
            for head, label in rule.when.items():
                if head not in labels:
                    problems.append(f"{where}: the model has no head {head!r}")
                elif label not in labels[head]:
                    problems.append(f"{where}: head {head!r} has no label {label!r}")
            if rule.set_priority and rule.set_priority not in priority_names:
                problems.append(f"{where}: unknown priority {rule.set_priority!r}")
            if rule.set_queue and rule.set_queue not in queue_names:
                problems.append(f"{where}: unknown queue {rule.set_queue!r}")
        if problems:
            listing = "\n  ".join(problems)
            raise ConfigError(f"policy does not fit the model or the helpdesk:\n  {listing}")

    def queue_target(self, label: str) -> str | None:
        if self._described:
            return label
        target = self.settings.queue_map.get(label, label)
        return target or None

    # -- deciding ----------------------------------------------------------------------

    def decide(self, ticket: Ticket, prediction: Prediction, run_id: str) -> Plan:
        decisions = tuple(
            self._decide_head(ticket, head, prediction)
            for head in prediction.heads
            if self._head_policy(head).enabled
        )
        by_head = {d.head: d for d in decisions}
        escalations = tuple(
            rule.name
            for rule in self.settings.escalations
            if self._matches(rule.when, rule.min_confidence, prediction)
        )
        review = any(
            d.action is Action.REVIEW and self._head_policy(d.head).review_when_unsure
            for d in decisions
        )
        shadow = self.settings.mode == "shadow"
        queue = self._field_change(by_head.get(QUEUE_HEAD))
        priority = self._field_change(by_head.get(PRIORITY_HEAD))
        add_tags: set[str] = set()
        for rule in self.settings.escalations:
            if rule.name in escalations:
                priority = rule.set_priority or priority
                queue = rule.set_queue or queue
                add_tags.update(rule.add_tags)
        add_tags.update(self._label_tags(decisions))
        if review:
            add_tags.add(self.markers.review_tag)
        owner = None
        if self.settings.owner.strategy != "none" and ticket.owner is None and self._owner_picker:
            target_queue = queue or ticket.queue
            agent = self._owner_picker(target_queue) if target_queue else None
            owner = agent.id if agent else None
        remove_tags = self._stale_tags(ticket.tags, add_tags)
        applied = any(d.action is Action.APPLY for d in decisions)
        suggested = any(d.action in (Action.SUGGEST, Action.KEEP) for d in decisions)
        if shadow:
            outcome = OUTCOME_SHADOW
        elif review:
            outcome = OUTCOME_REVIEW
        elif applied:
            outcome = OUTCOME_APPLIED
        elif suggested:
            outcome = OUTCOME_SUGGESTED
        else:
            outcome = OUTCOME_REVIEW
        note = None
        if (self.settings.note and not shadow) or (shadow and self.settings.shadow_note):
            note = self.describe(
                decisions,
                prediction,
                escalations=escalations,
                queue=queue,
                priority=priority,
                owner=owner,
                review=review,
                shadow=shadow,
                run_id=run_id,
            )
        if shadow:
            change = ChangeSet(ticket_id=ticket.id, note=note, run_id=run_id)
        else:
            change = ChangeSet(
                ticket_id=ticket.id,
                queue=queue if queue != ticket.queue else None,
                priority=priority if priority != ticket.priority else None,
                owner=owner,
                add_tags=frozenset(add_tags - ticket.tags),
                remove_tags=frozenset(remove_tags),
                note=note,
                run_id=run_id,
            )
        return Plan(decisions, change, outcome, escalations, review)

    def _head_policy(self, head: str) -> HeadPolicy:
        return self.settings.heads.get(head) or HeadPolicy(review_when_unsure=False)

    def _decide_head(self, ticket: Ticket, head: str, prediction: Prediction) -> Decision:
        guess = prediction[head]
        apply, suggest = self._head_policy(head).thresholds(guess.label)
        if guess.confidence >= apply:
            action = Action.APPLY
            threshold = apply
        elif guess.confidence >= suggest:
            action = Action.SUGGEST
            threshold = suggest
        else:
            action = Action.REVIEW
            threshold = suggest
        target = None
        if head == QUEUE_HEAD:
            target = self.queue_target(guess.label)
            if action is Action.APPLY and target and self._human_set_queue(ticket):
                action = Action.KEEP
        elif head == PRIORITY_HEAD:
            target = self.priority_map.get(guess.label)
            if action is Action.APPLY and target and self._human_set_priority(ticket):
                action = Action.KEEP
        return Decision(head, guess.label, guess.confidence, action, target, threshold)

    def _human_set_queue(self, ticket: Ticket) -> bool:
        intake = self.settings.intake_queues
        return bool(
            self.settings.respect_human_changes
            and intake
            and ticket.queue not in intake
            and not self._set_by_triage(ticket, QUEUE_HEAD, ticket.queue)
        )

    def _human_set_priority(self, ticket: Ticket) -> bool:
        default = self.settings.default_priority
        return bool(
            self.settings.respect_human_changes
            and default
            and ticket.priority is not None
            and ticket.priority != default
            and not self._set_by_triage(ticket, PRIORITY_HEAD, ticket.priority)
        )

    def _set_by_triage(self, ticket: Ticket, head: str, value: str | None) -> bool:
        """Whether ``value`` is what an earlier run applied, by its label tag on the ticket.

        Read from the ticket itself, so it holds on every helpdesk, whoever made
        the last change (on Znuny a re-triage request is itself a person's edit).
        A person who moved the ticket since has left a value the tag does not name.
        """
        if value is None or not self.settings.label_tags:
            return False
        if head == QUEUE_HEAD:
            mapped = self.settings.queue_map.items() if not self._described else ()
            labels = {value} | {label for label, target in mapped if target == value}
        else:
            labels = {label for label, target in self.priority_map.items() if target == value}
        prefix = self.markers.label_tag_prefix
        applied = {f"{prefix}{head}:{slug(label)}".lower() for label in labels}
        return any(tag.lower() in applied for tag in ticket.tags)

    @staticmethod
    def _field_change(decision: Decision | None) -> str | None:
        if decision is None or decision.action is not Action.APPLY or not decision.target:
            return None
        return decision.target

    @staticmethod
    def _matches(when: Mapping[str, str], min_confidence: float, prediction: Prediction) -> bool:
        for head, label in when.items():
            guess = prediction.heads.get(head)
            if guess is None or guess.label != label or guess.confidence < min_confidence:
                return False
        return True

    def _label_tags(self, decisions: Iterable[Decision]) -> set[str]:
        if not self.settings.label_tags:
            return set()
        prefix = self.markers.label_tag_prefix
        tags = set()
        for d in decisions:
            if d.action is Action.APPLY:
                tags.add(f"{prefix}{d.head}:{slug(d.label)}")
            elif d.action in (Action.SUGGEST, Action.KEEP):
                tags.add(f"{prefix}suggest:{d.head}:{slug(d.label)}")
        return tags

    def _stale_tags(self, current: frozenset[str], wanted: set[str]) -> set[str]:
        """Triage's own tags from an earlier run that this run does not set again."""
        prefix = self.markers.label_tag_prefix
        stale = {t for t in current if t.startswith(prefix) and t not in wanted}
        if self.markers.review_tag in current and self.markers.review_tag not in wanted:
            stale.add(self.markers.review_tag)
        return stale

    # -- explaining ------------------------------------------------------------------

    def describe(
        self,
        decisions: Iterable[Decision],
        prediction: Prediction,
        *,
        escalations: Iterable[str],
        queue: str | None,
        priority: str | None,
        owner: str | None,
        review: bool,
        shadow: bool,
        run_id: str,
    ) -> str:
        """The internal note: what was decided, with labels, confidences and thresholds."""
        lines = []
        if shadow:
            lines.append("AI triage (shadow mode: nothing was changed on this ticket)")
        else:
            lines.append("AI triage")
        for d in decisions:
            head_policy = self._head_policy(d.head)
            apply, suggest = head_policy.thresholds(d.label)
            guess = prediction[d.head]
            runner_up = _runner_up(guess.probabilities, d.label)
            what = {
                Action.APPLY: "applied",
                Action.SUGGEST: "suggested",
                Action.REVIEW: "unsure",
                Action.KEEP: "kept the value a person set",
                Action.NONE: "noted",
            }[d.action]
            line = f"- {d.head}: {d.label} ({d.confidence:.0%}) - {what}"
            if d.target and d.target != d.label:
                line += f" [{d.target}]"
            line += f"; thresholds apply {apply:.0%}, suggest {suggest:.0%}"
            if runner_up:
                line += f"; next: {runner_up[0]} ({runner_up[1]:.0%})"
            lines.append(line)
        changes = []
        if queue:
            changes.append(f"queue -> {queue}")
        if priority:
            changes.append(f"priority -> {priority}")
        if owner:
            changes.append(f"owner -> {owner}")
        if changes and not shadow:
            lines.append("Changed: " + ", ".join(changes))
        elif changes:
            lines.append("Would change: " + ", ".join(changes))
        for name in escalations:
            lines.append(f"Escalation rule matched: {name}")
        if review:
            lines.append("A person should review this ticket: the model was unsure.")
        lines.append(f"Model {prediction.model_version}, mode {self.settings.mode}.")
        lines.append(footer(NOTE, run_id))
        return "\n".join(lines)


def _runner_up(probabilities: Mapping[str, float], top: str) -> tuple[str, float] | None:
    others = [(label, p) for label, p in probabilities.items() if label != top]
    if not others:
        return None
    return max(others, key=lambda item: item[1])
