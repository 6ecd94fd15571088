"""Federation policies: which workload OIDC tokens (GitHub Actions, GitLab CI, Kubernetes) may be
exchanged for a short-lived key, and what that key may do. One implementation for the REST
endpoints and the offline CLI; admins only; every change audited.

A policy names the token's issuer (exact), audience, subject (exact or a glob such as
``repo:org/*:ref:refs/heads/main``: ``*`` is any run of characters but ``:``, ``?`` one
character but ``:``, everything else is itself, so a ``*`` never spans a field of the subject)
and optional claim conditions (``repository_owner=org``), and
the key it yields: the MLflow user it acts as, its scope, lifetime (default 15 minutes, at most
one hour), and optionally a rate limit and an IP allowlist. Checking a token is the exchange's
(``auth/token_exchange.py``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import urlsplit

from mlflow_hokusai.errors import HokusaiError, invalid_parameter
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.management import (
    Actor,
    KeyManager,
    parse_allowed_ips,
    parse_key_rate_limit,
    parse_scope,
    parse_username,
)
from mlflow_hokusai.store.trust_policies import Policy, PolicyNotFound, TrustPolicyStore
from mlflow_hokusai.text import MAX_NAME_LENGTH, check_name, has_unsafe_chars

DEFAULT_LIFETIME_SECONDS = 15 * 60
MIN_LIFETIME_SECONDS = 60
MAX_LIFETIME_SECONDS = 60 * 60
MAX_CLAIMS = 20
# Checked by the JOSE library or by the policy's own fields: not claim conditions.
RESERVED_CLAIMS = frozenset({"iss", "aud", "sub", "exp", "nbf", "iat", "jti"})


def _text(value, field: str, longest: int) -> str:
    return check_name(
        value,
        longest,
        error=invalid_parameter,
        empty=f"'{field}' is required: a non-empty string.",
        too_long=f"'{field}' must be at most {longest} characters without control or invisible "
        "formatting characters.",
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_issuer(value) -> str:
    """The issuer URL exactly as tokens carry it in ``iss``: https (http only on loopback),
    no query or fragment."""
    issuer = _text(value, "issuer", 512)
    parts = urlsplit(issuer)
    secure = parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname or ""))
    if not parts.hostname or parts.query or parts.fragment or not secure:
        raise invalid_parameter(
            f"'issuer' must be the issuer's https URL exactly as its tokens name it in 'iss' "
            f"(e.g. https://token.actions.githubusercontent.com), not {issuer!r}."
        )
    return issuer


def parse_lifetime(value) -> int:
    if value is None:
        return DEFAULT_LIFETIME_SECONDS
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_parameter(
            f"'lifetime_seconds' must be a whole number of seconds, not {value!r}."
        )
    if not MIN_LIFETIME_SECONDS <= value <= MAX_LIFETIME_SECONDS:
        raise invalid_parameter(
            f"'lifetime_seconds' must be between {MIN_LIFETIME_SECONDS} and "
            f"{MAX_LIFETIME_SECONDS} (one hour), not {value}."
        )
    return value


def parse_claims(value) -> dict[str, str]:
    """Claim conditions: an object of claim name -> required value (compared as text)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_parameter("'claims' must be an object of claim name -> required value.")
    if len(value) > MAX_CLAIMS:
        raise invalid_parameter(f"'claims' may have at most {MAX_CLAIMS} conditions.")
    claims = {}
    for name, required in value.items():
        name = _text(name, "claims", 128)
        if name in RESERVED_CLAIMS:
            raise invalid_parameter(
                f"'claims' may not set {name!r}: use the policy's issuer, audience and subject "
                "(token times are always checked)."
            )
        if isinstance(required, bool) or not isinstance(required, (str, int)):
            raise invalid_parameter(f"'claims' value of {name!r} must be a string.")
        claims[name] = _text(str(required), f"claims.{name}", 512)
    return claims


def parse_policy_id(value) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise invalid_parameter("'policy_id' is required: the id shown by policies/list.")
    return value.strip()


