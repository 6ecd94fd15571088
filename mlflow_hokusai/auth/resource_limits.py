"""Resource-limited keys: which routes such a key may call, and its ceiling on a resource.

Two checks, both needed:

1. **Routes, fail closed** (here, in the gate, before MLflow runs): a limited key may call
   only the routes in ``LIMITED_RPCS`` / ``LIMITED_ROUTES``, whose MLflow validators decide on
   the experiment, registered model or prompt involved (so the caps below apply), and the
   routes in ``RESOURCE_FREE`` that touch none. Anything else -- a new MLflow route, gateway,
   scorers, jobs, GraphQL, user administration -- is refused with 403 naming the key. Creating
   an experiment or registered model needs ``can_create``.
2. **Ceilings** (``ResourceLimiter.ceiling``, called by ``_mlflow/resource_limit_patches.py`` from
   inside MLflow's engine): the permission MLflow works out for the owner is lowered to the
   key's ceiling on that resource; a resource the key does not name gets none.

So the effective permission is the lower of the owner's current MLflow permission and the
key's limit, and a key never exceeds its owner, even after the owner loses a grant.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass

from mlflow_hokusai._mlflow.resource_limit_patches import NOT_LIMITED
from mlflow_hokusai.auth.scopes import ARTIFACT_ROUTES, canonical
from mlflow_hokusai.keys.resource_limits import from_json

# MLflow RPCs a limited key may call: each one's validator resolves the experiment, registered
# model or prompt it touches (runs, metrics, params, artifacts, traces, logged models and
# datasets through their experiment; versions, aliases and tags through their model).
LIMITED_RPCS = frozenset(
    {
        # experiments
        "mlflow.GetExperiment",
        "mlflow.GetExperimentByName",
        "mlflow.SearchExperiments",
        "mlflow.UpdateExperiment",
        "mlflow.DeleteExperiment",
        "mlflow.RestoreExperiment",
        "mlflow.SetExperimentTag",
        "mlflow.DeleteExperimentTag",
        # runs and what hangs off them
        "mlflow.CreateRun",
        "mlflow.GetRun",
        "mlflow.UpdateRun",
        "mlflow.DeleteRun",
        "mlflow.RestoreRun",
        "mlflow.SearchRuns",
        "mlflow.LogMetric",
        "mlflow.LogParam",
        "mlflow.SetTag",
        "mlflow.DeleteTag",
        "mlflow.LogBatch",
        "mlflow.LogModel",
        "mlflow.LogInputs",
        "mlflow.LogOutputs",
        "mlflow.GetMetricHistory",
        "mlflow.ListArtifacts",
        # logged models (MLflow 3)
        "mlflow.CreateLoggedModel",
        "mlflow.GetLoggedModel",
        "mlflow.FinalizeLoggedModel",
        "mlflow.DeleteLoggedModel",
        "mlflow.SetLoggedModelTags",
        "mlflow.DeleteLoggedModelTag",
        "mlflow.SearchLoggedModels",
        "mlflow.ListLoggedModelArtifacts",
        "mlflow.LogLoggedModelParamsRequest",
        # traces
        "mlflow.StartTrace",
        "mlflow.EndTrace",
        "mlflow.StartTraceV3",
        "mlflow.GetTraceInfo",
        "mlflow.GetTraceInfoV3",
        "mlflow.SearchTraces",
        "mlflow.SearchTracesV3",
        "mlflow.DeleteTraces",
        "mlflow.SetTraceTag",
        "mlflow.DeleteTraceTag",
        "mlflow.SetTraceTagV3",
        "mlflow.DeleteTraceTagV3",
        "mlflow.DeleteTracesV3",
        "mlflow.GetTrace",
        "mlflow.BatchGetTraces",
        "mlflow.BatchGetTraceInfos",
        "mlflow.LinkTracesToRun",
        # assessments (evaluation feedback on traces)
        "mlflow.CreateAssessment",
        "mlflow.GetAssessmentRequest",
        "mlflow.UpdateAssessment",
        "mlflow.DeleteAssessment",
        # model registry
        "mlflow.CreateRegisteredModel",
        "mlflow.GetRegisteredModel",
        "mlflow.UpdateRegisteredModel",
        "mlflow.DeleteRegisteredModel",
        "mlflow.SearchRegisteredModels",
        "mlflow.GetLatestVersions",
        "mlflow.CreateModelVersion",
        "mlflow.GetModelVersion",
        "mlflow.UpdateModelVersion",
        "mlflow.DeleteModelVersion",
        "mlflow.TransitionModelVersionStage",
        "mlflow.SearchModelVersions",
        "mlflow.GetModelVersionDownloadUri",
        "mlflow.SetRegisteredModelTag",
        "mlflow.DeleteRegisteredModelTag",
        "mlflow.SetModelVersionTag",
        "mlflow.DeleteModelVersionTag",
        "mlflow.SetRegisteredModelAlias",
        "mlflow.DeleteRegisteredModelAlias",
        "mlflow.GetModelVersionByAlias",
        # proxied artifacts (the path names the experiment)
        "mlflow.artifacts.DownloadArtifact",
        "mlflow.artifacts.UploadArtifact",
        "mlflow.artifacts.ListArtifacts",
        "mlflow.artifacts.DeleteArtifact",
        "mlflow.artifacts.CreateMultipartUpload",
        "mlflow.artifacts.CompleteMultipartUpload",
        "mlflow.artifacts.AbortMultipartUpload",
    }
)
# Creating a top-level resource: only with ``can_create`` (then added to the key's limits).
CREATE_RPCS = {
    "mlflow.CreateExperiment": "experiment",
    "mlflow.CreateRegisteredModel": "registered_model",
}
# Routes without an RPC that a limited key may call, decided per resource by MLflow's engine.
LIMITED_ROUTES = ARTIFACT_ROUTES | frozenset(
    {
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
        ("GET", "/api/2.0/mlflow/hokusai/run-artifacts"),  # authorized like GetRun
    }
)
# Routes that touch no experiment, run, model or trace, and why a limited key may call them.
RESOURCE_FREE = {
    ("GET", "/"): "the MLflow UI's page (its data comes through the routes above)",
    ("GET", "/static-files/<path:path>"): "the UI's files",
    ("GET", "/health"): "liveness",
    ("GET", "/version"): "the server's MLflow version",
    ("GET", "/api/3.0/mlflow/server-info"): "what the server supports",
    ("GET", "/api/2.0/mlflow/hokusai/whoami"): "the key's own identity and limits",
    ("GET", "/api/2.0/mlflow/hokusai/api-keys/list"): "the owner's keys (never a key)",
    ("GET", "/api/2.0/mlflow/hokusai/audit/list"): "the events of the owner's keys",
    ("GET", "/hokusai/keys"): "the key page",
    ("GET", "/hokusai/keys.js"): "the key page's script",
    ("GET", "/hokusai/keys.css"): "the key page's style sheet",
    ("GET", "/api/2.0/mlflow/users/current"): "the owner's own user record",
}


@dataclass
class LimitNotes:
    """What the request's checks found out, for the gate's answer (a mutable holder: the
    Flask thread writes it, the gate reads it)."""

    lowered: bool = False  # a ceiling took away a permission the owner has
    creating: bool = False  # a can_create key creating an experiment or registered model
    reloaded: object = None  # the key's limits as stored now (read at most once a request)
    create: str | None = None  # the request creates this type (decided before MLflow runs)


_notes: ContextVar[LimitNotes | None] = ContextVar("hokusai_limit_notes", default=None)


def enter(notes: LimitNotes | None) -> Token:
    """Make ``notes`` the current request's (the gate, around the call into the app)."""
    return _notes.set(notes)


