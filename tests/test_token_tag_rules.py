"""The pure token-tag rules (shared by server and SDK): examples plus property-based tests."""

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_hokusai.tags.rules import (
    DEFAULT_RULES,
    METRIC_TAG,
    TOKEN_ID_TAG,
    VALUE_TAG,
    TagRuleError,
    TagRules,
    validate_metric,
    validate_tags,
    validate_token_id,
    validate_value,
)

VALID_ID = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?\Z")


# --- hokusai_token_id ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "A1", "tok-123", "x" * 64, "9-9", "a--b"])
def test_valid_token_ids(value):
    assert validate_token_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-a",
        "a-",
        "-",
        "x" * 65,
        "a_b",
        "a b",
        " a",
        "a\n",
        "tok.1",
        "ünï",
        "١٢٣",
        None,
        12,
        True,
    ],
)
def test_invalid_token_ids(value):
    with pytest.raises(TagRuleError) as info:
        validate_token_id(value)
    assert info.value.tag == TOKEN_ID_TAG
    assert info.value.value == value
    assert "letters, digits and '-'" in info.value.rule
    assert TOKEN_ID_TAG in str(info.value)


@settings(max_examples=500)
@given(st.text())
def test_random_strings_pass_only_if_they_are_valid_ids(value):
    try:
        result = validate_token_id(value)
    except TagRuleError:
        assert not VALID_ID.match(value)
    else:
        assert result == value and VALID_ID.match(value)


@given(st.from_regex(VALID_ID, fullmatch=True))
def test_every_valid_shape_passes(value):
    assert validate_token_id(value) == value


def test_long_values_are_truncated_in_messages():
    message = str(pytest.raises(TagRuleError, validate_token_id, "-" + "z" * 5000).value)
    assert len(message) < 300 and "…" in message


# --- benchmark_metric ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, canonical",
    [("accuracy", "accuracy"), ("F1", "f1"), ("Reply_Rate", "reply_rate"), ("AUROC", "auroc")],
)
def test_known_metrics_case_insensitive(value, canonical):
    assert validate_metric(value) == canonical


@pytest.mark.parametrize(
    "value", ["", "banana", " accuracy", "accuracy ", "acc", None, 1, "\u212aappa"]
)
def test_unknown_metrics(value):
    with pytest.raises(TagRuleError) as info:
        validate_metric(value)
    assert info.value.tag == METRIC_TAG and "accuracy" in info.value.rule


@given(st.text())
def test_random_metric_strings_never_crash(value):
    try:
        assert validate_metric(value) in DEFAULT_RULES.metrics
    except TagRuleError:
        pass


# --- benchmark_value ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("0.93", 0.93),
        ("1", 1.0),
        ("-0", 0.0),
        ("0.0000001", 1e-7),
        ("1e-07", 1e-7),
        (".5", 0.5),
        ("+0.5", 0.5),
        ("1E2", 100.0),
        (0.25, 0.25),
        (3, 3.0),
        ("1e-400", 0.0),
        ("-12.5", -12.5),
    ],
)
def test_finite_decimals_accepted(value, expected):
    assert validate_value(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1e309",
        "-1e309",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "",
        " ",
        "1,5",
        " 0.5",
        "0.5 ",
        "0.5\n",
        "1_000",
        "0x10",
        "True",
        "banana",
        "1.2.3",
        "--1",
        "e5",
        "١",
        True,
        False,
        None,
        float("nan"),
        float("inf"),
        10**400,
        [0.5],
    ],
)
def test_non_finite_or_malformed_rejected(value):
    with pytest.raises(TagRuleError) as info:
        validate_value(value)
    assert info.value.tag == VALUE_TAG and "finite decimal" in info.value.rule


def test_negative_zero_is_in_unit_range():
    assert validate_value("-0", "accuracy") == 0.0


@pytest.mark.parametrize(
    "metric, good, bad",
    [
        ("accuracy", ["0", "1", "0.5"], ["1.0001", "-0.1"]),
        ("auc", ["0.7"], ["2"]),
        ("mse", ["0", "12345.6"], ["-0.001"]),
        ("engagement_score", ["42"], ["-1"]),
        ("r2", ["1", "-5"], ["1.5"]),
        ("conversion_rate", ["0.02"], ["5"]),
    ],
)
def test_metric_ranges(metric, good, bad):
    for value in good:
        assert math.isfinite(validate_value(value, metric))
    for value in bad:
        with pytest.raises(TagRuleError) as info:
            validate_value(value, metric)
        assert metric in info.value.rule


def test_unknown_metric_means_no_range():
    assert validate_value("500", "not-a-metric") == 500.0
    assert validate_value("500", None) == 500.0


