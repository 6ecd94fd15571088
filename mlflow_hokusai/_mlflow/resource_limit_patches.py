"""Resource-limited keys inside MLflow's auth engine: every permission the engine works out
for an experiment, registered model or prompt is capped by the request's key.

MLflow decides which experiment a run, trace, logged model or artifact path belongs to, and
which registered model a version or alias belongs to; we do not repeat that. We wrap the few
functions where the engine turns "this user, this resource" into a permission, and lower the
answer to the key's ceiling for that resource (none for a resource the key does not name):

- ``_get_role_permission_or_default(role_permission_func)``: the point checks of both
  supported releases. The ``role_permission_func`` comes from ``_role_permission_for`` or
  ``_role_permission_for_known_workspace``, which we wrap to label it with its resource; an
  unlabelled one (a resource type we do not limit) gives a limited key no permission;
- ``_resolve_requirement_decisions`` (MLflow 3.17's requirement model): each decision is
  capped by the resource it concerns (its own key, else the nearest experiment, registered
  model or prompt among its fallbacks, else the anchor);
- ``_role_based_read_predicate`` and ``RetentionGate.retains``: the filters of searches and
  listings, so a search returns only what the key may read, with MLflow's own pagination;
- ``_get_readable_resource_ids`` (MLflow 3.18 scopes experiment, trace and logged-model
  searches in SQL to a set of readable ids): for a limited key, the experiments its limits
  name that it may read (``named_ids``), never "no filter"; other resource types are filtered
  by the capped predicate, and "no filter" becomes none.

``ceiling(resource_type, resource_id)`` (``auth/resource_limits.py``) answers for the
request's key: ``NOT_LIMITED``, None (not named) or a permission name. Which routes a limited
key may call at all is decided before MLflow runs (``auth/resource_limits.py``, fail closed).
"""

from __future__ import annotations

import functools

from mlflow_hokusai._mlflow import targets

NOT_LIMITED = object()
LIMITED_TYPES = ("experiment", "registered_model", "prompt")
_NOT_DENIED = "not_denied"


def cap_permissions(ceiling, on_lowered, named_experiment_ids=lambda: None) -> None:
    """Install the caps. ``on_lowered()`` is called when a cap took away a permission the
    owner has (the refusal is then the key's limits, and says so); ``named_experiment_ids()``
    the ids of the experiments the request's key names (None: not a limited key)."""
    capped, can_read = _cappers(ceiling, on_lowered)
    _label_role_permission_funcs()
    _cap_point_checks(capped)
    _cap_read_predicate(ceiling, can_read)
    _cap_requirement_decisions(capped)  # MLflow >= 3.17
    _cap_retention_gate(can_read)  # MLflow >= 3.17
    _cap_readable_ids(ceiling, named_experiment_ids)  # MLflow >= 3.18


def _cappers(ceiling, on_lowered):
    """``capped(permission, resource_type, resource_id)``: ``permission`` lowered to the key's
    ceiling on that resource (a DENY, or a key that is not limited, keeps it); and
    ``can_read(resource_type, resource_id)``: whether READ on it survives the cap."""
    from mlflow.server.auth.permissions import (
        NO_PERMISSIONS,
        PERMISSION_PRIORITY,
        get_permission,
    )

    def capped(permission, resource_type, resource_id):
        limit = ceiling(resource_type, resource_id)
        if limit is NOT_LIMITED or permission.name == "DENY":
            return permission
        new = NO_PERMISSIONS if limit is None else get_permission(limit)
        if PERMISSION_PRIORITY[new.name] >= PERMISSION_PRIORITY.get(permission.name, 0):
            return permission
        on_lowered()
        return new

    def can_read(resource_type, resource_id) -> bool:
        return capped(get_permission("READ"), resource_type, resource_id).can_read

    return capped, can_read


def _label_role_permission_funcs() -> None:
    """Have the functions that make a point check's ``role_permission_func`` label it with its
    resource (``hokusai_resource``), for ``_cap_point_checks``."""
    from mlflow.server import auth

    def label(make):
        @functools.wraps(make)
        def labelled(username, resource_type, resource_key, *args, **kwargs):
            func = make(username, resource_type, resource_key, *args, **kwargs)
            func.hokusai_resource = (resource_type, resource_key)
            return func

        return labelled

    for name in ("_role_permission_for", "_role_permission_for_known_workspace"):
        setattr(auth, name, label(targets.lookup(targets.AUTH, name)))


