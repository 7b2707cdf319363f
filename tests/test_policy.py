"""The policy: thresholds at their boundaries, mappings, human choices, escalations, shadow."""

from __future__ import annotations

import pytest

from connector.config import (
    EscalationRule,
    HelpdeskKind,
    MarkerSettings,
    OwnerSettings,
    PolicySettings,
    load_settings,
)
from connector.domain import Action, Agent, HeadPrediction, Prediction, Ticket
from connector.errors import ConfigError
from connector.footer import find_footers
from connector.policy import Policy, slug

MARKERS = MarkerSettings()
LABELS = {
    "queue": ["Billing and Payments", "Technical Support", "General Inquiry"],
    "priority": ["low", "medium", "high"],
    "sentiment": ["negative", "neutral", "positive"],
    "type": ["Incident", "Request"],
}
QUEUES = ["Users", "Billing and Payments", "Technical Support", "General Inquiry"]
PRIORITIES = ["1 low", "2 normal", "3 high"]


def prediction(**heads: tuple[str, float]) -> Prediction:
    built = {}
    for head, (label, confidence) in heads.items():
        others = [x for x in LABELS[head] if x != label]
        rest = (1 - confidence) / len(others)
        probabilities = {label: confidence, **{x: rest for x in others}}
        built[head] = HeadPrediction(label, confidence, probabilities)
    return Prediction(built, "test-model-1")


def ticket(**fields: object) -> Ticket:
    base: dict[str, object] = {
        "id": 7,
        "subject": "s",
        "body": "b",
        "queue": "Users",
        "priority": "2 normal",
    }
    base.update(fields)
    return Ticket(**base)  # type: ignore[arg-type]


def policy(**settings: object) -> Policy:
    return Policy(PolicySettings(**settings), MARKERS, HelpdeskKind.ZAMMAD)


@pytest.mark.parametrize(
    ("confidence", "action"),
    [
        (0.80, Action.APPLY),  # exactly the apply threshold applies
        (0.7999, Action.SUGGEST),
        (0.45, Action.SUGGEST),  # exactly the suggest threshold suggests
        (0.4499, Action.REVIEW),
    ],
)
def test_queue_thresholds_at_the_boundaries(confidence: float, action: Action) -> None:
    plan = policy().decide(
        ticket(), prediction(queue=("Billing and Payments", confidence)), "a" * 12
    )
    (decision,) = plan.decisions
    assert decision.action is action
    if action is Action.APPLY:
        assert plan.change.queue == "Billing and Payments"
        assert "ai:queue:billing-and-payments" in plan.change.add_tags
        assert plan.outcome == "applied"
    elif action is Action.SUGGEST:
        assert plan.change.queue is None
        assert "ai:suggest:queue:billing-and-payments" in plan.change.add_tags
        assert plan.outcome == "suggested"
    else:
        assert plan.change.queue is None
        assert "needs-review" in plan.change.add_tags
        assert plan.outcome == "review"


def test_per_class_thresholds_override_the_head() -> None:
    settings = load_settings(
        policy={
            "heads": {
                "queue": {
                    "apply": 0.8,
                    "suggest": 0.4,
                    "classes": {"General Inquiry": {"apply": 0.95}},
                }
            }
        }
    ).policy
    p = Policy(settings, MARKERS, HelpdeskKind.ZAMMAD)
    plan = p.decide(ticket(), prediction(queue=("General Inquiry", 0.9)), "a" * 12)
    assert plan.decisions[0].action is Action.SUGGEST
    plan = p.decide(ticket(), prediction(queue=("Technical Support", 0.9)), "a" * 12)
    assert plan.decisions[0].action is Action.APPLY


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match=r"policy\.heads\.queue.*suggest"):
        load_settings(policy={"heads": {"queue": {"apply": 0.5, "suggest": 0.6}}})


