"""Resource limits of a key: the experiments and registered models it may touch, each with a
permission ceiling, optionally one workspace, and whether it may create new ones.

Pure: parsing (one implementation for the REST API and the CLI), the stored JSON form, and
the ceiling a limit gives a resource. Enforcement is ``auth/resource_limits.py``.

- ``experiments``: by id (``"12"``) or by name (``"ci-training"``; ``name:123`` names an
  experiment whose name is all digits), each ``{"id"|"name": …, "permission": …}`` or a plain
  string; on the command line ``--experiment ID_OR_NAME[=READ|EDIT|MANAGE]``.
- ``registered_models``: by name or a ``prefix*`` pattern, the same way (``--model``).
- the ceiling defaults to the key's scope: ``MANAGE`` for a write key (the owner's own rights,
  whatever they are), ``READ`` for a read key. The effective permission on a resource is the
  lower of the owner's MLflow permission and the ceiling; a resource not named: none.
- ``workspace``: with MLflow workspaces on, the only workspace the key may act in.
- ``can_create``: the key may create experiments and registered models; what it creates is
  added to its limits with the default ceiling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from mlflow_hokusai import _mlflow
from mlflow_hokusai.errors import invalid_parameter
from mlflow_hokusai.text import MLFLOW_NAME_LENGTH, check_name

PERMISSIONS = ("READ", "EDIT", "MANAGE")
MAX_ENTRIES = 100


def default_ceiling(scope: str) -> str:
    return "READ" if scope == "read" else "MANAGE"


def _rank(permission: str) -> int:
    """A permission's place in MLflow's order (unknown names, and DENY, count as none)."""
    return _mlflow.permission_order().get(permission, 0)


def lower(a: str, b: str) -> str:
    """The lower of two MLflow permission names (unknown names count as none)."""
    return a if _rank(a) <= _rank(b) else b


def at_least(permission: str, needed: str) -> bool:
    return _rank(permission) >= _rank(needed)


@dataclass(frozen=True)
class Limit:
    kind: str  # "id" | "name" (experiments), "name" | "prefix" (registered models)
    value: str
    permission: str

    def to_dict(self) -> dict:
        if self.kind == "prefix":
            return {"name": self.value + "*", "permission": self.permission}
        return {self.kind: self.value, "permission": self.permission}


@dataclass(frozen=True)
class ResourceLimits:
    experiments: tuple[Limit, ...] = ()
    registered_models: tuple[Limit, ...] = ()
    workspace: str | None = None
    can_create: bool = False
    # The key limits resources at all (False: only a workspace, or nothing).
    limited: bool = field(default=False, compare=False)

    @classmethod
    def build(
        cls, experiments=(), registered_models=(), workspace=None, can_create=False, limited=None
    ):
        """``limited``: whether resources are limited at all (default: something is named or
        ``can_create``). A key whose lists were emptied stays limited: it touches nothing."""
        experiments, registered_models = tuple(experiments), tuple(registered_models)
        if limited is None:
            limited = bool(experiments or registered_models or can_create)
        return cls(experiments, registered_models, workspace, bool(can_create), bool(limited))

    def experiment_ceiling(self, experiment_id: str, name_of) -> str | None:
        """The ceiling on experiment ``experiment_id`` (None: not named). ``name_of(id)`` gives
        an experiment's name (asked only when the limits name experiments by name)."""
        best = None
        name = None
        for limit in self.experiments:
            if limit.kind == "id":
                hit = limit.value == experiment_id
            else:
                if name is None:
                    name = name_of(experiment_id) or ""
                hit = limit.value == name
            if hit and (best is None or at_least(limit.permission, best)):
                best = limit.permission
        return best

    def model_ceiling(self, name: str) -> str | None:
        """The ceiling on registered model ``name`` (None: not named)."""
        best = None
        for limit in self.registered_models:
            hit = name.startswith(limit.value) if limit.kind == "prefix" else name == limit.value
            if hit and (best is None or at_least(limit.permission, best)):
                best = limit.permission
        return best

    def with_created(self, kind: str, value: str, permission: str) -> ResourceLimits:
        """These limits and a resource the key just created (``kind``: "experiment" by id,
        or "registered_model" by name)."""
        entry = Limit("id" if kind == "experiment" else "name", value, permission)
        if kind == "experiment":
            if entry in self.experiments:
                return self
            return replace(self, experiments=(*self.experiments, entry))
        if entry in self.registered_models:
            return self
        return replace(self, registered_models=(*self.registered_models, entry))

    def to_dict(self) -> dict:
        """``experiments`` and ``registered_models`` are None when resources are not limited
        (a key limited only to a workspace), and lists, possibly empty, when they are."""
        if not self.limited:
            return {
                "experiments": None,
                "registered_models": None,
                "workspace": self.workspace,
                "can_create": False,
            }
        return {
            "experiments": [limit.to_dict() for limit in self.experiments],
            "registered_models": [limit.to_dict() for limit in self.registered_models],
            "workspace": self.workspace,
            "can_create": self.can_create,
        }

    def to_json(self) -> str | None:
        if not self.limited and self.workspace is None:
            return None
        return json.dumps(self.to_dict(), sort_keys=True)

    def summary(self) -> str:
        """One line for tables and the audit trail (``experiments=12:EDIT models=ci-*:READ``)."""
        parts = []
        if self.limited:
            shown = [f"{e.value}:{e.permission}" for e in self.experiments]
            parts.append("experiments=" + (",".join(shown) or "none"))
            shown = [f"{m.to_dict()['name']}:{m.permission}" for m in self.registered_models]
            parts.append("models=" + (",".join(shown) or "none"))
            if self.can_create:
                parts.append("can_create")
        if self.workspace is not None:
            parts.append(f"workspace={self.workspace}")
        return " ".join(parts)


