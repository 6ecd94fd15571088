"""The sign-in routes: ``/hokusai/login?next=``, ``/hokusai/auth/callback`` and
``/hokusai/logout`` (``auth/sign_in.py`` does the protocol).

The gate lets these through without a credential and under the path the browser used (MLflow's
root or the URL prefix), so each view knows its base: the callback URL, the cookies' path and
where to send the browser after are built from it (unless ``oidc_redirect_uri`` /
``oidc_post_logout_redirect_uri`` say otherwise, behind a proxy). Two cookies:

- ``hokusai_sign_in`` binds a sign-in under way to the browser that started it (its ``state``),
  only on the callback's path, for ten minutes;
- ``hokusai_session`` (``auth/sessions.py``): ``HttpOnly``, ``SameSite=Lax``, ``Secure`` on
  HTTPS, on the base's path; a new id at every sign-in (the old session ends).

A refused sign-in is a short page saying why (never a stack trace, never a token).
"""

from __future__ import annotations

import functools
import html
import logging
from urllib.parse import urlsplit

from flask import Flask, Response, redirect, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.credentials import session_cookie
from mlflow_hokusai.auth.origins import session_write_refusal
from mlflow_hokusai.auth.sessions import COOKIE, looks_like_session
from mlflow_hokusai.auth.sign_in import (
    CALLBACK,
    LOGIN,
    LOGOUT,
    ROUTES,
    SIGN_IN_SECONDS,
    Refused,
    local_next,
)
from mlflow_hokusai.errors import OUR_PAGE_HEADER, database_unavailable
from mlflow_hokusai.routes.services import Services, services

_logger = logging.getLogger(__name__)
STATE_COOKIE = "hokusai_sign_in"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    OUR_PAGE_HEADER: "sign-in",
}


def page(title: str, sentence: str, status: int = 200, link: tuple[str, str] | None = None):
    """A small HTML page for a person (sign-in refused, signed out)."""
    more = ""
    if link is not None:
        more = f'<p><a href="{html.escape(link[0])}">{html.escape(link[1])}</a></p>'
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(sentence)}</p>{more}</body></html>"
    )
    return Response(
        body, status=status, content_type="text/html; charset=utf-8", headers=PAGE_HEADERS
    )


def _base(route: str) -> str:
    """The path this server was reached under (MLflow's root or the URL prefix)."""
    return request.path[: -len(route)] if request.path.endswith(route) else ""


def _external_base(redirect_uri: str) -> str:
    """The base as the browser sees it, from the callback URL (which may be a proxy's)."""
    path = urlsplit(redirect_uri).path
    return path[: -len(CALLBACK)] if path.endswith(CALLBACK) else ""


def _redirect_uri(base: str) -> str:
    configured = services().settings.oidc_redirect_uri
    return configured or f"{request.scheme}://{request.host}{base}{CALLBACK}"


def _secure(redirect_uri: str) -> bool:
    return request.is_secure or redirect_uri.startswith("https:")


def _guarded(view):
    """A sign-in view whose unexpected failure (the key database down, MLflow's user store
    refusing) is a page saying so, never a stack trace; the log has the details."""

    @functools.wraps(view)
    def guarded():
        try:
            return view()
        except Exception as error:
            if database_unavailable(error):
                _logger.warning("sign-in: the key database is unreachable (%s)", error)
                return page(
                    "Sign-in unavailable", "The server cannot reach its database; try again.", 503
                )
            _logger.exception("sign-in failed")
            return page("Sign-in failed", "The server could not sign you in; try again.", 500)

    return guarded


def _refused_page(refused: Refused, base: str):
    return page("Sign-in refused", refused.message, refused.status, (f"{base}{LOGIN}", "Try again"))


def login():
    sign_in = services().sign_in
    base = _base(LOGIN)
    try:
        next_path = local_next(request.args.get("next"), base)
        redirect_uri = _redirect_uri(base)
        url, state = sign_in.start(next_path, base, redirect_uri)
    except Refused as refused:
        return _refused_page(refused, base)
    response = redirect(url, 302)
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=SIGN_IN_SECONDS,
        path=urlsplit(redirect_uri).path,
        secure=_secure(redirect_uri),
        httponly=True,
        samesite="Lax",
    )
    return response