def test_queue_map_and_priority_defaults_per_helpdesk() -> None:
    p = policy(queue_map={"Billing and Payments": "Finance"})
    plan = p.decide(
        ticket(),
        prediction(queue=("Billing and Payments", 0.9), priority=("high", 0.9)),
        "a" * 12,
    )
    assert plan.change.queue == "Finance"
    assert plan.change.priority == "3 high"
    rt = Policy(PolicySettings(), MARKERS, HelpdeskKind.RT)
    assert rt.priority_map["high"] == "High"


def test_label_mapped_to_empty_is_never_routed() -> None:
    p = policy(queue_map={"Billing and Payments": ""})
    plan = p.decide(ticket(), prediction(queue=("Billing and Payments", 0.99)), "a" * 12)
    assert plan.change.queue is None
    assert "ai:queue:billing-and-payments" in plan.change.add_tags


def test_unchanged_fields_are_not_written() -> None:
    plan = policy().decide(
        ticket(queue="Technical Support", priority="3 high"),
        prediction(queue=("Technical Support", 0.95), priority=("high", 0.95)),
        "a" * 12,
    )
    assert plan.change.queue is None
    assert plan.change.priority is None


def test_human_choices_are_kept() -> None:
    p = policy(intake_queues=["Users"], default_priority="2 normal")
    moved = ticket(queue="Technical Support", priority="1 low")
    plan = p.decide(
        moved, prediction(queue=("Billing and Payments", 0.99), priority=("high", 0.99)), "a" * 12
    )
    assert [d.action for d in plan.decisions] == [Action.KEEP, Action.KEEP]
    assert plan.change.queue is None and plan.change.priority is None
    fresh = ticket(queue="Users", priority="2 normal")
    plan = p.decide(
        fresh, prediction(queue=("Billing and Payments", 0.99), priority=("high", 0.99)), "a" * 12
    )
    assert plan.change.queue == "Billing and Payments"
    assert plan.change.priority == "3 high"


def test_a_value_an_earlier_run_applied_is_not_a_human_choice() -> None:
    """Re-triage may re-route what triage routed, on every helpdesk: its tag says so."""
    p = policy(intake_queues=["Users"], default_priority="2 normal")
    routed_by_triage = ticket(
        queue="Technical Support",
        priority="3 high",
        tags=frozenset({"ai:queue:technical-support", "AI:Priority:High"}),
    )
    plan = p.decide(
        routed_by_triage,
        prediction(queue=("Billing and Payments", 0.99), priority=("low", 0.99)),
        "a" * 12,
    )
    assert [d.action for d in plan.decisions] == [Action.APPLY, Action.APPLY]
    assert (plan.change.queue, plan.change.priority) == ("Billing and Payments", "1 low")
    # Moved by a person after triage: the tag names another queue, so the person's choice stays.
    moved_since = ticket(
        queue="General Inquiry", priority="1 low", tags=frozenset({"ai:queue:technical-support"})
    )
    plan = p.decide(
        moved_since,
        prediction(queue=("Billing and Payments", 0.99), priority=("high", 0.99)),
        "a" * 12,
    )
    assert [d.action for d in plan.decisions] == [Action.KEEP, Action.KEEP]
    # A suggestion is not an application: the person took it.
    suggested = ticket(
        queue="Technical Support", tags=frozenset({"ai:suggest:queue:technical-support"})
    )
    plan = p.decide(suggested, prediction(queue=("Billing and Payments", 0.99)), "a" * 12)
    assert plan.decisions[0].action is Action.KEEP


def test_escalation_combines_heads() -> None:
    rule = EscalationRule(
        name="angry-high",
        when={"sentiment": "negative", "priority": "high"},
        min_confidence=0.6,
        set_priority="3 high",
        add_tags=["escalated"],
    )
    p = policy(
        escalations=[rule], heads={"priority": {"apply": 0.95, "suggest": 0.5}, "sentiment": {}}
    )
    plan = p.decide(
        ticket(), prediction(priority=("high", 0.7), sentiment=("negative", 0.8)), "a" * 12
    )
    assert plan.escalations == ("angry-high",)
    assert plan.change.priority == "3 high"
    assert "escalated" in plan.change.add_tags
    calm = p.decide(
        ticket(), prediction(priority=("high", 0.7), sentiment=("neutral", 0.8)), "a" * 12
    )
    assert calm.escalations == ()
    assert calm.change.priority is None


