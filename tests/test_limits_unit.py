"""Resource limits, pure: parsing (REST objects and CLI strings), the stored form, ceilings,
and how the caps inside MLflow's engine pick the resource a decision is about."""

from __future__ import annotations

import pytest

from mlflow_hokusai._mlflow.resource_limit_patches import _container
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.resource_limits import UNLIMITED, from_json, lower, parse_limits


def test_cli_strings_and_rest_objects_mean_the_same():
    from_cli = parse_limits(["12", "ci-exp=READ", "name:123"], ["rf", "ci-*=EDIT"])
    from_rest = parse_limits(
        [{"id": "12"}, {"name": "ci-exp", "permission": "read"}, {"name": "123"}],
        [{"name": "rf"}, {"name": "ci-*", "permission": "EDIT"}],
    )
    assert from_cli == from_rest
    assert from_cli.to_dict() == {
        "experiments": [
            {"id": "12", "permission": "MANAGE"},
            {"name": "ci-exp", "permission": "READ"},
            {"name": "123", "permission": "MANAGE"},
        ],
        "registered_models": [
            {"name": "rf", "permission": "MANAGE"},
            {"name": "ci-*", "permission": "EDIT"},
        ],
        "workspace": None,
        "can_create": False,
    }
    assert from_json(from_cli.to_json()) == from_cli


def test_a_read_key_defaults_to_read_and_a_name_may_end_in_an_equals_sign():
    limits = parse_limits(["exp=odd", "a=b=EDIT"], scope="read")
    assert [(e.value, e.permission) for e in limits.experiments] == [
        ("exp=odd", "READ"),
        ("a=b", "EDIT"),
    ]


def test_ceilings():
    limits = parse_limits(["12=READ", "named=EDIT"], ["rf", "ci-*=READ", "ci-special=EDIT"])
    names = {"12": "twelve", "30": "named", "31": "other"}.get
    assert limits.experiment_ceiling("12", names) == "READ"
    assert limits.experiment_ceiling("30", names) == "EDIT"
    assert limits.experiment_ceiling("31", names) is None
    assert limits.model_ceiling("rf") == "MANAGE"
    assert limits.model_ceiling("rf2") is None
    assert limits.model_ceiling("ci-a") == "READ"
    assert limits.model_ceiling("ci-special") == "EDIT"  # the higher of two matches
    assert lower("MANAGE", "READ") == "READ" and lower("NO_PERMISSIONS", "EDIT") == "NO_PERMISSIONS"


def test_names_are_looked_up_only_when_limits_name_experiments_by_name():
    asked = []
    by_id = parse_limits(["12"])
    assert by_id.experiment_ceiling("13", lambda i: asked.append(i)) is None
    assert asked == []


def test_limited_means_something_was_given_even_empty():
    assert not UNLIMITED.limited and UNLIMITED.to_json() is None
    nothing = parse_limits([], None)
    assert nothing.limited and nothing.to_dict()["experiments"] == []
    assert from_json(nothing.to_json()).limited
    creator = parse_limits(None, None, can_create=True)
    assert creator.limited and creator.can_create
    workspace_only = parse_limits(None, None, workspace="team-a")
    assert not workspace_only.limited and workspace_only.to_dict()["experiments"] is None
    assert from_json(workspace_only.to_json()) == workspace_only


def test_what_a_key_creates_joins_its_limits():
    limits = parse_limits(["12"], [], can_create=True)
    grown = limits.with_created("experiment", "40", "MANAGE")
    grown = grown.with_created("registered_model", "made", "MANAGE")
    assert grown.with_created("experiment", "40", "MANAGE") == grown
    assert grown.experiment_ceiling("40", lambda i: None) == "MANAGE"
    assert grown.model_ceiling("made") == "MANAGE" and grown.limited


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"experiments": "12"}, "must be a list"),
        ({"experiments": [12]}, "strings or objects"),
        ({"experiments": [{"id": "x"}]}, "must be a number"),
        ({"experiments": ["id:x"]}, "must be a number"),
        ({"experiments": [{"id": "1", "name": "a"}]}, "exactly one"),
        ({"experiments": [{"name": "a", "permission": "OWNER"}]}, "READ, EDIT, MANAGE"),
        ({"experiments": [""]}, "non-empty"),
        ({"experiments": ["a\u202eb"]}, "invisible"),
        ({"experiments": ["x"] * 101}, "at most 100"),
        ({"registered_models": [{"id": "1"}]}, "by 'name'"),
        ({"registered_models": ["a*b"]}, "may only end a prefix"),
        ({"registered_models": ["**"]}, "non-empty prefix"),
        ({"can_create": "yes"}, "true or false"),
        ({"workspace": ""}, "non-empty"),
    ],
)
def test_bad_limits_name_the_field_and_the_rule(kwargs, words):
    with pytest.raises(HokusaiError) as caught:
        parse_limits(**kwargs)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert words in caught.value.message


def test_the_cap_finds_the_experiment_or_model_a_requirement_is_about():
    from collections import namedtuple

    Req = namedtuple("Req", "resource_type resource_id action fallback_if_no_grant")
    run = Req("run", "*", "update", (("experiment", "7"),))
    assert _container(run, ("experiment", "7")) == ("experiment", "7")
    assert _container(Req("registered_model", "rf", "read", ()), None) == (
        "registered_model",
        "rf",
    )
    version = Req("registered_model_version", "*", "update", ())
    assert _container(version, ("registered_model", "rf")) == ("registered_model", "rf")
    create = Req("experiment", None, "create", ())
    assert _container(create, ("workspace", "*")) == (None, None)


def test_a_refused_create_names_what_in_good_english():
    from types import SimpleNamespace

    from mlflow_hokusai.auth.resource_limits import LimitNotes, may_create

    key = SimpleNamespace(limits=parse_limits(experiments=["mine"]), key_prefix="hk_live_ab12")
    refusal = may_create(key, LimitNotes(create="experiment"), "other")
    assert "may not create an experiment its limits do not name" in refusal
    refusal = may_create(key, LimitNotes(create="registered_model"), "other")
    assert "may not create a registered model its limits do not name" in refusal
