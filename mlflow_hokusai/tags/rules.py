"""The Hokusai token-tag rules, as pure functions.

The server enforces them on every route that writes registry tags; the client SDK runs the same
functions before it sends anything, so both sides agree on what a valid tag is. Nothing here
imports Flask or MLflow.

Stored values must be exact, so nothing is trimmed or rewritten: a value with surrounding
whitespace is rejected rather than silently cleaned up.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

TOKEN_ID_TAG = "hokusai_token_id"
METRIC_TAG = "benchmark_metric"
VALUE_TAG = "benchmark_value"
TOKEN_TAGS = (TOKEN_ID_TAG, METRIC_TAG, VALUE_TAG)

_TOKEN_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")
# A plain decimal number, optionally with an exponent (str(1e-07) must pass). No spaces,
# underscores, commas, hex, "nan" or "inf": float() alone would accept several of those.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SHOWN_CHARS = 40

Range = tuple[float | None, float | None]  # (low, high), inclusive; None = unbounded

_UNIT = (0.0, 1.0)
_NON_NEGATIVE = (0.0, None)
DEFAULT_METRIC_RANGES: Mapping[str, Range] = MappingProxyType(
    {
        "accuracy": _UNIT,
        "auroc": _UNIT,
        "auc": _UNIT,
        "f1": _UNIT,
        "precision": _UNIT,
        "recall": _UNIT,
        "mse": _NON_NEGATIVE,
        "rmse": _NON_NEGATIVE,
        "mae": _NON_NEGATIVE,
        "r2": (None, 1.0),
        "reply_rate": _UNIT,
        "conversion_rate": _UNIT,
        "engagement_score": _NON_NEGATIVE,
    }
)


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "…"
    return repr(text) if isinstance(value, str) else text


class TagRuleError(ValueError):
    """A token tag breaks a rule. ``str()`` is the message for the user."""

    def __init__(self, tag: str, value: object, rule: str):
        self.tag = tag
        self.value = value
        self.rule = rule
        super().__init__(f"Invalid tag {tag}={_shown(value)}: {rule}")


def _describe(low: float | None, high: float | None) -> str:
    def num(x: float) -> str:
        return f"{x:g}"

    if low is not None and high is not None:
        return f"between {num(low)} and {num(high)}"
    if low is not None:
        return f"at least {num(low)}"
    if high is not None:
        return f"at most {num(high)}"
    return "any finite number"


@dataclass(frozen=True)
class TagRules:
    """Which benchmark metrics are known and the range each one's values must lie in."""

    metrics: tuple[str, ...] = tuple(DEFAULT_METRIC_RANGES)
    # Ranges set on top of the defaults: a listed default metric keeps its default range
    # unless this names it.
    ranges: Mapping[str, Range] | None = None

    def __post_init__(self):
        metrics = tuple(dict.fromkeys(m.lower() for m in self.metrics))
        ranges = {m: DEFAULT_METRIC_RANGES[m] for m in metrics if m in DEFAULT_METRIC_RANGES}
        ranges.update(
            {name.lower(): (low, high) for name, (low, high) in (self.ranges or {}).items()}
        )
        unknown = sorted(set(ranges) - set(metrics))
        if unknown:
            raise ValueError(f"ranges given for metrics that are not listed: {', '.join(unknown)}")
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "ranges", MappingProxyType(ranges))

    def __hash__(self):
        return hash((self.metrics, tuple(sorted(self.ranges.items()))))

    def range_for(self, metric: str) -> Range:
        return self.ranges.get(metric.lower(), (None, None))

    def in_range(self, metric: str, number: float) -> bool:
        low, high = self.range_for(metric)
        return (low is None or number >= low) and (high is None or number <= high)

    @classmethod
    def from_config(cls, section: Mapping[str, str]) -> TagRules:
        """Read ``benchmark_metrics`` and ``metric_range.<name>`` from the ``[hokusai]`` section.

        ``benchmark_metrics = accuracy, f1, my_metric`` replaces the list; listed default metrics
        keep their default ranges. ``metric_range.<name> = low, high`` sets a range (inclusive);
        leave a side empty for no bound (``metric_range.r2 = , 1``). Raises ValueError with a
        message naming the bad key.
        """
        section = {str(k).lower(): v for k, v in section.items()}
        raw_list = section.get("benchmark_metrics")
        if raw_list is None:
            metrics = list(DEFAULT_METRIC_RANGES)
        else:
            metrics = [m.strip().lower() for m in re.split(r"[,\s]+", raw_list) if m.strip()]
            if not metrics:
                raise ValueError("benchmark_metrics must list at least one metric")
            for name in metrics:
                if not _METRIC_NAME.fullmatch(name):
                    raise ValueError(
                        f"benchmark_metrics: {name!r} is not a metric name "
                        "(lower-case letters, digits and '_', starting with a letter)"
                    )
        ranges = {}
        for key, raw in section.items():
            if not key.startswith("metric_range."):
                continue
            name = key[len("metric_range.") :]
            if name not in metrics:
                raise ValueError(f"{key}: {name!r} is not in benchmark_metrics")
            ranges[name] = _parse_range(key, raw)
        return cls(metrics=tuple(metrics), ranges=ranges)