def test_sentiment_below_threshold_does_not_ask_for_review() -> None:
    plan = policy().decide(ticket(), prediction(sentiment=("negative", 0.3)), "a" * 12)
    assert plan.decisions[0].action is Action.REVIEW
    assert "needs-review" not in plan.change.add_tags


def test_stale_triage_tags_are_removed_on_retriage() -> None:
    old = ticket(
        tags=frozenset({"ai:queue:technical-support", "needs-review", "vip", "ai-triaged"})
    )
    plan = policy().decide(old, prediction(queue=("Billing and Payments", 0.95)), "a" * 12)
    assert plan.change.remove_tags == {"ai:queue:technical-support", "needs-review"}
    assert "vip" not in plan.change.remove_tags


def test_shadow_mode_changes_nothing() -> None:
    p = policy(mode="shadow")
    plan = p.decide(ticket(), prediction(queue=("Billing and Payments", 0.99)), "a" * 12)
    assert plan.outcome == "shadow"
    assert plan.change.is_empty
    noted = policy(mode="shadow", shadow_note=True).decide(
        ticket(), prediction(queue=("Billing and Payments", 0.99)), "a" * 12
    )
    assert noted.change.queue is None and not noted.change.add_tags
    assert noted.change.note is not None and "shadow" in noted.change.note


def test_note_explains_and_carries_the_footer() -> None:
    plan = policy().decide(
        ticket(),
        prediction(queue=("Billing and Payments", 0.91), priority=("low", 0.3)),
        "0123456789ab",
    )
    note = plan.change.note or ""
    assert "queue: Billing and Payments (91%) - applied" in note
    assert "thresholds apply 80%, suggest 45%" in note
    assert "priority: low (30%) - unsure" in note
    assert "test-model-1" in note
    assert find_footers([note]) == {"helpdesk-triage note 0123456789ab"}


def test_owner_is_picked_for_the_target_queue_only_when_unowned() -> None:
    asked: list[str] = []

    def picker(queue: str) -> Agent:
        asked.append(queue)
        return Agent(id="12", login="anna")

    p = Policy(
        PolicySettings(owner=OwnerSettings(strategy="least_loaded")),
        MARKERS,
        HelpdeskKind.ZAMMAD,
        owner_picker=picker,
    )
    plan = p.decide(ticket(), prediction(queue=("Billing and Payments", 0.95)), "a" * 12)
    assert plan.change.owner == "12"
    assert asked == ["Billing and Payments"]
    owned = p.decide(
        ticket(owner="bob"), prediction(queue=("Billing and Payments", 0.95)), "a" * 12
    )
    assert owned.change.owner is None


def test_validate_names_every_mapping_problem() -> None:
    rule = EscalationRule(name="r", when={"sentiment": "furious"}, set_priority="9 urgent")
    p = policy(
        queue_map={"Billing and Payments": "Finance", "Nonexistent": "Users"},
        escalations=[rule],
        intake_queues=["Inbox"],
    )
    with pytest.raises(ConfigError) as caught:
        p.validate(LABELS, QUEUES, PRIORITIES)
    message = str(caught.value)
    assert "'Billing and Payments' maps to queue 'Finance'" in message
    assert "no queue label 'Nonexistent'" in message
    assert "no label 'furious'" in message
    assert "unknown priority '9 urgent'" in message
    assert "intake_queues: unknown queue 'Inbox'" in message


def test_validate_accepts_a_fitting_mapping() -> None:
    policy().validate(LABELS, QUEUES, PRIORITIES)


def test_slug() -> None:
    assert slug("Billing and Payments") == "billing-and-payments"
    assert slug("Réclamations / Retours") == "réclamations-retours"
    assert slug("  ") == "unknown"
