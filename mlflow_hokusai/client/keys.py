"""Client side of the key-management REST API, shared by the app client and the CLI's online
mode. ``KeyManagementMixin`` needs one method from its host class, MLflow's
``_request(endpoint, method, **kwargs) -> dict`` (as in ``AuthServiceClient``); errors are
MLflow's: a ``RestException`` (an ``MlflowException``) carrying the server's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

BASE = "/api/2.0/mlflow/hokusai"
WHOAMI = f"{BASE}/whoami"
CREATE_API_KEY = f"{BASE}/api-keys/create"
LIST_API_KEYS = f"{BASE}/api-keys/list"
REVOKE_API_KEY = f"{BASE}/api-keys/revoke"
ROTATE_API_KEY = f"{BASE}/api-keys/rotate"
UPDATE_API_KEY = f"{BASE}/api-keys/update"
FEDERATION_POLICIES = f"{BASE}/federation/policies"
AUDIT_EVENTS = f"{BASE}/audit/list"
SESSIONS = f"{BASE}/sessions"
TOKEN_EXCHANGE = f"{BASE}/token-exchange"


def _given(fields: dict) -> dict:
    """The fields a call gave (None: left out, so the server's default applies)."""
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class ApiKey:
    """A key's metadata; ``key`` holds the plaintext only right after create or rotate."""

    id: str
    username: str
    name: str = ""
    scope: str = "write"
    prefix: str = ""
    status: str = "active"
    created_at: str | None = None
    expires_at: str | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None
    rotation_ends_at: str | None = None
    replaced_by: str | None = None
    allowed_ips: list[str] = field(default_factory=list)
    rate_limit: str | None = None
    # {"experiments", "registered_models", "workspace", "can_create"}; None: unlimited
    limits: dict | None = None
    expiring: bool = False  # active and within the server's expiry warning (7 days)
    # The last addresses it was used from, newest first: [{"address", "last_seen_at"}, …]
    # (its owner and admins only).
    addresses: list[dict] = field(default_factory=list)
    key: str | None = None

    @classmethod
    def from_json(cls, data: dict, key: str | None = None) -> ApiKey:
        known = {f.name for f in fields(cls)} - {"key"}
        return cls(**{k: v for k, v in data.items() if k in known}, key=key)

    def to_dict(self) -> dict:
        """The metadata as the server sends it (never the plaintext key)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "key"}

    def __repr__(self) -> str:  # keep the plaintext out of logs and tracebacks
        return (
            f"ApiKey(id={self.id!r}, username={self.username!r}, scope={self.scope!r}, "
            f"status={self.status!r})"
        )


class KeyManagementMixin:
    def whoami(self) -> dict:
        """The caller: ``{"username", "is_admin", "key_id", "scope", "limits"}``."""
        return self._request(WHOAMI, "GET")

    def create_api_key(
        self,
        name: str | None = None,
        scope: str | None = None,
        expires_in_days: int | None = None,
        username: str | None = None,
        allowed_ips: list[str] | None = None,
        rate_limit: str | None = None,
        experiments: list | None = None,
        registered_models: list | None = None,
        workspace: str | None = None,
        can_create: bool | None = None,
    ) -> ApiKey:
        """Create a key (for ``username``: admins only; usable only from ``allowed_ips``, up
        to 20 addresses or CIDR ranges, when given; at most ``rate_limit`` requests, e.g.
        ``"1000/hour"``, or ``"unlimited"``; default: the server's ``default_rate_limit``). The
        result's ``.key`` is the plaintext, shown this once.

        Resource limits: ``experiments`` (ids or names) and ``registered_models`` (names or
        ``prefix*``), each entry a string (``"12"``, ``"ci-model=READ"``) or
        ``{"id"|"name": …, "permission": "READ"|"EDIT"|"MANAGE"}``; ``workspace``;
        ``can_create`` lets the key create experiments and models (added to its limits)."""
        body = {
            "name": name,
            "scope": scope,
            "expires_in_days": expires_in_days,
            "username": username,
            "allowed_ips": allowed_ips,
            "rate_limit": rate_limit,
            "experiments": experiments,
            "registered_models": registered_models,
            "workspace": workspace,
            "can_create": can_create,
        }
        resp = self._request(CREATE_API_KEY, "POST", json=_given(body))
        return ApiKey.from_json(resp["api_key"], key=resp["key"])

    def list_api_keys(self, username: str | None = None, all_users: bool = False) -> list[ApiKey]:
        """Your keys; admins may name a ``username`` or ask for ``all_users``."""
        params = {}
        if username is not None:
            params["username"] = username
        if all_users:
            params["all"] = "true"
        resp = self._request(LIST_API_KEYS, "GET", params=params)
        return [ApiKey.from_json(item) for item in resp.get("api_keys", [])]

    def update_api_key_limits(
        self,
        key_id: str,
        experiments: list | None = None,
        registered_models: list | None = None,
        workspace: str | None = None,
        can_create: bool | None = None,
        unlimited: bool = False,
    ) -> ApiKey:
        """Change a key's resource limits: the arguments given replace the key's (``[]``
        names none), the others stay; ``unlimited=True`` removes them all."""
        body = {
            "key_id": key_id,
            "experiments": experiments,
            "registered_models": registered_models,
            "workspace": workspace,
            "can_create": can_create,
        }
        body = _given(body)
        if unlimited:
            body["unlimited"] = True
        resp = self._request(UPDATE_API_KEY, "POST", json=body)
        return ApiKey.from_json(resp["api_key"])

    def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke a key by id; every server refuses it within a second."""
        resp = self._request(REVOKE_API_KEY, "POST", json={"key_id": key_id})
        return ApiKey.from_json(resp["api_key"])

    def rotate_api_key(self, key_id: str, grace_seconds: int | None = None) -> ApiKey:
        """Replace a key and return the replacement (same owner, name, scope and lifetime),
        with the plaintext in ``.key``. The old key stops working at once, or after
        ``grace_seconds`` (default: the server's ``rotation_grace``)."""
        return self.rotate_api_key_with_old(key_id, grace_seconds=grace_seconds)[0]

    def rotate_api_key_with_old(
        self, key_id: str, grace_seconds: int | None = None
    ) -> tuple[ApiKey, ApiKey]:
        """``rotate_api_key``, also returning the old key as it is now (``status`` rotating
        or revoked, ``rotation_ends_at``)."""
        body = {"key_id": key_id}
        if grace_seconds is not None:
            body["grace_seconds"] = grace_seconds
        resp = self._request(ROTATE_API_KEY, "POST", json=body)
        return ApiKey.from_json(resp["api_key"], key=resp["key"]), ApiKey.from_json(
            resp["replaced"]
        )

    # -- the audit trail ----------------------------------------------------------------------
    def list_audit_events(
        self,
        username: str | None = None,
        event: str | None = None,
        since: str | None = None,
        key_id: str | None = None,
        max_results: int | None = None,
        page_token: str | None = None,
    ) -> tuple[list[dict], str | None]:
        """One page of audit events, oldest first, and the next page's token (None: the
        last). Admins see every event (``username``: about that user's keys or by that
        actor); anyone else the events about their own keys. ``since``: an ISO date/time or
        a duration ago (``1h``, ``7d``)."""
        params = {
            "username": username,
            "event": event,
            "since": since,
            "key_id": key_id,
            "max_results": max_results,
            "page_token": page_token,
        }
        resp = self._request(AUDIT_EVENTS, "GET", params=_given(params))
        return resp.get("events", []), resp.get("next_page_token")

    def iter_audit_events(self, **filters):
        """Every audit event matching ``filters`` (as ``list_audit_events``), page by page."""
        token = None
        while True:
            events, token = self.list_audit_events(**filters, page_token=token)
            yield from events
            if not token:
                return

    # -- keyless CI: federation policies (admins) ---------------------------------------------
    def create_federation_policy(
        self,
        issuer: str,
        audience: str,
        subject: str,
        username: str,
        scope: str | None = None,
        lifetime_seconds: int | None = None,
        claims: dict | None = None,
        rate_limit: str | None = None,
        allowed_ips: list[str] | None = None,
    ) -> dict:
        """Let workloads whose OIDC token comes from ``issuer`` for ``audience``, with a
        subject matching ``subject`` (exact or a glob) and the ``claims`` given, exchange it
        for a key acting as ``username`` (``scope``; ``lifetime_seconds``, default 900, at
        most 3600). Returns the policy (with its ``id``)."""
        body = {
            "issuer": issuer,
            "audience": audience,
            "subject": subject,
            "username": username,
            "scope": scope,
            "lifetime_seconds": lifetime_seconds,
            "claims": claims,
            "rate_limit": rate_limit,
            "allowed_ips": allowed_ips,
        }
        resp = self._request(f"{FEDERATION_POLICIES}/create", "POST", json=_given(body))
        return resp["policy"]

    def list_federation_policies(self) -> list[dict]:
        return self._request(f"{FEDERATION_POLICIES}/list", "GET").get("policies", [])

    def get_federation_policy(self, policy_id: str) -> dict:
        resp = self._request(f"{FEDERATION_POLICIES}/get", "GET", params={"policy_id": policy_id})
        return resp["policy"]

    def delete_federation_policy(self, policy_id: str) -> dict:
        """Delete a policy: its tokens are refused from the next exchange on (keys already
        issued under it keep working until they expire; revoke them to end them now)."""
        resp = self._request(f"{FEDERATION_POLICIES}/delete", "POST", json={"policy_id": policy_id})
        return resp["policy"]

    def list_sessions(self, username: str | None = None, include_ended: bool = False) -> list:
        """Browser sessions (sign-in): your own; admins anyone's, or a ``username``'s.
        ``include_ended`` adds revoked and expired ones."""
        params = {"username": username} if username is not None else {}
        if include_ended:
            params["all"] = "true"
        return self._request(f"{SESSIONS}/list", "GET", params=params).get("sessions", [])

    def revoke_sessions(self, session_id: str | None = None, username: str | None = None):
        """End one session, or every session of ``username`` ("sign out everywhere" with your
        own name): the ids revoked."""
        body = _given({"session_id": session_id, "username": username})
        return self._request(f"{SESSIONS}/revoke", "POST", json=body).get("revoked", [])


class RestKeys(KeyManagementMixin):
    """Key management against ``tracking_uri`` with an explicit key (the CLI's online mode),
    without importing MLflow's server packages."""

    def __init__(self, tracking_uri: str, api_key: str):
        self.tracking_uri = tracking_uri.rstrip("/")
        self._api_key = api_key

    def _request(self, endpoint, method, **kwargs) -> dict:
        from mlflow_hokusai import _mlflow

        return _mlflow.rest_call(self.tracking_uri, self._api_key, endpoint, method, **kwargs)
