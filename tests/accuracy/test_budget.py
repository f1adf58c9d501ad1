"""The accuracy budget: CLI text, plan data, effective tolerances, and the exact messages for bad input."""

import pytest

from exporter.accuracy.budget import AccuracyBudget
from exporter.errors import PlanError
from exporter.validate import GateCheck
from targets.profile import Tolerances

EXAMPLE = "(e.g. --accuracy-budget agreement=0.99 or --accuracy-budget accuracy_drop=0.5pt,trials=8,minutes=2)"


def test_auto_is_the_target_goal_with_default_limits() -> None:
    budget = AccuracyBudget.parse("auto")
    assert budget == AccuracyBudget()
    assert (budget.max_trials, budget.max_minutes) == (12, 5.0)
    target = Tolerances(min_top1_agreement=0.95, min_cosine=0.98)
    assert budget.tolerances(target) == target


def test_text_items_set_goals_and_limits() -> None:
    budget = AccuracyBudget.parse("accuracy_drop=0.5pt, trials=8,minutes=2")
    assert budget.max_accuracy_drop == pytest.approx(0.005)
    assert (budget.max_trials, budget.max_minutes) == (8, 2.0)
    assert AccuracyBudget.parse("agreement=0.99").min_top1_agreement == 0.99
    assert AccuracyBudget.parse("cosine=0.995,sqnr=20").min_sqnr_db == 20.0
    assert AccuracyBudget.parse("drop=0.01").max_accuracy_drop == 0.01


def test_budget_goals_override_only_what_they_set() -> None:
    target = Tolerances(min_top1_agreement=0.95, min_cosine=0.98, max_accuracy_drop=0.03)
    effective = AccuracyBudget.parse("agreement=0.99").tolerances(target)
    assert (effective.min_top1_agreement, effective.min_cosine, effective.max_accuracy_drop) == (0.99, 0.98, 0.03)


def test_plan_data_round_trips() -> None:
    budget = AccuracyBudget.parse("agreement=0.99,trials=3")
    assert AccuracyBudget.from_settings(budget.to_dict()) == budget
    assert AccuracyBudget.from_settings(None) == AccuracyBudget()
    assert AccuracyBudget.from_settings({"max_accuracy_drop": "0.5pt"}).max_accuracy_drop == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agreement", f"bad --accuracy-budget item 'agreement': expected KEY=VALUE {EXAMPLE}"),
        ("speed=2", "unknown --accuracy-budget key 'speed': valid keys are auto, agreement, top1, cosine, sqnr, "
                    f"accuracy_drop, drop, trials, minutes {EXAMPLE}"),
        ("accuracy_drop=0.5", "accuracy drop '0.5' is ambiguous: write 0.5pt for 0.5 percentage points, or a fraction "
                              f"such as 0.005 {EXAMPLE}"),
        ("trials=2.5", f"bad value '2.5' for accuracy budget max_trials: expected a whole number {EXAMPLE}"),
        ("agreement=high", f"bad value 'high' for accuracy budget min_top1_agreement: expected a number {EXAMPLE}"),
        ("agreement=1.5", f"accuracy budget min_top1_agreement must be in (0, 1], got 1.5 {EXAMPLE}"),
        ("trials=0", "accuracy budget max_trials must be at least 1, got 0"),
        ("trials=2,trials=3", f"--accuracy-budget sets 'trials' twice {EXAMPLE}"),
    ],
)
def test_bad_text_raises_one_line(text: str, message: str) -> None:
    with pytest.raises(PlanError) as info:
        AccuracyBudget.parse(text)
    assert str(info.value) == message


def test_unknown_plan_key_lists_the_valid_ones() -> None:
    with pytest.raises(PlanError) as info:
        AccuracyBudget.from_settings({"min_agreement": 0.9})
    assert str(info.value) == (
        "unknown accuracy budget setting 'min_agreement': valid settings are max_accuracy_drop, max_minutes, "
        "max_trials, min_cosine, min_sqnr_db, min_top1_agreement"
    )


def test_goal_met_by_rejudges_the_target_checks() -> None:
    checks = [GateCheck("top1_agreement", 0.97, 0.95, ">=", True), GateCheck("cosine", 0.99, 0.98, ">=", True)]
    assert AccuracyBudget().goal_met_by(checks)
    assert not AccuracyBudget(min_top1_agreement=0.99).goal_met_by(checks)
    assert AccuracyBudget(min_top1_agreement=0.96).goal_met_by(checks)
    assert not AccuracyBudget(max_accuracy_drop=0.01).goal_met_by(checks)  # not measured by the target's checks
    assert not AccuracyBudget().goal_met_by([*checks, GateCheck("sqnr_db", 10.0, 15.0, ">=", False)])
