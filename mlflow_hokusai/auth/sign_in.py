"""Signing people in with the organisation's OpenID provider (Authlib does the protocol).

The authorization code flow with PKCE S256, ``state`` and ``nonce``:

1. ``start``: a fresh state, nonce and code verifier; the sign-in under way is stored by the
   state's digest (``store/sessions.py``) and the browser goes to the provider;
2. ``finish``: the callback's ``state`` must be the one this browser started with (a cookie
   binds it) and is taken from the store once (a replayed state finds nothing); the code is
   exchanged with the verifier (the provider refuses a reused code); the ID token is checked
   against the provider's JWKS (signature, ``iss``, ``aud``, ``exp``, ``nonce``); userinfo
   is read (many providers put only ``sub`` in the ID token) and must be about the same
   ``sub``; then the person's name and groups decide who signs in and as what.

Every refusal is a ``Refused`` with a reason for the audit trail and a sentence for the
person; it never contains a token or the client secret.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from mlflow_hokusai.auth.sessions import Opened, SessionManager
from mlflow_hokusai.config import Settings
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.sessions import Attempt, SessionStore, digest_of

with warnings.catch_warnings():  # Authlib 1.6+ points at joserfc; authlib.jose stays until 2.0
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.jose.errors import JoseError

_logger = logging.getLogger(__name__)
# The sign-in routes (under MLflow's root and the URL prefix; public: they are the way in).
LOGIN, CALLBACK, LOGOUT = "/hokusai/login", "/hokusai/auth/callback", "/hokusai/logout"
ROUTES = (LOGIN, CALLBACK, LOGOUT)
SIGN_IN_SECONDS = 600  # how long a person may take at the provider
ENDED_KEPT_DAYS = 7  # ended sessions stay listed (``sessions list --all``) this long
METADATA_TTL_SECONDS = 300.0
JWKS_REFETCH_SECONDS = 5.0  # a JWKS fetched anew for an unknown signing key, at most this often
LEEWAY_SECONDS = 60
TIMEOUT_SECONDS = 10.0
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


class Refused(Exception):
    """A sign-in refused: ``reason`` (short, for the audit trail), ``message`` (for the person),
    the HTTP status of the page, and the user name when it is known."""

    def __init__(self, reason: str, message: str, status: int = 403, username: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.username = username


@dataclass(frozen=True)
class Person:
    username: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class SignedIn:
    opened: Opened
    username: str
    next_path: str
    base: str


def local_next(value: str | None, base: str) -> str:
    """Where to go after signing in: a path on this server only (no scheme, no host, no
    ``//`` or ``\\`` that a browser would read as another host). Default: the UI's home."""
    if value is None or value == "":
        return (base or "") + "/"
    if (
        len(value) > 2000
        or not value.startswith("/")
        or value.startswith("//")
        or _CONTROL.search(value)
        or urlsplit(value).netloc
    ):
        raise Refused(
            "open-redirect",
            "'next' must be a path on this server, such as /#/experiments.",
            status=400,
        )
    return value


def check_id_token(
    id_token: str, jwks: dict, *, issuer: str, client_id: str, nonce: str, now: float | None = None
) -> dict:
    """The ID token's claims once its signature (by a key of ``jwks``), ``iss``, ``aud``,
    ``exp`` and ``nonce`` are right; raises ``Refused`` saying which is not."""
    options = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "exp": {"essential": True},
        "sub": {"essential": True},
        "nonce": {"essential": True, "value": nonce},
    }
    try:
        keys = JsonWebKey.import_key_set(jwks)
        claims = JsonWebToken(list(ALGORITHMS)).decode(id_token, keys, claims_options=options)
        claims.validate(now=now, leeway=LEEWAY_SECONDS)
    except JoseError as error:
        raise Refused(
            "bad-id-token",
            f"The identity provider's ID token was refused ({error.error}: "
            f"{error.description or 'invalid'}).",
        ) from None
    except (ValueError, TypeError, KeyError):
        raise Refused("bad-id-token", "The identity provider's ID token is malformed.") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise Refused("bad-id-token", "The ID token was issued to another party (azp).")
    return dict(claims)


