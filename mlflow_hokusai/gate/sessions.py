"""What the gate decides differently for a browser signed in with a session (pure, no I/O).

- The sign-in routes (``auth/sign_in.py`` ``ROUTES``) are public: they are the way in.
- A browser's page request without a usable credential is sent to sign in (a 302 to
  ``/hokusai/login?next=…``, under the base the browser used) when sign-in is configured; API
  requests (a key, ``Authorization``, a non-HTML ``Accept``) keep the 401 JSON.
- A session answers only requests from the server's own pages: a state-changing request with
  a session cookie must come from the same origin (``Sec-Fetch-Site: same-origin`` when the
  browser sends it, else an ``Origin`` naming this host); anything else is a 403, whatever
  ``SameSite`` did or did not stop (other ``localhost`` ports are the same site).
- A refused session's 401, and with sign-in on a credential-less one, carries no Basic
  challenge: the UI's calls must not make the browser pop a password prompt over the page
  (Basic credentials a client sends are still accepted).
"""

from __future__ import annotations

from urllib.parse import quote

from mlflow_hokusai.auth.authenticator import AuthFailure
from mlflow_hokusai.auth.origins import session_write_refusal
from mlflow_hokusai.auth.sign_in import LOGIN, ROUTES
from mlflow_hokusai.errors import error_parts

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REDIRECTED = frozenset({"missing", "session-ended"})


def is_sign_in_route(path: str, static_prefix: str) -> bool:
    if static_prefix and path.startswith(static_prefix + "/"):
        path = path[len(static_prefix) :]
    return path in ROUTES


def _first(request, name: str) -> str | None:
    values = request.headers(name)
    return values[0] if values else None


def wants_page(request) -> bool:
    """A browser navigating to a page (not the UI's script calls, not an API client)."""
    if request.method not in ("GET", "HEAD") or request.websocket:
        return False
    if request.headers("Authorization") or request.headers("X-API-Key"):
        return False
    mode = _first(request, "Sec-Fetch-Mode")
    if mode is not None and mode != "navigate":
        return False
    accept = ",".join(request.headers("Accept")).lower()
    return "text/html" in accept


def sign_in_redirect(request, result: AuthFailure, swap, static_prefix: str):
    """The redirect to sign in for a page request without a usable credential, else None."""
    if result.reason not in _REDIRECTED or not wants_page(request):
        return None
    base = swap[0] if swap else static_prefix
    target = request.seen + (f"?{request.query}" if request.query else "")
    location = f"{base}{LOGIN}?next={quote(target, safe='/')}"
    headers = [("Location", location), ("Content-Length", "0"), ("Cache-Control", "no-store")]
    return 302, headers, b""


def refusal(request, result):
    """For a request carrying a session cookie (or, with sign-in on, no credential): the
    response refusing it, or None."""
    if isinstance(result, AuthFailure):
        status, headers, body = error_parts(result.error_code, result.message)
        return status, [h for h in headers if h[0] != "WWW-Authenticate"], body
    if request.method in SAFE_METHODS:
        return None
    why = session_write_refusal(
        _first(request, "Sec-Fetch-Site"), _first(request, "Origin"), _first(request, "Host")
    )
    if why is None:
        return None
    message = (
        f"A signed-in browser session may change things only from this server's own pages "
        f"({why}); API clients send an API key."
    )
    return error_parts("PERMISSION_DENIED", message)