UNLIMITED = ResourceLimits()


def from_json(text: str | None) -> ResourceLimits:
    """The stored form back (written by ``to_json``; trusted, but checked again)."""
    if not text:
        return UNLIMITED
    data = json.loads(text)
    return parse_limits(
        data.get("experiments"),
        data.get("registered_models"),
        data.get("workspace"),
        data.get("can_create"),
        scope="write",
    )


def _permission(value, field_name: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value.upper() not in PERMISSIONS:
        raise invalid_parameter(
            f"'{field_name}' permission must be one of {', '.join(PERMISSIONS)}, not {value!r}."
        )
    return value.upper()


def _text(value, field_name: str) -> str:
    """An entry naming an MLflow resource (kept as given: names may have surrounding spaces)."""
    return check_name(
        value,
        MLFLOW_NAME_LENGTH,
        strip=False,
        error=invalid_parameter,
        empty=f"'{field_name}' entries must be non-empty names.",
        too_long=f"'{field_name}' entry {str(value)[:40]!r} must be at most {MLFLOW_NAME_LENGTH} "
        "characters without control or invisible formatting characters.",
    )


def _split_cli(entry: str, default: str) -> tuple[str, str]:
    """``NAME=EDIT`` -> (NAME, EDIT); a suffix that is not a permission belongs to the name."""
    value, sep, permission = entry.rpartition("=")
    if sep and permission.upper() in PERMISSIONS:
        return value, permission.upper()
    return entry, default


def _entries(values, field_name: str, default: str):
    """(value, permission, explicit kind or None) for each entry of a REST list or the CLI's
    strings."""
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise invalid_parameter(
            f"'{field_name}' must be a list of names or {{'name'|'id', 'permission'}} objects."
        )
    if len(values) > MAX_ENTRIES:
        raise invalid_parameter(
            f"'{field_name}' may have at most {MAX_ENTRIES} entries, not {len(values)}."
        )
    out = []
    for entry in values:
        if isinstance(entry, str):
            value, permission = _split_cli(entry, default)
            out.append((_text(value, field_name), permission, None))
            continue
        if not isinstance(entry, dict) or not set(entry) <= {"id", "name", "permission"}:
            raise invalid_parameter(
                f"'{field_name}' entries must be strings or objects with 'id' or 'name' and an "
                "optional 'permission'."
            )
        keys = [k for k in ("id", "name") if k in entry]
        if len(keys) != 1:
            raise invalid_parameter(f"'{field_name}' entries need exactly one of 'id' or 'name'.")
        permission = _permission(entry.get("permission"), field_name, default)
        out.append((_text(entry[keys[0]], field_name), permission, keys[0]))
    return out


def _experiment(value: str, permission: str, kind: str | None) -> Limit:
    """An ``experiments`` entry: an id, a name, or (as a string) ``id:12`` / ``name:12``."""
    if kind is None:
        if value.startswith("name:"):
            return Limit("name", _text(value[5:], "experiments"), permission)
        if value.startswith("id:"):
            kind, value = "id", value[3:]
        else:
            kind = "id" if value.isdigit() else "name"
    if kind == "id" and not value.isdigit():
        raise invalid_parameter(f"'experiments' id {value!r} must be a number.")
    return Limit(kind, value, permission)


def _model(value: str, permission: str, kind: str | None) -> Limit:
    """A ``registered_models`` entry: a name or a ``prefix*`` pattern."""
    if kind == "id":
        raise invalid_parameter("'registered_models' are named by 'name', not 'id'.")
    if value.endswith("*"):
        prefix = value[:-1]
        if not prefix or "*" in prefix:
            raise invalid_parameter(
                f"'registered_models' pattern {value!r}: only a trailing '*' after a "
                "non-empty prefix is allowed (e.g. 'ci-*')."
            )
        return Limit("prefix", prefix, permission)
    if "*" in value:
        raise invalid_parameter(
            f"'registered_models' pattern {value!r}: '*' may only end a prefix (e.g. 'ci-*')."
        )
    return Limit("name", value, permission)


def parse_limits(
    experiments=None, registered_models=None, workspace=None, can_create=None, *, scope="write"
) -> ResourceLimits:
    """Validate limits given over REST or on the command line (``400`` naming the field)."""
    default = default_ceiling(scope)
    parsed_experiments = [
        _experiment(*entry) for entry in _entries(experiments, "experiments", default)
    ]
    parsed_models = [
        _model(*entry) for entry in _entries(registered_models, "registered_models", default)
    ]
    if workspace is not None:
        workspace = _text(workspace, "workspace")
    if can_create is not None and not isinstance(can_create, bool):
        raise invalid_parameter(f"'can_create' must be true or false, not {can_create!r}.")
    return ResourceLimits.build(
        tuple(dict.fromkeys(parsed_experiments)),
        tuple(dict.fromkeys(parsed_models)),
        workspace,
        bool(can_create),
        # An empty list given is a limit too: the key touches no resource of that kind.
        limited=experiments is not None or registered_models is not None or bool(can_create),
    )