def person_from_claims(claims: dict, settings: Settings) -> Person:
    """The user name and groups from the claims (ID token and userinfo), by the settings'
    claim names; a missing or malformed claim refuses the sign-in, saying which."""
    name_claim = settings.oidc_username_claim
    username = claims.get(name_claim)
    if username is None and name_claim != "email":
        username = claims.get("email")
    if not isinstance(username, str) or not username.strip() or len(username) > 255:
        raise Refused(
            "missing-claim",
            f"The identity provider sent no usable '{name_claim}' (or 'email') claim, which "
            "names you on this server; ask its administrator to release it.",
        )
    groups_claim = settings.oidc_groups_claim
    groups = claims.get(groups_claim)
    uses_groups = (
        settings.oidc_allowed_groups or settings.oidc_admin_groups or settings.oidc_group_roles
    )
    if groups is None and uses_groups:
        raise Refused(
            "missing-claim",
            f"The identity provider sent no '{groups_claim}' claim, which this server needs "
            "to decide what you may do; ask its administrator to release it.",
            username=username,
        )
    if groups is None:
        groups = []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Refused(
            "malformed-claim",
            f"The identity provider's '{groups_claim}' claim is not a list of group names.",
            username=username,
        )
    return Person(username.strip(), tuple(groups))


class _Provider:
    """The provider's discovery document and JWKS, cached per worker."""

    def __init__(self, issuer: str):
        self.issuer = issuer
        self._lock = threading.Lock()
        self._metadata: dict | None = None
        self._fetched = -float("inf")
        self._jwks: dict | None = None
        self._jwks_fetched = -float("inf")

    def metadata(self) -> dict:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._fetched > METADATA_TTL_SECONDS:
                data = _get_json(f"{self.issuer}/.well-known/openid-configuration")
                if data.get("issuer") != self.issuer:
                    raise Refused(
                        "provider-error",
                        "The identity provider's discovery document names another issuer.",
                        status=502,
                    )
                self._metadata, self._fetched = data, time.monotonic()
            return self._metadata

    def jwks(self, refresh: bool = False) -> dict:
        with self._lock:
            stale = refresh and time.monotonic() - self._jwks_fetched > JWKS_REFETCH_SECONDS
            if self._jwks is None or stale:
                self._jwks = _get_json(self._metadata["jwks_uri"])
                self._jwks_fetched = time.monotonic()
            return self._jwks


def _get_json(url: str) -> dict:
    try:
        response = requests.get(url, timeout=TIMEOUT_SECONDS, allow_redirects=False)
        response.raise_for_status()
        data = response.json()
    except (requests.RequestException, ValueError):
        _logger.warning("could not read %s from the identity provider", url)
        raise Refused(
            "provider-unreachable",
            "The identity provider could not be reached; try again in a minute.",
            status=502,
        ) from None
    if not isinstance(data, dict):
        raise Refused("provider-error", f"{url} did not answer a JSON object.", status=502)
    return data


