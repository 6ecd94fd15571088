"""The token exchange: a workload's OIDC token in, a short-lived ``hk_…`` key out (RFC 8693
shaped; ``POST /api/2.0/mlflow/hokusai/token-exchange``).

The endpoint needs no key (the token is the credential) and is limited per source address
(``token_exchange_limit``, default 30/minute, counted in the rate-limit store). The token is
checked by ``auth/workload_tokens.py``; then the first trust policy (oldest first) whose
issuer, audience, subject glob and claim conditions all match decides the key: its user, scope,
lifetime, rate limit and allowlist. Policies are read from the database on every exchange, so
a policy deleted a moment ago no longer matches. Every refusal is a 401 with a reason and is
audited (at most once a minute per reason and address); no key is issued.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta, timezone

from mlflow_hokusai.auth.workload_tokens import (
    IssuerUnreachable,
    TokenRejected,
    WorkloadTokenVerifier,
)
from mlflow_hokusai.config import DEFAULT_TOKEN_EXCHANGE_LIMIT
from mlflow_hokusai.errors import ISSUER_DOWN, HokusaiError, Unavailable, invalid_parameter
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.management import KeyManager
from mlflow_hokusai.keys.trust_policies import claim_matches, subject_matches
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.trust_policies import Policy, TrustPolicyStore

_logger = logging.getLogger(__name__)
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MAX_TOKEN_LENGTH = 16 * 1024  # real workload tokens are 1-2 KiB
# The most of an exchange's body the gate lets through (a form: the token and a few fields).
MAX_EXCHANGE_BYTES = 64 * 1024
# A token may be exchanged again once this share of its key's lifetime has passed: the plugin
# renews at half of it at the earliest (client/auth_provider.py), a stolen token mints no more.
REUSE_AFTER_SHARE = 0.45


def _audiences(claims: dict) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]


def matching_policy(policies: list[Policy], claims: dict) -> Policy:
    """The first policy the verified ``claims`` satisfy; else ``TokenRejected`` saying what
    the closest policies wanted (names of claims, never the token)."""
    audiences = set(_audiences(claims))
    subject = claims["sub"]
    for_audience = [p for p in policies if p.audience in audiences]
    by_subject = [p for p in for_audience if subject_matches(subject, p.subject)]
    for policy in by_subject:
        if all(claim_matches(claims, name, value) for name, value in policy.claims.items()):
            return policy
    if not by_subject:
        raise TokenRejected(
            f"no federation policy matches subject {subject!r} for this issuer and audience "
            "(a '*' in a policy's subject does not span ':')"
        )
    unmet = sorted(
        {
            name
            for policy in by_subject
            for name, value in policy.claims.items()
            if not claim_matches(claims, name, value)
        }
    )
    raise TokenRejected(
        f"no federation policy matches: the token's subject matches, but claim condition(s) "
        f"{', '.join(map(repr, unmet))} are not met"
    )


class TokenExchange:
    def __init__(
        self,
        policies: TrustPolicyStore,
        keys: KeyManager,
        audit: AuditLog,
        verifier: WorkloadTokenVerifier,
        rate_limits,
        limit: str = DEFAULT_TOKEN_EXCHANGE_LIMIT,
    ):
        self.policies = policies
        self.keys = keys
        self.audit = audit
        self.verifier = verifier
        self.rate_limits = rate_limits
        self.limit = limit

    def exchange(self, form: dict, source: str | None) -> dict:
        """The RFC 8693 response for the request's parameters ``form``; raises
        ``HokusaiError`` (400 bad request, 401 refused token, 429, 503)."""
        self._throttle(source)
        if form.get("grant_type") != GRANT_TYPE:
            raise invalid_parameter(f"'grant_type' must be {GRANT_TYPE!r}.")
        token_type = form.get("subject_token_type", JWT_TOKEN_TYPE)
        if token_type not in (JWT_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:id_token"):
            raise invalid_parameter(f"'subject_token_type' must be {JWT_TOKEN_TYPE!r}.")
        token = form.get("subject_token")
        if isinstance(token, str) and len(token) > MAX_TOKEN_LENGTH:
            raise invalid_parameter(
                f"'subject_token' is {len(token):,} characters long; at most "
                f"{MAX_TOKEN_LENGTH:,} are accepted (a workload's OIDC token is far shorter)."
            )
        try:
            claims = self.verifier.verify(form.get("subject_token"), self._audiences)
            policy = matching_policy(self.policies.list(claims["iss"]), claims)
            if not self.keys.users.has_user(policy.username):
                raise TokenRejected(
                    f"federation policy {policy.id} acts as user {policy.username!r}, who no "
                    "longer exists"
                )
            self._once(claims, token, policy)
        except TokenRejected as rejected:
            self._refused(rejected.reason, source)
            raise HokusaiError(
                "UNAUTHENTICATED", f"Token exchange refused: {rejected.reason}."
            ) from None
        except IssuerUnreachable as error:
            _logger.warning("token exchange: %s", error)
            raise Unavailable(ISSUER_DOWN) from None
        key, record = self.keys.issue_federated(policy, subject=claims["sub"], source=source)
        return {
            "access_token": key,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": policy.lifetime_seconds,
            "key_id": record.id,
            "policy_id": policy.id,
        }

    def _once(self, claims: dict, token: str, policy: Policy) -> None:
        """Refuse a token exchanged a moment ago (by issuer and ``jti``, else its digest)
        until part of its key's lifetime has passed (``REUSE_AFTER_SHARE``)."""
        jti = claims.get("jti")
        seed = f"{claims['iss']}\0jti\0{jti}" if isinstance(jti, str) and jti else token
        token_id = hashlib.sha256(seed.encode()).hexdigest()
        now = utcnow()
        reuse_after = now + timedelta(seconds=policy.lifetime_seconds * REUSE_AFTER_SHARE)
        expires_at = datetime.fromtimestamp(float(claims["exp"]), timezone.utc).replace(tzinfo=None)
        wait_until = self.policies.claim_token(token_id, reuse_after, max(expires_at, now))
        if wait_until is not None:
            raise TokenRejected(
                "this token was exchanged a moment ago and may be exchanged again after "
                f"{wait_until.replace(microsecond=0).isoformat()}Z (each token once per key "
                "lifetime: use the key you got, or a new token)"
            )

    def _audiences(self, issuer: str) -> list[str]:
        return sorted({p.audience for p in self.policies.list(issuer)})

    def _throttle(self, source: str | None) -> None:
        verdict = self.rate_limits.check(f"exchange:{source or '-'}", self.limit)
        if verdict is not None and not verdict.allowed:
            raise HokusaiError(
                "REQUEST_LIMIT_EXCEEDED",
                f"Too many token exchanges from this address (at most {self.limit}); retry in "
                f"{verdict.reset} s.",
                retry_after=verdict.reset,
            )

    def _refused(self, reason: str, source: str | None) -> None:
        self.audit.refused(
            "exchange-refused",
            key_id=f"exchange:{reason[:60]}",
            username=None,
            source=source,
            detail=reason,
            record_key_id=False,
        )