def leave(token: Token) -> None:
    _notes.reset(token)


def note_lowered() -> None:
    notes = _notes.get()
    if notes is not None:
        notes.lowered = True


class ResourceLimiter:
    """The key's ceiling on a resource, for the request being served.

    ``identity_of()`` gives the request's identity; ``experiment_name(id)`` an experiment's
    name (for limits that name experiments by name; answers are kept for ``ttl`` seconds, the
    staleness bound); ``reload(key_id)`` the key's stored limits, read when a ``can_create``
    key meets a resource it does not name (it may have created it a moment ago on another
    worker)."""

    def __init__(self, identity_of, experiment_name, reload, ttl: float = 1.0, experiment_id=None):
        self.identity_of = identity_of
        self._experiment_name = experiment_name
        self._experiment_id = experiment_id  # name -> id or None (MLflow 3.18's scoped search)
        self._reload = reload
        self.ttl = ttl
        self._names: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def experiment_name(self, experiment_id: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            hit = self._names.get(experiment_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            name = self._experiment_name(experiment_id)
        except Exception:  # no such experiment: it has no name to match
            name = None
        with self._lock:
            if len(self._names) > 10_000:
                self._names.clear()
            self._names[experiment_id] = (now, name)
        return name

    def ceiling(self, resource_type, resource_id):
        identity = self.identity_of()
        if identity is None or not identity.limits.limited:
            return NOT_LIMITED
        notes = _notes.get()
        if notes is not None and notes.creating:
            return NOT_LIMITED  # a create touches only what it creates
        found = self._ceiling(identity.limits, resource_type, resource_id)
        if found is None and identity.limits.can_create and notes is not None:
            if notes.reloaded is None:
                notes.reloaded = from_json(self._reload(identity.key_id))
            found = self._ceiling(notes.reloaded, resource_type, resource_id)
        return found

    def named_experiment_ids(self) -> set[str] | None:
        """For a limited key: the ids of the experiments its limits name (by id, or by name
        resolved now; with ``can_create``, as stored now); None for a key that is not
        limited. MLflow 3.18 scopes experiment searches in SQL to such a set."""
        identity = self.identity_of()
        if identity is None or not identity.limits.limited:
            return None
        limits = identity.limits
        if limits.can_create:
            limits = from_json(self._reload(identity.key_id))
        ids = set()
        for limit in limits.experiments:
            if limit.kind == "id":
                ids.add(limit.value)
            elif self._experiment_id is not None:
                try:
                    found = self._experiment_id(limit.value)
                except Exception:  # a name no experiment has: nothing to add
                    found = None
                if found is not None:
                    ids.add(found)
        return ids

    def _ceiling(self, limits, resource_type, resource_id) -> str | None:
        if resource_id is None:
            return None
        if resource_type == "experiment":
            return limits.experiment_ceiling(str(resource_id), self.experiment_name)
        if resource_type in ("registered_model", "prompt"):
            return limits.model_ceiling(str(resource_id))
        return None


class LimitedRoutes:
    """Which routes a limited key may call (the route resolution of ``ReadScope``)."""

    def __init__(self, read_scope):
        self.read_scope = read_scope

    def classify(self, path: str, method: str) -> str:
        """``"limited"`` (MLflow decides per resource, capped), ``"create:<type>"``,
        ``"free"`` (touches no resource), or ``"refused"``."""
        method = method.upper()
        if method == "OPTIONS":
            return "free"
        if method == "HEAD":
            method = "GET"
        scope = self.read_scope
        template = scope.route_of(path, method)
        if template is None:
            return "refused"
        name = scope._rpcs.get((template, method))
        if name is not None:
            if name in CREATE_RPCS:
                return f"create:{CREATE_RPCS[name]}"
            return "limited" if name in LIMITED_RPCS else "refused"
        route = (method, canonical(template, scope.static_prefix))
        if route in LIMITED_ROUTES:
            return "limited"
        return "free" if route in RESOURCE_FREE else "refused"

    def is_free(self, path: str, method: str) -> bool:
        """The route touches no resource (and no workspace): ``whoami``, the key page, …"""
        return self.classify(path, method) == "free"

    def refusal(self, identity, path: str, method: str, notes) -> str | None:
        """None if the limited ``identity`` may make this request, else the 403 message."""
        kind = self.classify(path, method)
        if kind.startswith("create:"):
            # The name is in the body: ``may_create`` decides once Flask has read it.
            notes.create = kind.split(":", 1)[1]
            return None
        if kind == "refused":
            return (
                f"This API key ({identity.key_prefix}…) is limited to named experiments and "
                f"registered models, and {method} {path} is not a route it may use."
            )
        return None


def may_create(identity, notes, name) -> str | None:
    """For a create the route table let through: None if the key may create ``name`` (it
    has ``can_create``, or its limits name it: creating it stays inside them), else the 403
    message. The create then runs without caps (it touches only what it creates)."""
    limits = identity.limits
    kind = notes.create
    if limits.can_create:
        notes.creating = True
        return None
    if isinstance(name, str) and name:
        if kind == "experiment":
            named = any(e.kind == "name" and e.value == name for e in limits.experiments)
        else:
            named = limits.model_ceiling(name) is not None
        if named:
            notes.creating = True
            return None
    what = (kind or "resource").replace("_", " ")
    article = "an" if what[0] in "aeiou" else "a"
    return (
        f"This API key ({identity.key_prefix}…) is limited to named experiments and "
        f"registered models and may not create {article} {what} its limits do not name (a key made "
        "with --can-create may; or add the name to this key's limits)."
    )


def current_notes() -> LimitNotes | None:
    return _notes.get()


def denial_message(identity) -> str:
    """The 403 a limited key gets when MLflow's engine refused it."""
    return (
        f"Permission denied: this API key ({identity.key_prefix}…) is limited to named "
        "experiments and registered models, and this request touches one outside its limits "
        "(or beyond the permission its limits give)."
    )


def workspace_refusal(identity, requested: str | None) -> str | None:
    """The 403 for a key limited to one workspace used in another, else None."""
    wanted = identity.limits.workspace
    requested = (requested or "").strip() or None
    # No header: MLflow serves the default workspace ("default" unless configured otherwise).
    if wanted is None or requested == wanted or (requested is None and wanted == "default"):
        return None
    shown = repr(requested) if requested else "the default workspace"
    return (
        f"This API key ({identity.key_prefix}…) is limited to workspace {wanted!r} and may "
        f"not act in {shown}: send the header X-MLflow-Workspace: {wanted}."
    )