class OidcSignIn:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionManager,
        store: SessionStore,
        users,
        audit: AuditLog,
        on_person=None,
    ):
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.users = users  # MLflow's auth user store
        self.audit = audit
        self.provider = _Provider(settings.oidc_issuer)
        # Called with (Person, user) after each sign-in (MLflow roles from groups).
        self.on_person = on_person

    def _client(self, redirect_uri: str) -> OAuth2Session:
        methods = self.provider.metadata().get("token_endpoint_auth_methods_supported") or []
        auth_method = (
            "client_secret_post"
            if "client_secret_basic" not in methods and "client_secret_post" in methods
            else "client_secret_basic"
        )
        return OAuth2Session(
            self.settings.oidc_client_id,
            self.settings.oidc_client_secret,
            scope=self.settings.oidc_scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=auth_method,
        )

    def start(self, next_path: str, base: str, redirect_uri: str) -> tuple[str, str]:
        """(the provider's authorization URL, the state to bind to this browser)."""
        metadata = self.provider.metadata()
        state, nonce, verifier = generate_token(43), generate_token(32), generate_token(64)
        now = utcnow()
        # Each sign-in tidies up: abandoned sign-ins, sessions ended a week ago.
        self.store.purge(now - timedelta(days=ENDED_KEPT_DAYS), now)
        self.store.start_sign_in(
            digest_of(state),
            Attempt(nonce, verifier, next_path, base),
            now + timedelta(seconds=SIGN_IN_SECONDS),
        )
        url, _ = self._client(redirect_uri).create_authorization_url(
            metadata["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier
        )
        return url, state

    def finish(self, params: dict, bound_state: str | None, redirect_uri: str, source, agent):
        """The callback: a ``SignedIn`` (the session opened), or raises ``Refused``."""
        try:
            attempt = self._attempt(params, bound_state)
            person = self._person(params, attempt, redirect_uri)
            user = self._admit(person, source)
        except Refused as refused:
            self.audit.record(
                "sign-in-refused",
                actor=refused.username or "-",
                username=refused.username,
                source=source,
                detail=refused.reason,
            )
            raise
        opened = self.sessions.open(
            person.username, getattr(user, "id", None), source=source, user_agent=agent
        )
        return SignedIn(opened, person.username, attempt.next_path, attempt.base)

    def _attempt(self, params: dict, bound_state: str | None) -> Attempt:
        if params.get("error"):
            error = str(params["error"])[:100]
            raise Refused("provider-refused", f"The identity provider refused: {error}.", 400)
        state = params.get("state") or ""
        if not state or not bound_state or not secrets.compare_digest(state, bound_state):
            raise Refused(
                "state-mismatch",
                "This sign-in was not started in this browser (its state does not match); "
                "start again.",
                400,
            )
        attempt = self.store.take_sign_in(digest_of(state), utcnow())
        if attempt is None:
            raise Refused(
                "state-replayed",
                "This sign-in was already used or took too long; start again.",
                400,
            )
        if params.get("iss") not in (None, self.provider.issuer):
            raise Refused("issuer-mismatch", "The sign-in answer came from another issuer.", 400)
        if not params.get("code"):
            raise Refused("no-code", "The identity provider sent no authorization code.", 400)
        return attempt

    def _person(self, params: dict, attempt: Attempt, redirect_uri: str) -> Person:
        metadata = self.provider.metadata()
        client = self._client(redirect_uri)
        try:
            token = client.fetch_token(
                metadata["token_endpoint"],
                grant_type="authorization_code",
                code=params["code"],
                code_verifier=attempt.code_verifier,
                timeout=TIMEOUT_SECONDS,
            )
        except Exception as error:  # the provider's answer (invalid_grant …), never the code
            code = getattr(error, "error", None) or type(error).__name__
            message = f"The identity provider refused the code ({code})."
            raise Refused("code-refused", message) from None
        claims = self._id_token_claims(token.get("id_token"), attempt.nonce)
        info = self._userinfo(client, metadata, claims["sub"])
        return person_from_claims({**info, **claims}, self.settings)

    def _id_token_claims(self, id_token, nonce: str) -> dict:
        if not isinstance(id_token, str):
            raise Refused("bad-id-token", "The identity provider sent no ID token.")
        check = {
            "issuer": self.provider.issuer,
            "client_id": self.settings.oidc_client_id,
            "nonce": nonce,
        }
        try:
            return check_id_token(id_token, self.provider.jwks(), **check)
        except Refused:  # perhaps signed with a key published since: fetch the JWKS again
            return check_id_token(id_token, self.provider.jwks(refresh=True), **check)

    @staticmethod
    def _userinfo(client: OAuth2Session, metadata: dict, sub: str) -> dict:
        url = metadata.get("userinfo_endpoint")
        if not url:
            return {}
        try:
            response = client.get(url, timeout=TIMEOUT_SECONDS)
            response.raise_for_status()
            info = response.json()
        except (requests.RequestException, ValueError):
            message = "The identity provider's userinfo failed."
            raise Refused("userinfo-failed", message, 502) from None
        if not isinstance(info, dict) or info.get("sub") != sub:
            raise Refused("userinfo-mismatch", "The userinfo answer is about someone else.")
        return info

    def _admit(self, person: Person, source):
        """Who may sign in, the user created on first sign-in, admin status by group."""
        settings = self.settings
        groups = set(person.groups)
        if settings.oidc_allowed_groups and not groups & set(settings.oidc_allowed_groups):
            self.sessions.revoke(
                "oidc", source, username=person.username, why="no longer in an allowed group"
            )
            raise Refused(
                "not-in-allowed-groups",
                f"{person.username!r} is in none of the groups allowed to sign in here ("
                + ", ".join(settings.oidc_allowed_groups)
                + ").",
                username=person.username,
            )
        admin = bool(groups & set(settings.oidc_admin_groups))
        if not self.users.has_user(person.username):
            try:
                self.users.create_user(person.username, secrets.token_urlsafe(32), is_admin=admin)
            except Exception:
                if not self.users.has_user(person.username):  # not a concurrent creation
                    raise
        user = self.users.get_user(person.username)
        changes = []
        if settings.oidc_admin_groups and bool(user.is_admin) != admin:
            self.users.update_user(person.username, is_admin=admin)
            user = self.users.get_user(person.username)
            changes.append("made an admin" if admin else "no longer an admin")
        if self.on_person is not None:
            added, removed = self.on_person(person, user)
            changes += [f"role {name!r} assigned" for name in added]
            changes += [f"role {name!r} removed" for name in removed]
        if changes:
            self.audit.record(
                "roles-changed",
                actor="oidc",
                username=person.username,
                source=source,
                detail="by group at sign-in: " + ", ".join(changes),
            )
        return user

    def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """The provider's RP-initiated logout URL (client_id and where to come back), or None
        when it has no ``end_session_endpoint`` or cannot be reached."""
        try:
            endpoint = self.provider.metadata().get("end_session_endpoint")
        except Refused:
            return None
        if not endpoint:
            return None
        query = urlencode(
            {
                "client_id": self.settings.oidc_client_id,
                "post_logout_redirect_uri": post_logout_redirect_uri,
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