@functools.lru_cache(maxsize=1024)
def _subject_pattern(glob: str) -> re.Pattern:
    parts = []
    for char in glob:
        if char == "*":
            parts.append("[^:]*")
        elif char == "?":
            parts.append("[^:]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts))


def subject_matches(subject: str, glob: str) -> bool:
    """Whether a token's ``sub`` matches a policy's subject glob: ``*`` any run of characters
    but ``:``, ``?`` any one but ``:``, all else literal. GitHub's subjects are fields joined by
    ``:`` (``repo:ORG/REPO:environment:ENV``), so ``repo:org/*:ref:refs/heads/main`` cannot
    admit ``repo:org/x:environment:prod:ref:refs/heads/main``. A subject with control or
    invisible characters matches nothing."""
    if has_unsafe_chars(subject):
        return False
    return _subject_pattern(glob).fullmatch(subject) is not None


def claim_matches(claims: dict, name: str, required: str) -> bool:
    value = claims.get(name)
    if isinstance(value, bool):
        value = "true" if value else "false"
    return value is not None and not isinstance(value, (dict, list)) and str(value) == required


class TrustPolicyManager:
    def __init__(self, store: TrustPolicyStore, keys: KeyManager, audit: AuditLog):
        self.store = store
        self.keys = keys
        self.audit = audit

    @staticmethod
    def _admin(actor: Actor, what: str, write: bool = True) -> None:
        if not actor.is_admin:
            raise HokusaiError("PERMISSION_DENIED", f"Only admins may {what} federation policies.")
        if write and actor.scope != "write":
            raise HokusaiError(
                "PERMISSION_DENIED",
                f"This API key is read-only: it cannot {what} federation policies.",
            )
        restricted = actor.federated_key or actor.limited_key
        if write and restricted is not None:  # a policy mints keys: such a key mints none
            raise HokusaiError(
                "PERMISSION_DENIED",
                f"This API key ({restricted}…) is federated or resource-limited: it cannot "
                f"{what} federation policies. Use an ordinary admin key.",
            )

    def _audit(self, event: str, actor: Actor, policy: Policy, detail: str) -> None:
        """An audit event about ``policy``: its id, issuer and subject, then ``detail``."""
        detail = f"policy {policy.id} issuer={policy.issuer} subject={policy.subject} {detail}"
        self.audit.record(event, username=policy.username, detail=detail, **actor.audited())

    def create(
        self,
        actor: Actor,
        *,
        issuer=None,
        audience=None,
        subject=None,
        username=None,
        scope=None,
        lifetime_seconds=None,
        claims=None,
        rate_limit=None,
        allowed_ips=None,
    ) -> Policy:
        self._admin(actor, "create")
        fields = {
            "issuer": parse_issuer(issuer),
            "audience": _text(audience, "audience", MAX_NAME_LENGTH),
            "subject": _text(subject, "subject", 512),
            "username": parse_username(username),
            "scope": parse_scope(scope),
            "lifetime_seconds": parse_lifetime(lifetime_seconds),
            "claims": parse_claims(claims),
            "allowed_ips": parse_allowed_ips(allowed_ips),
        }
        fields["rate_limit"] = self.keys.rate_limit_for(actor, parse_key_rate_limit(rate_limit))
        self.keys.ensure_user(actor, fields["username"])
        policy = self.store.add(**fields, created_by=actor.name)
        self._audit(
            "policy-created",
            actor,
            policy,
            f"scope={policy.scope} lifetime={policy.lifetime_seconds}s",
        )
        return policy

    def list(self, actor: Actor) -> list[Policy]:
        self._admin(actor, "list", write=False)
        return self.store.list()

    def get(self, actor: Actor, policy_id) -> Policy:
        self._admin(actor, "read", write=False)
        return self._existing(parse_policy_id(policy_id))

    def _existing(self, policy_id: str) -> Policy:
        try:
            return self.store.get(policy_id)
        except PolicyNotFound:
            raise HokusaiError(
                "RESOURCE_DOES_NOT_EXIST", f"There is no federation policy with id {policy_id!r}."
            ) from None

    def delete(self, actor: Actor, policy_id) -> Policy:
        """Delete the policy and revoke every live key it issued (audited): a key exchanged
        under a policy never outlives it."""
        self._admin(actor, "delete")
        policy = self._existing(parse_policy_id(policy_id))
        self.store.delete(policy.id)
        revoked = self.keys.revoke_federated(actor, policy.id)
        self._audit("policy-deleted", actor, policy, f"keys revoked={len(revoked)}")
        return policy