def _parse_range(key: str, raw: str) -> Range:
    parts = [p.strip() for p in str(raw).split(",")]
    if len(parts) != 2:
        raise ValueError(
            f"{key} must be 'low, high' (leave a side empty for no bound), not {raw!r}"
        )
    bounds = []
    for part in parts:
        if not part:
            bounds.append(None)
            continue
        if not _DECIMAL.fullmatch(part) or not math.isfinite(float(part)):
            raise ValueError(f"{key}: {part!r} is not a finite number")
        bounds.append(float(part))
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise ValueError(f"{key}: low {low:g} is greater than high {high:g}")
    return low, high


DEFAULT_RULES = TagRules()


def validate_token_id(value: object) -> str:
    """Return ``value`` if it is a valid token id, else raise TagRuleError."""
    if not isinstance(value, str) or not _TOKEN_ID.fullmatch(value):
        raise TagRuleError(
            TOKEN_ID_TAG,
            value,
            "a token id is 1-64 characters: letters, digits and '-', "
            "not starting or ending with '-'",
        )
    return value


def validate_metric(value: object, rules: TagRules = DEFAULT_RULES) -> str:
    """Return the canonical (lower-case) metric name; raise TagRuleError if it is unknown."""
    if isinstance(value, str) and value.isascii() and value.lower() in rules.metrics:
        return value.lower()
    raise TagRuleError(
        METRIC_TAG, value, "must be one of the known metrics: " + ", ".join(rules.metrics)
    )


def validate_value(
    value: object, metric: str | None = None, rules: TagRules = DEFAULT_RULES
) -> float:
    """Return ``value`` as a float if it is a finite decimal number (in ``metric``'s range
    when ``metric`` is a known metric), else raise TagRuleError.

    Accepts Python ints and floats (the SDK passes numbers) and strings such as ``0.93``,
    ``-0``, ``1e-07``. Rejects booleans, NaN, infinities (``1e309`` overflows to one), empty
    strings, commas, underscores and surrounding whitespace.
    """
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            number = math.inf
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = float(value)
    else:
        number = None
    if number is None or not math.isfinite(number):
        raise TagRuleError(VALUE_TAG, value, "must be a finite decimal number such as 0.93")
    canonical = metric.lower() if isinstance(metric, str) else None
    if canonical in rules.metrics and not rules.in_range(canonical, number):
        raise TagRuleError(
            VALUE_TAG,
            value,
            f"{canonical} values must be {_describe(*rules.range_for(canonical))} "
            f"(the {METRIC_TAG} is {canonical})",
        )
    return number


def validate_tags(
    tags: Mapping[str, object],
    existing: Mapping[str, object] | None = None,
    rules: TagRules = DEFAULT_RULES,
) -> dict[str, object]:
    """Check the token tags among ``tags`` (what is being written) against each other and
    against ``existing`` (the entity's current tags). Other keys are ignored.

    Whichever of ``benchmark_metric`` and ``benchmark_value`` is written second is checked
    against the other. Existing values that do not parse (written before validation existed)
    are not held against a new write. Returns the canonical values of the token tags written.
    """
    existing = existing or {}
    checked: dict[str, object] = {}
    if TOKEN_ID_TAG in tags:
        checked[TOKEN_ID_TAG] = validate_token_id(tags[TOKEN_ID_TAG])
    if METRIC_TAG in tags:
        checked[METRIC_TAG] = metric = validate_metric(tags[METRIC_TAG], rules)
    else:
        metric = _known_metric(existing.get(METRIC_TAG), rules)
    if VALUE_TAG in tags:
        checked[VALUE_TAG] = validate_value(tags[VALUE_TAG], metric, rules)
    elif METRIC_TAG in tags and VALUE_TAG in existing:
        try:
            number = validate_value(existing[VALUE_TAG], None, rules)
        except TagRuleError:
            number = None
        if number is not None and not rules.in_range(metric, number):
            raise TagRuleError(
                METRIC_TAG,
                tags[METRIC_TAG],
                f"the existing {VALUE_TAG} {_shown(existing[VALUE_TAG])} is not a valid "
                f"{metric} value ({metric} values must be "
                f"{_describe(*rules.range_for(metric))}); set a matching {VALUE_TAG} first",
            )
    return checked


def _known_metric(value: object, rules: TagRules) -> str | None:
    try:
        return validate_metric(value, rules)
    except TagRuleError:
        return None