@settings(max_examples=500)
@given(
    st.one_of(st.text(), st.floats(), st.integers(), st.booleans(), st.none()),
    st.sampled_from([None, *DEFAULT_RULES.metrics]),
)
def test_values_never_crash_and_results_are_finite(value, metric):
    try:
        result = validate_value(value, metric)
    except TagRuleError as error:
        assert error.tag == VALUE_TAG
    else:
        assert math.isfinite(result) and not isinstance(value, bool)
        if isinstance(value, str):
            assert value == value.strip() and value  # nothing is trimmed


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_str_of_any_finite_float_is_accepted(number):
    assert validate_value(str(number)) == number
    assert validate_value(repr(number)) == number


# --- validate_tags: the pair rule ---------------------------------------------------------


def test_other_keys_ignored():
    assert validate_tags({"owner": "-", "mlflow.prompt.is_prompt": "true"}) == {}


def test_value_checked_against_metric_written_with_it():
    assert validate_tags({METRIC_TAG: "F1", VALUE_TAG: "0.9"}) == {METRIC_TAG: "f1", VALUE_TAG: 0.9}
    with pytest.raises(TagRuleError) as info:
        validate_tags({METRIC_TAG: "f1", VALUE_TAG: "9"})
    assert info.value.tag == VALUE_TAG


def test_value_written_second_checked_against_existing_metric():
    with pytest.raises(TagRuleError) as info:
        validate_tags({VALUE_TAG: "2"}, existing={METRIC_TAG: "Accuracy"})
    assert info.value.tag == VALUE_TAG and "accuracy" in info.value.rule
    assert validate_tags({VALUE_TAG: "0.2"}, existing={METRIC_TAG: "accuracy"})[VALUE_TAG] == 0.2


def test_metric_written_second_checked_against_existing_value():
    with pytest.raises(TagRuleError) as info:
        validate_tags({METRIC_TAG: "accuracy"}, existing={VALUE_TAG: "12"})
    assert info.value.tag == METRIC_TAG and "12" in info.value.rule
    assert validate_tags({METRIC_TAG: "mse"}, existing={VALUE_TAG: "12"}) == {METRIC_TAG: "mse"}


def test_legacy_existing_values_do_not_block_writes():
    assert validate_tags({METRIC_TAG: "accuracy"}, existing={VALUE_TAG: "banana"})
    assert validate_tags({VALUE_TAG: "50"}, existing={METRIC_TAG: "made-up"})


# --- configuration ------------------------------------------------------------------------


def test_config_replaces_list_and_ranges():
    rules = TagRules.from_config(
        {
            "database_uri": "sqlite:///x.db",  # other [hokusai] keys are ignored
            "benchmark_metrics": "accuracy, F1,\nlift",
            "metric_range.lift": "1,",
            "metric_range.f1": ", ",
        }
    )
    assert rules.metrics == ("accuracy", "f1", "lift")
    assert validate_metric("LIFT", rules) == "lift"
    assert validate_value("0.5", "f1", rules) == 0.5
    assert validate_value("7", "f1", rules) == 7.0  # range removed
    with pytest.raises(TagRuleError):
        validate_value("0.5", "lift", rules)
    with pytest.raises(TagRuleError):
        validate_value("2", "accuracy", rules)  # default range kept
    with pytest.raises(TagRuleError):
        validate_metric("mse", rules)


def test_config_defaults_when_absent():
    assert TagRules.from_config({}) == DEFAULT_RULES


@pytest.mark.parametrize(
    "section",
    [
        {"benchmark_metrics": ""},
        {"benchmark_metrics": "accuracy, bad-name"},
        {"metric_range.unknown": "0, 1"},
        {"metric_range.accuracy": "0"},
        {"metric_range.accuracy": "1, 0"},
        {"metric_range.accuracy": "0, inf"},
        {"metric_range.accuracy": "zero, 1"},
    ],
)
def test_bad_config_is_refused_with_the_key(section):
    with pytest.raises(ValueError) as info:
        TagRules.from_config(section)
    assert next(iter(section)) in str(info.value)


def test_rules_read_from_the_config_file(tmp_path):
    from mlflow_hokusai.config import load_settings

    path = tmp_path / "hokusai.ini"
    path.write_text(
        "[hokusai]\n"
        "benchmark_metrics = accuracy, f1, r2, mse, Lift\n"
        "metric_range.Lift = 0,\n"
        "metric_range.r2 = -1, 1\n"
    )
    rules = TagRules.from_config(load_settings({"HOKUSAI_CONFIG": str(path)}).hokusai_section)
    assert rules.metrics == ("accuracy", "f1", "r2", "mse", "lift")
    assert rules.range_for("LIFT") == (0.0, None)
    assert rules.range_for("r2") == (-1.0, 1.0)
    assert rules.range_for("accuracy") == (0.0, 1.0)


def test_packaged_defaults_give_the_default_rules():
    from mlflow_hokusai.config import load_settings

    assert TagRules.from_config(load_settings({}).hokusai_section) == DEFAULT_RULES
