"""A real, certified OpenID provider for the sign-in tests: the npm package ``oidc-provider``
run by ``tests/oidc_provider/provider.js`` under Node.js on a free loopback port.

    with oidc_provider(users=[OidcUser("alice", groups=["ml-admins"])]) as op:
        op.issuer                      # http://127.0.0.1:PORT, discovery under it
        url = sign_in(requests.Session(), authorize_url, "alice")
        # url: the provider's redirect to the client's redirect_uri (code, state, iss), not followed

Sign-in is the provider's own interaction flow with a page of ours: a form with a username
field only (no password; the username picks a row of the users table), then consent is granted
automatically for everything the client asked. PKCE S256 is required of every client, ID tokens
are RS256 with a key generated per start, there are no refresh tokens, and RP-initiated logout
is on (``sign_out``).

A missing Node.js or ``node_modules`` is an error, never a skip: ``.ci/setup`` installs both
(``npm ci --prefix tests/oidc_provider``).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from tests.server import _die_with_parent

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"

CLIENT_ID = "hokusai-test"
CLIENT_SECRET = "hokusai-test-secret"
REDIRECT_URI = "http://127.0.0.1:5000/oidc/callback"
POST_LOGOUT_REDIRECT_URI = "http://127.0.0.1:5000/"


@dataclass
class OidcClient:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    redirect_uris: list[str] = field(default_factory=lambda: [REDIRECT_URI])
    post_logout_redirect_uris: list[str] = field(default_factory=lambda: [POST_LOGOUT_REDIRECT_URI])


@dataclass
class OidcUser:
    """One account. ``preferred_username`` is what the login form takes; ``sub`` defaults to
    ``user-<preferred_username>``, ``email`` to ``<preferred_username>@example.com``."""

    preferred_username: str
    groups: list[str] = field(default_factory=list)
    email: str | None = None
    name: str | None = None
    sub: str | None = None

    def to_json(self) -> dict:
        out = asdict(self)
        out["sub"] = self.sub or f"user-{self.preferred_username}"
        out["email"] = self.email or f"{self.preferred_username}@example.com"
        out["name"] = self.name or self.preferred_username.capitalize()
        return out


DEFAULT_USERS = [
    OidcUser("alice", groups=["ml-admins", "ml-readers"]),
    OidcUser("bob", groups=["ml-readers"]),
    OidcUser("carol"),
]


class OidcProvider:
    """``start()`` / ``stop()``, or ``with OidcProvider(...) as op``.

    ``id_token_claims``: ``"sub_only"`` (the ID token carries ``sub`` and the protocol claims,
    userinfo the rest, as many providers do) or ``"all"`` (every granted claim in the ID token
    too). ``ttl``: seconds by oidc-provider model name, e.g. ``{"AccessToken": 5, "IdToken": 5,
    "AuthorizationCode": 10, "Session": 30, "Interaction": 60, "Grant": 30}``.
    """

    def __init__(
        self,
        clients: list[OidcClient] | None = None,
        users: list[OidcUser] | None = None,
        *,
        id_token_claims: str = "sub_only",
        ttl: dict[str, int] | None = None,
        workdir: str | None = None,
        port: int = 0,
    ):
        if id_token_claims not in ("sub_only", "all"):
            raise ValueError(
                f"id_token_claims must be 'sub_only' or 'all', not {id_token_claims!r}"
            )
        self.clients = clients if clients is not None else [OidcClient()]
        self.users = users if users is not None else list(DEFAULT_USERS)
        self.id_token_claims = id_token_claims
        self.ttl = dict(ttl or {})
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="hokusai-oidc-"))
        self.process: subprocess.Popen | None = None
        self.issuer: str | None = None
        self.port: int | None = port or None  # 0: a free one; given: restart on the same one
        self.discovery: dict | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "provider.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "provider.log"

    def log(self) -> str:
        """What the provider wrote on stderr (warnings, errors of its flows)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def check_installed() -> str:
        """The ``node`` binary; raises with what to run when Node.js or the package is missing."""
        node = shutil.which("node")
        if node is None:
            raise RuntimeError(
                "Node.js is not installed (the OpenID provider of the sign-in tests runs on it); "
                "run `apt-get install nodejs npm` then `npm ci --prefix tests/oidc_provider` "
                "(.ci/setup does both)"
            )
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
            raise RuntimeError(
                "tests/oidc_provider/node_modules is missing (the npm package oidc-provider); "
                "run `npm ci --prefix tests/oidc_provider` (.ci/setup does)"
            )
        return node

    def start(self, timeout: float = 30) -> OidcProvider:
        node = self.check_installed()
        config = {
            "clients": [asdict(c) for c in self.clients],
            "users": [u.to_json() for u in self.users],
            "id_token_claims": self.id_token_claims,
            "ttl": self.ttl,
        }
        self.config_path.write_text(json.dumps(config, indent=2))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    node,
                    str(PROVIDER_DIR / "provider.js"),
                    str(self.port or 0),
                    str(self.config_path),
                ],
                cwd=PROVIDER_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        try:
            ready = json.loads(self._read_ready_line(deadline))
            self.issuer, self.port = ready["issuer"], ready["port"]
            self.discovery = self._wait_for_discovery(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_ready_line(self, deadline: float) -> str:
        """provider.js prints one JSON line on stdout once it listens."""
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"the OpenID provider did not start in time:\n{self.log()}")
                if sel.select(min(remaining, 0.5)):
                    chunk = os.read(self.process.stdout.fileno(), 4096)
                    if not chunk:
                        self.process.wait(timeout=5)
                        raise RuntimeError(
                            f"the OpenID provider exited ({self.process.returncode}):\n{self.log()}"
                        )
                    buf += chunk
        return buf.split(b"\n", 1)[0].decode()

    def _wait_for_discovery(self, deadline: float) -> dict:
        url = f"{self.issuer}/.well-known/openid-configuration"
        while True:
            try:
                resp = requests.get(url, timeout=2)
                if resp.status_code == 200 and resp.json().get("issuer") == self.issuer:
                    return resp.json()
            except (requests.RequestException, ValueError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the OpenID provider's discovery did not answer:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    def sign_in(self, session: requests.Session, authorize_url: str, username: str) -> str:
        return sign_in(session, authorize_url, username)

    def sign_out(self, session: requests.Session, end_session_url: str) -> str:
        return sign_out(session, end_session_url)


@contextlib.contextmanager
def oidc_provider(**kwargs):
    """A started ``OidcProvider(**kwargs)``, stopped and removed on exit (for fixtures)."""
    provider = OidcProvider(**kwargs)
    provider.start()
    try:
        yield provider
    finally:
        provider.destroy()


class _Forms(HTMLParser):
    """The forms of a page: action, method, id and their inputs' names and values."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append(
                {
                    "id": attrs.get("id"),
                    "action": attrs.get("action") or "",
                    "method": (attrs.get("method") or "get").lower(),
                    "fields": {},
                }
            )
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""

    def handle_data(self, data):
        self.text.append(data)


def _forms(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    return parser


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _page_error(resp: requests.Response) -> str:
    text = " ".join(" ".join(_forms(resp.text).text).split())
    return f"{resp.status_code} at {resp.url}: {text}"[:2000]


def _walk(session: requests.Session, resp: requests.Response, origin, max_steps: int):
    """Follows the provider's redirects while they stay on its origin; returns
    ``(redirect_url, None)`` for the first one that leaves it, or ``(None, response)`` for the
    first page that is not a redirect."""
    for _ in range(max_steps):
        if not resp.is_redirect:
            return None, resp
        location = urljoin(resp.url, resp.headers["location"])
        if _origin(location) != origin:
            return location, None
        resp = session.get(location, allow_redirects=False, timeout=10)
    raise RuntimeError(f"too many redirects at the OpenID provider (last: {resp.url})")


def sign_in(
    session: requests.Session, authorize_url: str, username: str, *, max_steps: int = 20
) -> str:
    """Signs ``username`` in through the provider's interaction, as a browser would, with plain
    HTTP: GETs ``authorize_url``, follows the provider's redirects, fills the login form, lets
    the automatic consent go through, and returns the provider's redirect to the client (the URL
    on the client's redirect_uri, with ``code``, ``state`` and ``iss``; or ``error`` when the
    provider refuses the request, e.g. without PKCE) WITHOUT following it. ``session`` keeps the
    provider's cookies: a second ``sign_in`` with it reuses the provider's session (the login
    form is then skipped). Raises when the provider ends on a page (an unknown username, an
    error page)."""
    origin = _origin(authorize_url)
    resp = session.get(authorize_url, allow_redirects=False, timeout=10)
    submitted = False
    for _ in range(max_steps):
        done, page = _walk(session, resp, origin, max_steps)
        if done is not None:
            return done
        login = next((f for f in _forms(page.text).forms if "username" in f["fields"]), None)
        if page.status_code != 200 or login is None:
            raise RuntimeError(f"sign-in stopped at the OpenID provider: {_page_error(page)}")
        if submitted:
            raise RuntimeError(f"sign-in as {username!r} refused: {_page_error(page)}")
        submitted = True
        data = {**login["fields"], "username": username}
        resp = session.post(
            urljoin(page.url, login["action"]), data=data, allow_redirects=False, timeout=10
        )
    raise RuntimeError("sign-in did not finish at the OpenID provider")


def sign_out(session: requests.Session, end_session_url: str, *, max_steps: int = 20) -> str:
    """RP-initiated logout with plain HTTP: GETs ``end_session_url`` (the end_session_endpoint
    with ``id_token_hint``, ``post_logout_redirect_uri``, ``state`` as the RP builds it),
    confirms on the provider's page, and returns the redirect to the client's
    post_logout_redirect_uri (not followed), or the provider's own "signed out" page URL when
    there is none."""
    origin = _origin(end_session_url)
    resp = session.get(end_session_url, allow_redirects=False, timeout=10)
    done, page = _walk(session, resp, origin, max_steps)
    if done is not None:
        return done
    form = next((f for f in _forms(page.text).forms if f["id"] == "op.logoutForm"), None)
    if page.status_code != 200 or form is None:
        raise RuntimeError(f"sign-out stopped at the OpenID provider: {_page_error(page)}")
    data = {**form["fields"], "logout": "yes"}
    resp = session.post(
        urljoin(page.url, form["action"]), data=data, allow_redirects=False, timeout=10
    )
    done, page = _walk(session, resp, origin, max_steps)
    if done is not None:
        return done
    if page.status_code != 200:
        raise RuntimeError(f"sign-out failed at the OpenID provider: {_page_error(page)}")
    return page.url
