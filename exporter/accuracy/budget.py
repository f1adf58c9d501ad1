"""The accuracy budget: what the mixed-precision search must reach, and how long it may try.

A budget sets goal thresholds (top-1 agreement, cosine, SQNR, accuracy drop); each one left unset
is taken from the target's `Tolerances`, so `--accuracy-budget auto` means "meet the target".
It also bounds the search (trials and minutes); `exporter.accuracy.search` does the rest.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Sequence

from exporter.errors import PlanError
from exporter.settings import CommandLineText, SettingTypeError, coerce
from exporter.figures import rule_passes
from targets.profile import Tolerances


EXAMPLE = "e.g. --accuracy-budget agreement=0.99 or --accuracy-budget accuracy_drop=0.5pt,trials=8,minutes=2"

# Short names accepted in `--accuracy-budget` text, and the field each one sets.
ALIASES: dict[str, str] = {
    "agreement": "min_top1_agreement",
    "top1": "min_top1_agreement",
    "cosine": "min_cosine",
    "sqnr": "min_sqnr_db",
    "accuracy_drop": "max_accuracy_drop",
    "drop": "max_accuracy_drop",
    "trials": "max_trials",
    "minutes": "max_minutes",
}

# A plain accuracy drop above this is almost surely meant in percentage points ("0.5" for 0.5 pt).
_PLAIN_DROP_LIMIT = 0.2


@dataclass(frozen=True)
class AccuracyBudget:
    """Goal and limits of the float fallback search; `None` goals fall back to the target's tolerances.

    `max_accuracy_drop` is a fraction of accuracy (0.005 = half a percentage point, written `0.5pt`).
    """

    min_top1_agreement: float | None = None
    min_cosine: float | None = None
    min_sqnr_db: float | None = None
    max_accuracy_drop: float | None = None
    max_trials: int = 12
    max_minutes: float = 5.0

    def validate(self) -> None:
        """Raise `PlanError` (one line) for a goal or limit out of range."""
        for name in ("min_top1_agreement", "min_cosine"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise PlanError(f"accuracy budget {name} must be in (0, 1], got {value} ({EXAMPLE})")
        drop = self.max_accuracy_drop
        if drop is not None and not 0.0 <= drop < 1.0:
            raise PlanError(f"accuracy budget max_accuracy_drop must be a fraction in [0, 1), got {drop} ({EXAMPLE})")
        if self.max_trials < 1:
            raise PlanError(f"accuracy budget max_trials must be at least 1, got {self.max_trials}")
        if not self.max_minutes > 0:
            raise PlanError(f"accuracy budget max_minutes must be positive, got {self.max_minutes}")

    def tolerances(self, target: Tolerances) -> Tolerances:
        """The target's tolerances with every goal this budget sets replacing the target's threshold.

        A cosine goal applies to every output judged by cosine, embeddings included.
        """
        goals = {
            name: getattr(self, name)
            for name in ("min_top1_agreement", "min_cosine", "min_sqnr_db", "max_accuracy_drop")
            if getattr(self, name) is not None
        }
        if self.min_cosine is not None:
            goals["min_embedding_cosine"] = self.min_cosine
        return dataclasses.replace(target, **goals)

    def goal_met_by(self, checks: Sequence[Any]) -> bool:
        """Do gate checks made with the target's tolerances also meet this budget's own goals?

        Each check is re-judged against the budget's threshold for its figure; a goal the checks do
        not cover (the target does not gate that figure) cannot be judged here, so the answer is
        False and the search measures it (returning at once when the plain model meets it).
        """
        goals = {
            "top1_agreement": (self.min_top1_agreement, ">="),
            "cosine": (self.min_cosine, ">="),
            "sqnr_db": (self.min_sqnr_db, ">="),
            "accuracy_drop": (self.max_accuracy_drop, "<="),
        }
        measured = {check.figure: check for check in checks}
        for figure, (threshold, rule) in goals.items():
            if threshold is None:
                continue
            check = measured.get(figure)
            if check is None:
                return False
            if not rule_passes(check.measured, threshold, rule):
                return False
        return all(check.passed for figure, check in measured.items() if goals.get(figure, (None,))[0] is None)

    def describe(self) -> str:
        """One line for the report, e.g. `top-1 agreement >= 0.99; at most 12 trials / 5 min; greedy`."""
        goals = []
        if self.min_top1_agreement is not None:
            goals.append(f"top-1 agreement >= {self.min_top1_agreement:g}")
        if self.min_cosine is not None:
            goals.append(f"cosine >= {self.min_cosine:g}")
        if self.min_sqnr_db is not None:
            goals.append(f"SQNR >= {self.min_sqnr_db:g} dB")
        if self.max_accuracy_drop is not None:
            goals.append(f"accuracy drop <= {self.max_accuracy_drop * 100:g} pt")
        goal = ", ".join(goals) if goals else "the target's thresholds"
        return f"{goal}; at most {self.max_trials} trials / {self.max_minutes:g} min"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form stored in the plan (`plan.accuracy_budget`) and the report."""
        return dataclasses.asdict(self)

    @classmethod
    def from_settings(cls, data: dict[str, Any] | None) -> "AccuracyBudget":
        """Build from plan data (field names as in `to_dict`); unknown keys and bad values raise `PlanError`.

        `max_accuracy_drop` may also be text such as `"0.5pt"`; `None` or `{}` is the `auto` budget.
        """
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise PlanError(f"accuracy_budget must be a table of settings, got {type(data).__name__} ({EXAMPLE})")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise PlanError(f"unknown accuracy budget setting {unknown[0]!r}: valid settings are {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(cls)
        values = {key: _coerce(key, value, hints[key]) for key, value in data.items()}
        budget = cls(**values)
        budget.validate()
        return budget

    @classmethod
    def parse(cls, text: str) -> "AccuracyBudget":
        """Parse the `--accuracy-budget` value: `auto`, or comma-separated `key=value` items.

        Keys: agreement, cosine, sqnr, accuracy_drop (`0.5pt` or a fraction), trials, minutes; full
        field names work too.
        """
        text = (text or "").strip()
        if text.lower() in ("auto", "target", ""):
            return cls()
        values: dict[str, Any] = {}
        for item in text.split(","):
            key, sep, value = item.partition("=")
            key, value = key.strip().lower().replace("-", "_"), value.strip()
            if not sep or not key or not value:
                raise PlanError(f"bad --accuracy-budget item {item.strip()!r}: expected KEY=VALUE ({EXAMPLE})")
            field_name = ALIASES.get(key, key)
            if field_name not in {f.name for f in dataclasses.fields(cls)}:
                valid = ", ".join(["auto", *ALIASES])
                raise PlanError(f"unknown --accuracy-budget key {key!r}: valid keys are {valid} ({EXAMPLE})")
            if field_name in values:
                raise PlanError(f"--accuracy-budget sets {key!r} twice ({EXAMPLE})")
            values[field_name] = CommandLineText(value)
        return cls.from_settings(values)


def parse_accuracy_drop(value: Any) -> float:
    """An accuracy drop as a fraction: `0.5pt` / `0.5%` -> 0.005; a plain number is a fraction (<= 0.2)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip().lower()
        for suffix in ("pt", "%"):
            if text.endswith(suffix):
                return float(text[: -len(suffix)]) / 100.0
        number = float(text)
    if number > _PLAIN_DROP_LIMIT:
        raise PlanError(
            f"accuracy drop {value!r} is ambiguous: write {number:g}pt for {number:g} percentage points, "
            f"or a fraction such as {number / 100:g} ({EXAMPLE})"
        )
    return number


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    where = f"accuracy budget {key}"
    if value is None:
        if key.startswith(("min_", "max_accuracy")):
            return None
        raise PlanError(f"{where} cannot be empty ({EXAMPLE})")
    try:
        if key == "max_accuracy_drop":
            return parse_accuracy_drop(value)
        if typing.get_origin(annotation) is typing.Literal:
            return coerce(value, annotation, where)
        # the optional float goals and max_minutes are numbers; a boolean only from --accuracy-budget text
        return coerce(value, annotation if annotation in (bool, int) else float, where)
    except SettingTypeError as exc:
        if exc.choices:
            raise
        raise PlanError(f"{exc} ({EXAMPLE})") from None
    except (TypeError, ValueError):
        raise PlanError(f"bad value {value!r} for {where}: expected a number ({EXAMPLE})") from None
