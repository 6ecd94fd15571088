"""Where the CLI's ``keys`` commands act: the key database (offline, the operator is trusted
like an admin) or a server's REST API (online, with the caller's own key and rights).

Both give the same small interface over plain dicts (the REST API's JSON shapes), so each
command has one code path and one output format whichever mode it runs in. Rules and input
validation live in ``keys.management`` (offline here, on the server online): one
implementation.

KEY_ID may also be the key itself (a user pastes what they have): offline its id is found by
its digest, online by asking the server who that key is; a key never appears in an error,
at most its display prefix.
"""

from __future__ import annotations

from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys import format as keyformat
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.management import Actor, KeyManager
from mlflow_hokusai.keys.trust_policies import TrustPolicyManager
from mlflow_hokusai.store.audit import AuditStore
from mlflow_hokusai.store.trust_policies import TrustPolicyStore


def _shown(key: str) -> str:
    return f"{key[: keyformat.DISPLAY_PREFIX_LENGTH]}…"


def _parsed(key: str):
    """``key`` (a KEY_ID that looks like a key) checked, or an error showing only its start."""
    try:
        return keyformat.parse_key(key)
    except keyformat.KeyFormatError as e:
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE",
            f"KEY_ID {_shown(key)} looks like a key but is not one ({e}). Give the key's id, "
            "as 'mlflow-hokusai keys list' shows it.",
        ) from None


class Offline:
    def __init__(
        self,
        key_store,
        users,
        environment: str,
        note,
        rules=None,
        default_rate_limit=None,
        where: str = "",
        webhooks: bool = False,
    ):
        self.where = where  # the database, as the operator should see it
        self.store = key_store
        self.actor = Actor.operator()
        self.manager = KeyManager(
            key_store,
            users,
            AuditLog(AuditStore(key_store.engine)),
            environment=environment,
            on_note=note,
            rules=rules,
            default_rate_limit=default_rate_limit,
            webhooks=webhooks,  # key events are queued here and sent by the server
        )
        self.federation = TrustPolicyManager(
            TrustPolicyStore(key_store.engine), self.manager, self.manager.audit
        )

    def create(self, **fields) -> tuple[str, dict]:
        """``fields``: ``KeyManager.create``'s (username, name, scope, expires_in_days,
        make_admin, allowed_ips, rate_limit and the resource limits)."""
        key, record = self.manager.create(self.actor, **fields)
        return key, self.manager.describe(record)

    def key_id(self, key_id: str) -> str:
        """``key_id``, or the id of the key ``key_id`` if it is one (found by its digest)."""
        if not keyformat.looks_like_key(key_id):
            return key_id
        record = self.store.lookup(_parsed(key_id).digest)
        if record is None:
            raise HokusaiError(
                "RESOURCE_DOES_NOT_EXIST",
                f"The key {_shown(key_id)} is not in the database {self.where}.",
            )
        return record.id

    def update_limits(self, key_id, **limits) -> dict:
        key_id = self.key_id(key_id)
        return self.manager.describe(self.manager.update_limits(self.actor, key_id, **limits))

    def list(self, *, username, everyone) -> list[dict]:
        # Offline, no --user means every user's keys (the operator may see them all).
        records = self.manager.list(
            self.actor, username=username, everyone=everyone or username is None
        )
        return self.manager.described(self.actor, records)

    def revoke(self, key_id) -> dict:
        return self.manager.describe(self.manager.revoke(self.actor, self.key_id(key_id)))

    def rotate(self, key_id, grace_seconds=None) -> tuple[str, dict, dict]:
        key, record, old = self.manager.rotate(self.actor, self.key_id(key_id), grace_seconds)
        return key, self.manager.describe(record), self.manager.describe(old)

    def create_policy(self, **fields) -> dict:
        return self.federation.create(self.actor, **fields).to_dict()

    def list_policies(self) -> list[dict]:
        return [p.to_dict() for p in self.federation.list(self.actor)]

    def get_policy(self, policy_id) -> dict:
        return self.federation.get(self.actor, policy_id).to_dict()

    def delete_policy(self, policy_id) -> dict:
        return self.federation.delete(self.actor, policy_id).to_dict()


class Online:
    def __init__(self, tracking_uri: str, api_key: str):
        from mlflow_hokusai.client.keys import RestKeys

        self.where = tracking_uri
        self.client = RestKeys(tracking_uri, api_key)

    def key_id(self, key_id: str) -> str:
        """``key_id``, or the id of the key ``key_id`` if it is one: the server says who the
        key is (``whoami`` with that key)."""
        from mlflow.exceptions import MlflowException

        from mlflow_hokusai.client.keys import RestKeys

        if not keyformat.looks_like_key(key_id):
            return key_id
        key = _parsed(key_id).key
        try:
            found = RestKeys(self.where, key).whoami().get("key_id")
        except MlflowException as e:
            found, why = None, keyformat.redact(e.message)
        else:
            why = "it is not an API key of this server"
        if not found:
            raise HokusaiError(
                "INVALID_PARAMETER_VALUE",
                f"KEY_ID {_shown(key)} is a key, and {self.where} did not say which ({why}). "
                "Give the key's id, as 'mlflow-hokusai keys list' shows it.",
            )
        return found

    def create(self, *, name, make_admin=False, **fields) -> tuple[str, dict]:
        """The same fields as offline; ``make_admin`` is offline only (the CLI refuses
        ``--admin`` online)."""
        created = self.client.create_api_key(name=name or None, **fields)
        return created.key, created.to_dict()

    def update_limits(self, key_id, **limits) -> dict:
        return self.client.update_api_key_limits(self.key_id(key_id), **limits).to_dict()

    def list(self, *, username, everyone) -> list[dict]:
        return [k.to_dict() for k in self.client.list_api_keys(username, all_users=everyone)]

    def revoke(self, key_id) -> dict:
        return self.client.revoke_api_key(self.key_id(key_id)).to_dict()

    def rotate(self, key_id, grace_seconds=None) -> tuple[str, dict, dict]:
        key_id = self.key_id(key_id)
        new, old = self.client.rotate_api_key_with_old(key_id, grace_seconds=grace_seconds)
        return new.key, new.to_dict(), old.to_dict()

    def create_policy(self, **fields) -> dict:
        return self.client.create_federation_policy(**fields)

    def list_policies(self) -> list[dict]:
        return self.client.list_federation_policies()

    def get_policy(self, policy_id) -> dict:
        return self.client.get_federation_policy(policy_id)

    def delete_policy(self, policy_id) -> dict:
        return self.client.delete_federation_policy(policy_id)

    def audit_events(self, *, user, since, event, limit) -> list[dict]:
        """The events the CLI lists offline, in the same shape (the REST API's), with this
        key's rights: an admin sees every event, anyone else their own."""
        records = list(self.client.iter_audit_events(username=user, since=since, event=event))
        return records[-limit:] if limit else records
