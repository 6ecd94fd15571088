"""Which browser origins may change keys and federation policies.

A browser signed in to this server (Basic, later a session) sends its credential with every
request to it, also one a page on another origin makes it send. MLflow's own cross-origin
check lets every ``localhost`` origin through (any local development server, any port), and a
request with no ``Origin`` but another site's ``Referer`` through too. For our state-changing
endpoints (API keys, federation policies) only the server's own origin is accepted, and the
origins the operator lists in MLflow's ``--cors-allowed-origins``
(``MLFLOW_SERVER_CORS_ALLOWED_ORIGINS``). API clients send neither header and are not
affected.
"""

from __future__ import annotations

import fnmatch
from urllib.parse import urlsplit


def _netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return parts.netloc.lower()


def _origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def cross_origin_refusal(
    origin: str | None, referer: str | None, host: str, allowed: list[str] | None = None
) -> str | None:
    """The reason to refuse a state-changing request, or None. ``host``: the request's Host
    (the server as the browser addressed it); ``allowed``: the operator's listed origins
    (``*`` patterns as MLflow reads them)."""
    if origin is None or origin == "":
        if not referer:
            return None  # not a browser's cross-origin request: API clients send neither
        origin = _origin_of(referer)
        seen = "Referer"
    else:
        seen = "Origin"
    if origin is None or origin == "null":
        return f"Requests from an opaque {seen} may not change keys."
    if _netloc(origin) == host.lower():
        return None
    for pattern in allowed or ():
        if origin == pattern or ("*" in pattern and fnmatch.fnmatch(origin, pattern)):
            return None
    return (
        f"Requests from {origin} ({seen}) may not change keys or federation policies on this "
        "server: only pages it serves may (an operator can list other origins with MLflow's "
        "--cors-allowed-origins)."
    )


def session_write_refusal(
    sec_fetch_site: str | None, origin: str | None, host: str | None
) -> str | None:
    """For a state-changing request carrying a signed-in browser's session: None when it came
    from this server's own pages, else why not. Stricter than ``cross_origin_refusal``: the
    session is a browser's only, so only the same origin counts (``Sec-Fetch-Site:
    same-origin`` when the browser sends it, else an ``Origin`` naming this host; neither is a
    refusal), and no listed origin or ``localhost`` port is let through."""
    if sec_fetch_site is not None:
        return None if sec_fetch_site == "same-origin" else f"Sec-Fetch-Site is {sec_fetch_site!r}"
    if not origin or origin == "null":
        return "the request has no Origin"
    netloc = _netloc(origin)
    if netloc is not None and host and netloc == host.lower():
        return None
    return f"Origin {origin!r} is not this server"