def callback():
    sign_in = services().sign_in
    base = _base(CALLBACK)
    redirect_uri = _redirect_uri(base)
    old = session_cookie(request.headers.getlist("Cookie"))
    try:
        signed_in = sign_in.finish(
            request.args.to_dict(),
            request.cookies.get(STATE_COOKIE),
            redirect_uri,
            request.remote_addr,
            request.headers.get("User-Agent"),
        )
    except Refused as refused:
        response = _refused_page(refused, base)
        response.delete_cookie(STATE_COOKIE, path=urlsplit(redirect_uri).path)
        return response
    if old and looks_like_session(old):  # a fresh id at every sign-in: the old one ends
        services().sessions.sign_out(old, request.remote_addr)
    response = redirect(signed_in.next_path, 303)
    response.headers["Cache-Control"] = "no-store"
    # One Set-Cookie per response: MLflow's ASGI security-headers middleware keeps only the
    # last header of each name. The state cookie is left to expire (its sign-in is used up).
    response.set_cookie(
        COOKIE,
        signed_in.opened.secret,
        max_age=services().settings.session_lifetime,
        path=_external_base(redirect_uri) or "/",
        secure=_secure(redirect_uri),
        httponly=True,
        samesite="Lax",
    )
    return response


def _sign_out_refusal() -> str | None:
    """Why this sign-out does not come from this server's own pages, or None. Typed in the
    address bar (``Sec-Fetch-Site: none``) is fine; a GET from a browser that sends neither
    header is too (at worst another site signs a person out, which ``SameSite=Lax`` already
    limits to a top-level navigation)."""
    site, origin = request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin")
    if site == "none" or (request.method == "GET" and site is None and origin is None):
        return None
    return session_write_refusal(site, origin, request.host)


def logout():
    """End this browser's session (``?everywhere=1``: all of the person's sessions), then the
    provider's session when it has an ``end_session_endpoint``."""
    hokusai = services()
    base = _base(LOGOUT)
    secret = session_cookie(request.headers.getlist("Cookie"))
    if not secret:
        return page(
            "Signed out", "You are signed out of this server.", 200, (f"{base}{LOGIN}", "Sign in")
        )
    why = _sign_out_refusal()
    if why is not None:
        return page("Sign-out refused", f"Sign out from this server's own pages ({why}).", 403)
    ended = hokusai.sessions.sign_out(secret, request.remote_addr)
    if ended is not None and request.args.get("everywhere") in ("1", "true"):
        hokusai.sessions.revoke(
            ended.username, request.remote_addr, username=ended.username, why="sign out everywhere"
        )
    redirect_uri = _redirect_uri(base)
    back = hokusai.settings.oidc_post_logout_redirect_uri or (
        f"{request.scheme}://{request.host}{base}{LOGOUT}"
    )
    target = hokusai.sign_in.end_session_url(back)
    response = redirect(target or f"{base}{LOGOUT}", 303)
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(COOKIE, path=_external_base(redirect_uri) or "/")
    return response


_VIEWS = {
    LOGIN: (_guarded(login), ["GET"]),
    CALLBACK: (_guarded(callback), ["GET"]),
    LOGOUT: (_guarded(logout), ["GET", "POST"]),
}


def install(app: Flask, services: Services) -> None:
    """The routes under MLflow's root and the URL prefix (the gate does not map the prefix
    for them); MLflow's engine lets them through without a credential. Only with sign-in on:
    otherwise they are unknown, protected paths like any other."""
    if services.sign_in is None:
        return
    bases = dict.fromkeys([services.static_prefix, services.settings.url_prefix])
    public = []
    for route in ROUTES:
        view, methods = _VIEWS[route]
        public.append(route)
        for base in bases:
            full = base + route
            app.add_url_rule(full, endpoint=f"hokusai:{full}", view_func=view, methods=methods)
    url_prefix = services.settings.url_prefix
    # MLflow matches these as they are and under its static prefix.
    _mlflow.patches.make_public(public + [url_prefix + r for r in ROUTES if url_prefix])