def _cap_point_checks(capped) -> None:
    """Cap ``_get_role_permission_or_default`` by the resource its function is labelled with."""
    from mlflow.server import auth

    or_default = targets.lookup(targets.AUTH, "_get_role_permission_or_default")

    @functools.wraps(or_default)
    def capped_or_default(role_permission_func):
        permission = or_default(role_permission_func)
        resource = getattr(role_permission_func, "hokusai_resource", None)
        if resource is None:  # not a resource we limit: a limited key gets none
            return capped(permission, None, None)
        return capped(permission, *resource)

    auth._get_role_permission_or_default = capped_or_default


def _cap_read_predicate(ceiling, can_read_capped) -> None:
    """Searches keep only what a limited key may read (``_role_based_read_predicate``)."""
    from mlflow.server import auth

    predicate_of = targets.lookup(targets.AUTH, "_role_based_read_predicate")

    @functools.wraps(predicate_of)
    def capped_predicate(username, resource_type, *args, **kwargs):
        predicate = predicate_of(username, resource_type, *args, **kwargs)
        if ceiling(None, None) is NOT_LIMITED:  # not a limited key: MLflow's own predicate
            return predicate

        def can_read(resource_id) -> bool:
            if not predicate(resource_id):
                return False
            return can_read_capped(resource_type, resource_id)

        return can_read

    auth._role_based_read_predicate = capped_predicate


def _cap_requirement_decisions(capped) -> None:
    """Each of MLflow 3.17's requirement decisions is capped by the resource it concerns."""
    from mlflow.server import auth

    decisions_of = targets.lookup(targets.AUTH, "_resolve_requirement_decisions")
    if decisions_of is None:
        return

    @functools.wraps(decisions_of)
    def capped_decisions(username, anchor, requirements):
        decisions = decisions_of(username, anchor, requirements)
        if decisions is None:
            return None
        return [
            (
                permission
                if action == _NOT_DENIED
                else capped(permission, *_container(requirement, anchor)),
                action,
            )
            for (permission, action), requirement in zip(decisions, requirements, strict=True)
        ]

    auth._resolve_requirement_decisions = capped_decisions


def _cap_retention_gate(can_read_capped) -> None:
    """Listings keep only the experiments, models and prompts a limited key may read
    (``RetentionGate.retains``)."""
    from mlflow.server import auth

    gate = targets.lookup(targets.AUTH, "RetentionGate.retains")
    if gate is None:
        return

    @functools.wraps(gate)
    def capped_retains(self, resource_type, resource_id=None):
        kept = gate(self, resource_type, resource_id)
        if not kept or resource_type not in LIMITED_TYPES or resource_id in (None, "*"):
            return kept
        return can_read_capped(resource_type, resource_id)

    auth.RetentionGate.retains = capped_retains


def _cap_readable_ids(ceiling, named_experiment_ids) -> None:
    """MLflow 3.18's SQL-scoped searches: for a limited key, the experiments it names that it
    may read (never "no filter"); other types filtered by the capped predicate."""
    from mlflow.server import auth

    readable_of = targets.lookup(targets.AUTH, "_get_readable_resource_ids")
    if readable_of is None:
        return

    @functools.wraps(readable_of)
    def capped_readable(username, resource_type, *args, **kwargs):
        if ceiling(None, None) is NOT_LIMITED:
            return readable_of(username, resource_type, *args, **kwargs)
        can_read = auth._role_based_read_predicate(username, resource_type)  # capped
        if resource_type == "experiment":
            candidates = named_experiment_ids() or set()
        else:
            candidates = readable_of(username, resource_type, *args, **kwargs) or set()
        return {resource_id for resource_id in candidates if can_read(resource_id)}

    auth._get_readable_resource_ids = capped_readable


def _container(requirement, anchor) -> tuple[str | None, str | None]:
    """The experiment, registered model or prompt a 3.17 requirement is about: its own key,
    else the first such fallback naming one, else the anchor (None, None: none of them, which
    a limited key may not use)."""
    if requirement.resource_type in LIMITED_TYPES and requirement.resource_id not in (None, "*"):
        return requirement.resource_type, requirement.resource_id
    for entry in requirement.fallback_if_no_grant:
        resource_type, resource_id = entry[0], entry[1]
        if resource_type in LIMITED_TYPES and resource_id not in (None, "*"):
            return resource_type, resource_id
    if anchor and anchor[0] in LIMITED_TYPES and anchor[1] not in (None, "*"):
        return anchor[0], anchor[1]
    return None, None
