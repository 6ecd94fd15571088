"""Checking a workload's OIDC token (a JWT) with PyJWT and ``cryptography``, never by hand.

- The issuer's signing keys come from its JWKS, found through
  ``<issuer>/.well-known/openid-configuration`` (the document must name the same issuer). Both
  are cached (an hour); a token signed with a key id (``kid``) the cache does not have makes the
  server fetch the JWKS again, at most once a minute per issuer and worker, so an issuer's key
  rotation is picked up without a restart and a flood of made-up ``kid``s cannot make us hammer
  the issuer.
- Algorithms: RS256 and ES256 only (never ``none``, never HMAC: a public key is not a secret).
- ``iss`` exact, ``aud`` one of the trusted audiences, ``exp``/``nbf``/``iat`` with at most 60 s
  leeway, and ``iat`` no older than the maximum token age.

Every refusal is a ``TokenRejected`` with a reason for the operator (wrong audience, expired,
unknown signing key …); it never contains the token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:  # PyJWT (and the cryptography it loads) is imported on first use: start-up
    import jwt  # of a worker is half a second shorter, and most servers never exchange a token

ALGORITHMS = ("RS256", "ES256")
_KEY_TYPE = {"RS256": "RSA", "ES256": "EC"}  # the key type each algorithm verifies with
LEEWAY_SECONDS = 60
DEFAULT_MAX_TOKEN_AGE_SECONDS = 60 * 60
REFETCH_INTERVAL_SECONDS = 60.0
KEYS_TTL_SECONDS = 60 * 60.0
FETCH_TIMEOUT_SECONDS = 5.0


class TokenRejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class IssuerUnreachable(Exception):
    """The issuer's discovery document or JWKS could not be fetched (a 503, not the token's
    fault)."""


def _fetch_json(url: str) -> dict:
    response = requests.get(url, timeout=FETCH_TIMEOUT_SECONDS, allow_redirects=False)
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return data


class _IssuerKeys:
    def __init__(self):
        self.keys: dict[str | None, jwt.PyJWK] = {}
        self.fetched = -float("inf")  # monotonic time of the last JWKS fetch
        self.refetched = -float("inf")  # ... of the last one made for an unknown kid
        self.lock = threading.Lock()


def _unverified(token) -> tuple[dict, dict]:
    """The token's header and claims, not verified yet; its algorithm is one we accept."""
    if not isinstance(token, str) or not token.strip():
        raise TokenRejected("'subject_token' is required: the workload's OIDC token (a JWT)")
    import jwt

    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenRejected("the subject token is not a well-formed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise TokenRejected(
            f"the token's algorithm {algorithm!r} is not accepted (only {', '.join(ALGORITHMS)})"
        )
    return header, unverified


def _decoded(token: str, key, algorithm: str, audiences, issuer: str, audience) -> dict:
    """The token's claims, its signature, audience, issuer and times verified (``audience``:
    the one it claims, for the refusal)."""
    import jwt

    try:
        return jwt.decode(
            token,
            key=key.key,  # the cryptography public key (every PyJWT 2.x takes it)
            algorithms=[algorithm],
            audience=audiences,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "sub", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected("the token is not valid yet (nbf or iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise TokenRejected(
            f"wrong audience: no federation policy for issuer {issuer!r} accepts the "
            f"token's audience {audience!r}"
        ) from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenRejected(f"the token has no {error.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("the token's signature does not verify") from None
    except (jwt.PyJWTError, TypeError, ValueError) as error:  # e.g. a key of another curve
        raise TokenRejected(f"the token is not valid ({type(error).__name__})") from None


class WorkloadTokenVerifier:
    def __init__(
        self,
        *,
        fetch_json: Callable[[str], dict] = _fetch_json,
        max_token_age: int = DEFAULT_MAX_TOKEN_AGE_SECONDS,
        clock=time.time,
    ):
        self._fetch = fetch_json
        self.max_token_age = max_token_age
        self._clock = clock
        self._issuers: dict[str, _IssuerKeys] = {}
        self._lock = threading.Lock()

    def verify(self, token: str, audiences_of: Callable[[str], list[str]]) -> dict:
        """The token's verified claims. ``audiences_of(issuer)``: the audiences the server's
        policies accept from that issuer (none: the issuer is not trusted). Raises
        ``TokenRejected`` or ``IssuerUnreachable``."""
        header, unverified = _unverified(token)
        algorithm = header.get("alg")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str):
            raise TokenRejected("the token names no issuer ('iss')")
        audiences = audiences_of(issuer)
        if not audiences:
            raise TokenRejected(f"no federation policy trusts tokens from issuer {issuer!r}")
        key = self._signing_key(issuer, header.get("kid"))
        kid = header.get("kid")
        if key.key_type != _KEY_TYPE[algorithm] or key.algorithm_name != algorithm:
            raise TokenRejected(
                f"the token's header says {algorithm} but the issuer's key {kid!r} is an "
                f"{key.key_type} key for {key.algorithm_name}"
            )
        claims = _decoded(token, key, algorithm, audiences, issuer, unverified.get("aud"))
        age = self._clock() - float(claims["iat"])
        if age > self.max_token_age + LEEWAY_SECONDS:
            raise TokenRejected(
                f"the token is too old: issued {int(age)} s ago, and this server accepts "
                f"tokens up to {self.max_token_age} s old"
            )
        if not isinstance(claims.get("sub"), str):
            raise TokenRejected("the token's subject ('sub') is not a string")
        return claims

    # -- the issuer's keys ---------------------------------------------------------------------
    def _entry(self, issuer: str) -> _IssuerKeys:
        with self._lock:
            return self._issuers.setdefault(issuer, _IssuerKeys())

    def _signing_key(self, issuer: str, kid) -> jwt.PyJWK:
        entry = self._entry(issuer)
        with entry.lock:
            now = time.monotonic()
            if now - entry.fetched > KEYS_TTL_SECONDS:
                entry.keys, entry.fetched = self._load_keys(issuer), now
            elif kid not in entry.keys and now - entry.refetched >= REFETCH_INTERVAL_SECONDS:
                entry.keys, entry.fetched = self._load_keys(issuer), now
                entry.refetched = now
            key = entry.keys.get(kid)
            if key is None and kid is None and len(entry.keys) == 1:
                key = next(iter(entry.keys.values()))
        if key is None:
            raise TokenRejected(
                f"the token is signed with a key ({kid!r}) that issuer {issuer!r} does not publish"
            )
        if key.key_type not in ("RSA", "EC"):  # e.g. an "oct" (HMAC) key: never a public key
            raise TokenRejected(f"the issuer's key {kid!r} is not an RSA or EC key")
        return key

    def _load_keys(self, issuer: str) -> dict:
        discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            discovery = self._fetch(discovery_url)
            if discovery.get("issuer") != issuer:
                raise ValueError(f"{discovery_url} names issuer {discovery.get('issuer')!r}")
            jwks = self._fetch(str(discovery["jwks_uri"]))
        except (requests.RequestException, ValueError, KeyError) as error:
            raise IssuerUnreachable(
                f"could not fetch the signing keys of issuer {issuer!r}: {error}"
            ) from None
        import jwt

        keys = {}
        for data in jwks.get("keys", []):
            if not isinstance(data, dict) or data.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # a key type or algorithm we do not use
            keys[data.get("kid")] = key
        return keys
